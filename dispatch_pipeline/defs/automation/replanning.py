"""`stale_plan_sensor`: a day not yet begun is planned again when a forecast or price series for
it is issued after the one its plan read, the issue it read is loaded again with other values, or
its site is registered again with other values.

The day-ahead plan is made at 14:00 from the forecast issued by then; forecasts and prices are
often issued again before the day starts (a later weather run, a corrected price). A plan read
from the older issue is then no longer the cheapest for what is expected. The sensor looks at
each site's days from its local tomorrow to the last date partition, and re-plans those whose
latest Dagster plan read an older issue than the newest stored for one of their intervals, read
the time-of-use tariff of a day a price series is now stored for, or read rows of the day that
have been written since (storage/staleness.py): an issue loaded again under the same issue time
with other values for the day (a corrected file), or an older issue loaded late where an
interval read one older still. A plan made with an older registration of its site than the one
stored now (`sites import` or `sites add` with another battery, limits, weights or tariff since;
the same values again change nothing) is stale too: the oldest registration the run's steps
read counts, so a change while the run was planning is noticed. Days already under way are left
alone: their plan starts from the state of charge at midnight.

Each change of a day's inputs re-plans it once: the cursor keeps, per day, the state of its
inputs already acted on (the newest issue and the newest write among the rows it reads, and
when its site changed, if after the registration its plan was made with) and the stale plan it
was acted on for. A re-plan that fails (a price series covering part of the day) is not
requested again until its inputs or its site change again; its failure names what is missing,
like any run's. A plan made from the old inputs and stored after the re-plan (a run under way at
the change) is stale again, and requested again. Cursors of releases that kept no stale plan
match no state: a day stale then is requested once more.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from zoneinfo import ZoneInfo

import dagster as dg

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.defs.automation.day_ahead import (
    plan_runs,
    ready_days,
    with_site_partitions,
)
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.common import DATE_TAG, PLANNING_TAG, RESOLUTION_MINUTES, shorten
from dispatch_pipeline.defs.partitions import SiteDay, block_run_request, last_date_partition
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import read_sites
from dispatch_pipeline.storage.staleness import DayWindow, StalePlan, stale_plans

REPLAN_TAGS = {PLANNING_TAG: "replan"}


def current_time() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def days_ahead(timezone: str, now: dt.datetime, last_date: dt.date) -> list[dt.date]:
    """The local dates of a site that have not begun at `now`, up to the last date partition."""
    tomorrow = now.astimezone(ZoneInfo(timezone)).date() + dt.timedelta(days=1)
    return [tomorrow + dt.timedelta(days=n) for n in range((last_date - tomorrow).days + 1)]


@dg.sensor(
    name="stale_plan_sensor",
    job=day_ahead_dispatch_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Plans a day that has not begun again when a forecast or price series for it is issued "
        "after the one its latest plan read (a later weather run, a corrected price), or the issue "
        "it read is loaded again with other values for the day, or its site is registered again "
        "with other values (battery, limits, tariff); once per change. Plans stored "
        "through the API or the CLI are left as they are. Off until switched on (here, or "
        "`dagster sensor start`)."
    ),
)
def stale_plan_sensor(context: dg.SensorEvaluationContext, storage: DispatchStorage):
    now = current_time()
    engine = storage.engine()
    # A site stored invalid cannot be planned: the day-ahead schedule reports it every day.
    sites, _ = read_sites(engine)
    by_id = {site.site_id: site for site in sites}
    last_date = last_date_partition(now)
    windows = {
        SiteDay(site.site_id, date): _window(site.site_id, local)
        for site in sites
        for date in days_ahead(site.timezone, now, last_date)
        for local in [site.local_day(date, RESOLUTION_MINUTES)]
    }
    stale = stale_plans(engine, windows)
    acted_on: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    due = {day: plan for day, plan in stale.items() if acted_on.get(day.key) != _acted_on(plan)}
    # Only days still ahead are kept: the cursor stays a few entries per site.
    cursor = {day.key: state for day in windows if (state := acted_on.get(day.key))}
    cursor.update({day.key: _acted_on(plan) for day, plan in due.items()})
    if not due:
        waiting = f" ({len(stale)} stale, a re-plan requested already for each one's inputs as they are)" if stale else ""
        return dg.SensorResult(
            skip_reason=f"no plan of the {len(windows)} day(s) ahead is stale by inputs not acted on{waiting}",
            cursor=json.dumps(cursor, sort_keys=True),
        )
    pairs = [(day.site_id, day.date) for day in due]
    order = with_site_partitions(context.instance, {site_id: by_id[site_id].timezone for site_id, _ in pairs})
    runs = plan_runs(pairs, order, ready_days(engine, by_id, pairs))
    context.log.info(
        f"re-planning {len(due)} day(s) issued anew, rewritten or their site changed since their plan, "
        f"in {len(runs)} run(s): "
        f"{shorten(sorted(day.key for day in due))}"
    )
    return dg.SensorResult(
        run_requests=[
            block_run_request(
                days,
                {DATE_TAG: days[0].date.isoformat(), **REPLAN_TAGS},
                run_key_prefix=_run_key_prefix([due[day] for day in days]),
            )
            for days in runs
        ],
        cursor=json.dumps(cursor, sort_keys=True),
    )


def _acted_on(plan: StalePlan) -> str:
    """What a request re-plans: the day's inputs as they are, and the stale plan. With its run:
    a plan that read the old inputs and was stored after the re-plan requested for them (a run
    under way at the change, finishing last) is the day's latest again, stale as before, and
    must be requested anew."""
    return f"{plan.inputs} plan {plan.run_id}"


def _run_key_prefix(plans: list[StalePlan]) -> str:
    """The state of a block's inputs and its stale plans: Dagster skips a request whose run key it
    has seen, so a rewrite, another change of a site or a stale plan stored late must make a new
    one."""
    prefix = (
        f"replan:{max(plan.newest_issue for plan in plans).isoformat()}"
        f":{max(plan.newest_write for plan in plans).isoformat()}:"
    )
    site_changes = [plan.site_changed_at for plan in plans if plan.site_changed_at is not None]
    if site_changes:
        prefix += f"site:{max(site_changes).isoformat()}:"
    # Dagster keeps run keys short in its tables' indexes: the runs as one digest.
    runs = hashlib.sha256(" ".join(sorted(str(plan.run_id) for plan in plans)).encode()).hexdigest()[:16]
    return f"{prefix}plans:{runs}:"


def _window(site_id: str, local: LocalDay) -> DayWindow:
    return DayWindow(site_id, local.date, local.start_utc, local.end_utc)
