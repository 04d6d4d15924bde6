"""`partition_recovery_sensor`: a run of many site-days that failed on a few that cannot be planned
(incomplete inputs or input snapshots, a removed or invalid site, a plan breaking a hard
constraint) plans the rest.

A backfill run carries up to a year of one site; a run is stored whole or not at all, and Dagster
cannot mark single partitions of a run as failed (dagster-io/dagster#17836). So one day without a
complete forecast or price series fails the whole run. The ingestion assets and the blocking
checks name those days in their failure (`incomplete_partitions`); this sensor then requests new
runs for the run's other
site-days: one per site and unbroken date range (a backfill chunk), or per block of neighbouring
sites (a day-ahead run of one date). Only the incomplete days stay unplanned, named in the failed
run. Runs it requests are tagged `dispatch/recovers` (the first attempt's
run id) and are never split again.

A run the daemon will retry (run_retries; Dagster tags it `dagster/will_retry=true`) is not split:
the missing data may arrive before the retry runs, and the retry would then plan every day the
recovery runs plan, each stored twice (were both to run at once, neither would see the other's
plans before storing its own). Its last attempt's failure is split, if days are still missing.
Dagster tags a failed run so just after it stores the failure: with run_retries on, the sensor
waits for that tag (a few seconds at most) before it decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import dagster as dg

from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.common import (
    DATE_TAG,
    PLANNING_TAG,
    SOURCE_TAG,
    STRATEGY_TAG,
)
from dispatch_pipeline.defs.ingestion.coverage import INCOMPLETE_PARTITIONS_KEY
from dispatch_pipeline.defs.partitions import (
    RANGE_START_TAG,
    SiteDay,
    block_run_request,
    parse_site_day,
    run_partition_keys,
)

RECOVERS_TAG = "dispatch/recovers"
CARRIED_TAGS = (PLANNING_TAG, SOURCE_TAG, DATE_TAG, STRATEGY_TAG)
# The backfill a failed run belonged to, under a tag of our own: the backfill daemon counts runs
# tagged dagster/backfill as its own.
BACKFILL_TAG = "dagster/backfill"
RECOVERED_BACKFILL_TAG = "dispatch/backfill"
# Set by Dagster on a failed run when run_retries is on: "true" if the daemon will retry it.
WILL_RETRY_TAG = "dagster/will_retry"
# How long a tick waits for that tag: Dagster writes it right after the run's failure, so only a
# process that died in between leaves it out for longer.
RETRY_DECISION_WAIT_SECONDS = 5.0


def incomplete_partitions(step_failures: Iterable[dg.DagsterEvent]) -> set[str]:
    """The partition keys the run's steps named in their failures: days without complete data,
    of a site that cannot be planned, or whose plan broke a hard constraint."""
    keys: set[str] = set()
    for event in step_failures:
        failure = event.step_failure_data
        user_data = failure.user_failure_data if failure else None
        entry = user_data.metadata.get(INCOMPLETE_PARTITIONS_KEY) if user_data else None
        if entry is not None:
            keys.update(entry.value)
    return keys


def neighbour_blocks(days: Sequence[SiteDay], incomplete: set[str]) -> list[list[SiteDay]]:
    """The complete days of `days` (one date, sites in partition order) in blocks of neighbours."""
    blocks: list[list[SiteDay]] = []
    previous_complete = False
    for day in days:
        complete = day.key not in incomplete
        if complete and previous_complete:
            blocks[-1].append(day)
        elif complete:
            blocks.append([day])
        previous_complete = complete
    return blocks


def unbroken_ranges(days: Sequence[SiteDay]) -> list[list[SiteDay]]:
    """`days` (in partition order) cut into runs of one site and consecutive dates."""
    ranges: list[list[SiteDay]] = []
    for day in days:
        previous = ranges[-1][-1] if ranges else None
        if previous and previous.site_id == day.site_id and (day.date - previous.date).days == 1:
            ranges[-1].append(day)
        else:
            ranges.append([day])
    return ranges


def recovery_requests(run: dg.DagsterRun, incomplete: set[str], instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """Runs for the complete site-days of a failed ranged run; none if it cannot be split."""
    if not incomplete or RANGE_START_TAG not in run.tags or RECOVERS_TAG in run.tags:
        return []
    if _will_retry(run) or _retry_undecided(run, instance):
        return []
    keys = run_partition_keys(run.tags, instance)
    # Dagster's order: dates, then sites in the partition order (key ranges follow it).
    days = [parse_site_day(key) for key in keys]
    if len({day.date for day in days}) == 1:
        # A day-ahead block of sites: its complete neighbours keep sharing runs.
        blocks = neighbour_blocks(days, incomplete)
    else:
        by_site = sorted(days, key=lambda day: (day.site_id, day.date))
        blocks = unbroken_ranges([day for day in by_site if day.key not in incomplete])
    carried = {name: run.tags[name] for name in CARRIED_TAGS if name in run.tags}
    if BACKFILL_TAG in run.tags:
        carried[RECOVERED_BACKFILL_TAG] = run.tags[BACKFILL_TAG]
    # The failed run's assets (an asset backfill may select fewer than the job); None: all of them.
    selection = sorted(run.asset_selection, key=str) if run.asset_selection else None
    # Keyed by the first attempt: a retry started by hand that fails alike must not plan the
    # same days again.
    origin = run.root_run_id or run.run_id
    tags = {**carried, RECOVERS_TAG: origin}
    return [block_run_request(block, tags, f"{origin}:", selection) for block in blocks]


@dg.run_failure_sensor(
    name="partition_recovery_sensor",
    request_job=day_ahead_dispatch_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    # A tick handles every failed run it leaves alone but ends at the first it splits (Dagster
    # ends a run status sensor's tick at its first result): a burst of failed chunks then takes
    # one tick each.
    minimum_interval_seconds=10,
    description=(
        "When a run of many site-days fails because some cannot be planned (an incomplete "
        "forecast or price series, a site removed from or invalid in the sites table, a plan "
        "breaking a hard constraint), requests runs for its other site-days (per site and "
        "unbroken date range, or per block of neighbouring sites for one date), so that only "
        "those days stay unplanned."
    ),
)
def partition_recovery_sensor(context: dg.RunFailureSensorContext):
    run = _with_retry_decision(context.instance, context.dagster_run)
    incomplete = incomplete_partitions(context.get_step_failure_events())
    requests = recovery_requests(run, incomplete, context.instance)
    if not requests:
        # Logged, not returned: a result (a SkipReason too) would end the tick, and each of a
        # burst of failed one-site runs would hold the runs to split behind it for a tick.
        context.log.info(f"run {run.run_id}: {_not_split(run, incomplete, context.instance)}")
        return None
    context.log.info(
        f"run {run.run_id}: {len(incomplete)} incomplete site-day(s); planning the others in {len(requests)} run(s)"
    )
    return requests


def _with_retry_decision(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """The failed run once Dagster has tagged whether the daemon retries it (with run_retries on).
    Dagster stores the run's failure first and the tag after it: a tick in between would split a
    run whose retry then plans the same days."""
    deadline = time.monotonic() + RETRY_DECISION_WAIT_SECONDS
    while instance.run_retries_enabled and WILL_RETRY_TAG not in run.tags and time.monotonic() < deadline:
        time.sleep(0.1)
        run = instance.get_run_by_id(run.run_id) or run
    return run


def _will_retry(run: dg.DagsterRun) -> bool:
    return run.tags.get(WILL_RETRY_TAG, "").lower() == "true"


def _retry_undecided(run: dg.DagsterRun, instance: dg.DagsterInstance | None) -> bool:
    return instance is not None and instance.run_retries_enabled and WILL_RETRY_TAG not in run.tags


def _not_split(run: dg.DagsterRun, incomplete: set[str], instance: dg.DagsterInstance) -> str:
    if _will_retry(run):
        return (
            f"the daemon retries it ({WILL_RETRY_TAG}): its retry plans all its days if their data has "
            "arrived by then, and the last attempt's failure is split otherwise"
        )
    if not incomplete:
        return "it did not fail on site-days that cannot be planned: nothing to split off"
    if RANGE_START_TAG not in run.tags:
        return "a run of one site-day: nothing else to plan"
    if RECOVERS_TAG in run.tags:
        return f"itself a recovery run of {run.tags[RECOVERS_TAG]}: not split again"
    if _retry_undecided(run, instance):
        return (
            f"whether the daemon retries it is not recorded ({WILL_RETRY_TAG} missing after "
            f"{RETRY_DECISION_WAIT_SECONDS:g} s): left to the daemon; if it is not retried, re-execute it "
            "or backfill its days"
        )
    return f"none of its site-days can be planned ({len(incomplete)} named in its failure)"
