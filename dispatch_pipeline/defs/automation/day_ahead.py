"""`day_ahead_dispatch_schedule`: plan each site's tomorrow at 14:00 on the site's own clock.

One schedule serves every timezone: it ticks every quarter-hour (UTC) and plans, for the site's
local tomorrow, every site whose local clock reads the planning time at that tick. The
quarter-hour tick catches zones offset by :30 and :45 (India, Nepal) too; a tick at 14:07 in no
site's zone requests nothing. A tick also plans the sites due at the ticks a stopped or lagging
daemon missed (see `missed_ticks`).

The sites due at one tick are planned together: one run per block of sites that are neighbours in
the `sites` partition order (a run covers a key range), so a fleet pays Dagster's per-run start-up
once per tick rather than once per site. A site whose forecast or price series for tomorrow is
incomplete, or whose stored definition no longer validates, gets a run of its own: it fails there,
naming what is missing or wrong, and fails no other site.
"""

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Mapping
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.instance import CachingDynamicPartitionsLoader
from sqlalchemy import Engine

from dispatch_pipeline.core.request import iana_zone_names
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.automation.sensors import in_neighbour_order
from dispatch_pipeline.defs.common import (
    DATE_TAG,
    PLANNING_TAG,
    RESOLUTION_MINUTES,
    positive_int_setting,
)
from dispatch_pipeline.defs.partitions import (
    SITES_PARTITIONS_NAME,
    SiteDay,
    block_run_request,
    last_date_partition,
    run_partition_keys,
)
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import (
    StoredSiteInvalid,
    forecast_interval_counts,
    price_interval_counts,
    read_sites,
)

TICK_MINUTES = 15
# Local clock time the day-ahead plan is made ("HH:MM"): after the day-ahead forecasts and
# prices are issued, before the site needs its plan.
PLANNING_TIME = os.environ.get("DISPATCH_PLANNING_TIME", "14:00")
# Sites per day-ahead run: enough for a large fleet's tick in a few runs, few enough that one
# run's failure (a bug, a lost worker) leaves most of the fleet planned by the others.
MAX_SITES_PER_RUN = positive_int_setting("DISPATCH_DAY_AHEAD_SITES_PER_RUN", 250)


def planning_minute(text: str = PLANNING_TIME) -> int:
    """Minutes after local midnight of an "HH:MM" planning time; a bad one names the variable."""
    hours, colon, minutes = text.strip().partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2
            and int(hours) < 24 and int(minutes) < 60):
        raise ValueError(f"DISPATCH_PLANNING_TIME: expected a local time HH:MM such as 14:00, got {text!r}")
    # The schedule ticks on the quarter-hour: a time between ticks late in the day (23:50) would
    # have no tick in its window before midnight, and the site would never be planned.
    if int(minutes) % TICK_MINUTES:
        raise ValueError(
            f"DISPATCH_PLANNING_TIME: must be on a quarter-hour (:00, :15, :30 or :45), the schedule's "
            f"ticks, got {text!r}"
        )
    return int(hours) * 60 + int(minutes)


# Checked when the code location loads, not at the first tick hours later.
PLANNING_MINUTE = planning_minute()


def due_sites(
    sites: list[tuple[str, str]], tick_utc: dt.datetime, planning_at: int | None = None
) -> list[tuple[str, dt.date]]:
    """(site_id, local tomorrow) of every (site_id, timezone) whose planning time is this tick.

    A site is due when the instant its clock reads the planning time today falls within
    [tick, + one tick). On the days a clock changes, a planning time the clock skips (02:30 on
    spring-forward night in Berlin) is the instant it would have been on the old offset (03:30 after
    the jump), unless that instant falls in the day to plan (23:45 in Nuuk, whose clock jumps from
    23:00 to midnight): then the instant it would have been on the new offset (22:45); one it
    reads twice (fall-back night) is its first reading. Every site is planned once every day,
    before the day starts, whatever the planning time.
    """
    planning_at = PLANNING_MINUTE if planning_at is None else planning_at
    planning_time = dt.time(planning_at // 60, planning_at % 60)
    window_end = tick_utc + dt.timedelta(minutes=TICK_MINUTES)
    due = []
    for site_id, timezone in sites:
        zone = ZoneInfo(timezone)
        today = tick_utc.astimezone(zone).date()
        # The instant of a skipped time lies up to the size of the jump after the tick's local date
        # began, so yesterday's and tomorrow's planning instants are candidates too.
        for local_date in (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)):
            planning_instant = _planning_instant(local_date, planning_time, zone)
            if tick_utc <= planning_instant < window_end:
                due.append((site_id, local_date + dt.timedelta(days=1)))
    return due


def _planning_instant(local_date: dt.date, planning_time: dt.time, zone: ZoneInfo) -> dt.datetime:
    # fold=0: a skipped time maps forward by the jump, a repeated one to its first reading;
    # fold=1 maps a skipped one back by the jump, before the midnight the jump ends at.
    instant = dt.datetime.combine(local_date, planning_time, tzinfo=zone)
    tomorrow_starts = dt.datetime.combine(local_date + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    if instant.astimezone(dt.UTC) >= tomorrow_starts.astimezone(dt.UTC):
        return instant.replace(fold=1)
    return instant


def ready_days(engine: Engine, sites: dict[str, Site], due: list[tuple[str, dt.date]]) -> set[tuple[str, dt.date]]:
    """The due (site, date) pairs whose forecast covers every interval of the site's local day,
    and whose price series (if any was issued for it) does too: per day, since a site re-planned
    over several days may be ready on one and not another. One pair of queries per timezone and
    date."""
    by_window: dict[tuple[str, dt.date], list[str]] = defaultdict(list)
    for site_id, date in due:
        by_window[(sites[site_id].timezone, date)].append(site_id)
    ready = set()
    for (_, date), site_ids in by_window.items():
        day = sites[site_ids[0]].local_day(date, RESOLUTION_MINUTES)
        forecast = forecast_interval_counts(engine, site_ids, day.start_utc, day.end_utc)
        prices = price_interval_counts(engine, site_ids, day.start_utc, day.end_utc)
        ready.update(
            (site_id, date)
            for site_id in site_ids
            if forecast[site_id] == day.intervals and prices[site_id] in (0, day.intervals)
        )
    return ready


def plan_runs(
    due: list[tuple[str, dt.date]],
    partition_order: list[str],
    ready: set[tuple[str, dt.date]],
    max_sites: int = MAX_SITES_PER_RUN,
) -> list[list[SiteDay]]:
    """Group due site-days into runs.

    A run covers a partition key range, so its sites must be neighbours in `partition_order`
    (per date). Ready site-days are grouped into blocks of up to `max_sites`; one that is not
    ready runs alone.
    """
    position = {site_id: n for n, site_id in enumerate(partition_order)}
    by_date: dict[dt.date, list[str]] = defaultdict(list)
    for site_id, tomorrow in due:
        by_date[tomorrow].append(site_id)
    runs: list[list[SiteDay]] = []
    for tomorrow, site_ids in sorted(by_date.items()):
        block: list[SiteDay] = []
        for site_id in sorted(site_ids, key=position.__getitem__):
            day = SiteDay(site_id, tomorrow)
            is_ready = (site_id, tomorrow) in ready
            if block and (
                not is_ready
                or position[site_id] != position[block[-1].site_id] + 1
                or len(block) >= max_sites
            ):
                runs.append(block)
                block = []
            if is_ready:
                block.append(day)
            else:
                runs.append([day])
        if block:
            runs.append(block)
    return runs


def faults_to_report(invalid: list[StoredSiteInvalid], ticks: list[dt.datetime]) -> list[StoredSiteInvalid]:
    """The stored sites the model refuses whose fault these ticks report: each once a day, at its
    planning time (its run fails then too), not in all 96 ticks' logs. A site whose stored
    timezone is no zone has no planning time: it is reported at the planning time of UTC."""
    zones = iana_zone_names()
    clocks = [(n, fault.timezone if fault.timezone in zones else "UTC") for n, fault in enumerate(invalid)]
    due = {n for at in ticks for n, _ in due_sites(clocks, at)}
    return [fault for n, fault in enumerate(invalid) if n in due]


TICK_TAG = "dispatch/tick"
DAY_AHEAD_TAGS = {PLANNING_TAG: "day_ahead"}


def with_site_partitions(instance: dg.DagsterInstance, timezone_of: Mapping[str, str]) -> list[str]:
    """The `site` partitions in order, after adding those of the sites of {site_id: timezone}
    that have none.

    The sites sensor adds a new site's partition within a minute; a site registered just before
    its planning time would otherwise miss its day (the next tick plans the day after).
    """
    order = instance.get_dynamic_partitions(SITES_PARTITIONS_NAME)
    new = in_neighbour_order(set(timezone_of) - set(order), timezone_of)
    if not new:
        return list(order)
    instance.add_dynamic_partitions(SITES_PARTITIONS_NAME, new)
    return list(instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))


def planned_at_ticks(instance: dg.DagsterInstance, ticks: list[dt.datetime]) -> set[str]:
    """Partition keys that runs of these ticks already cover.

    Dagster drops a repeated run key only within one evaluation's keys, and these keys depend on
    which sites were ready: a tick evaluated again (the daemon resuming after a crash) after more
    forecasts arrived would group the sites differently and plan some of them twice.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TICK_TAG: [tick.isoformat() for tick in ticks]}))
    partitions = CachingDynamicPartitionsLoader(instance)  # the sites read once, not once per run
    return {key for run in runs for key in run_partition_keys(run.tags, partitions)}


# How far back a tick looks for missed ticks (the daemon down, restarting or lagging, or the
# schedule stopped).
CATCH_UP = dt.timedelta(hours=12)


def missed_ticks(instance: dg.DagsterInstance, tick: dt.datetime) -> tuple[dt.datetime | None, list[dt.datetime]]:
    """The last earlier tick that launched a run (None if none did within CATCH_UP), and the ticks
    between it and this one (at most CATCH_UP back).

    Dagster evaluates only the latest missed tick of a schedule without partitions, and every site
    is due at one tick a day: without these, a daemon down for half an hour would leave the sites
    of the quarter-hours it missed without a plan for tomorrow, and say nothing. A tick that was
    evaluated planned every site due at it, so looking again at one costs nothing. The last tick
    that launched a run may not have launched all of them: the daemon may have stopped while
    launching its runs, and Dagster resumes such a tick only if no later tick is due by the time
    it is back, so the schedule looks at that tick again too.

    The last launch is looked up by its tick tag among earlier ticks, not as the newest day-ahead
    run: that may be a recovery run (which carries no tick) or a run of this very tick, launched
    before the daemon stopped and evaluated the tick again.
    """
    step = dt.timedelta(minutes=TICK_MINUTES)
    window = [tick - step * n for n in range(1, CATCH_UP // step + 1)]
    [latest] = instance.get_run_records(
        filters=dg.RunsFilter(tags={TICK_TAG: [earlier.isoformat() for earlier in window]}), limit=1
    ) or [None]
    if latest is not None:
        last = dt.datetime.fromisoformat(latest.dagster_run.tags[TICK_TAG])
        launched = last
    elif instance.get_run_records(filters=dg.RunsFilter(tags=DAY_AHEAD_TAGS), limit=1):
        last = tick - CATCH_UP  # runs before the window only: any tick of it may have been missed
        launched = None
    else:
        return None, []  # a deployment's first tick: nothing was missed
    return launched, sorted(earlier for earlier in window if earlier > last)


def run_request(days: list[SiteDay], tick: dt.datetime) -> dg.RunRequest:
    """One run for a block of site-days (one date, neighbouring sites), keyed by its partitions:
    a re-evaluated tick never plans a site-day twice."""
    tags = {DATE_TAG: days[0].date.isoformat(), **DAY_AHEAD_TAGS, TICK_TAG: tick.isoformat()}
    return block_run_request(days, tags)


@dg.schedule(
    name="day_ahead_dispatch_schedule",
    cron_schedule=f"*/{TICK_MINUTES} * * * *",
    execution_timezone="UTC",
    job=day_ahead_dispatch_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"At {PLANNING_TIME} local time of each site, plan the site's next local day (partition "
        "site x tomorrow); the sites due at one tick share runs. It ticks every quarter-hour (UTC) "
        "and plans the sites whose own clock reads the planning time then. Off until switched "
        "on (here, or `dagster schedule start`)."
    ),
)
def day_ahead_dispatch_schedule(context: dg.ScheduleEvaluationContext, storage: DispatchStorage):
    tick = context.scheduled_execution_time
    if tick is None:
        # Evaluated by hand: on the tick grid, where runs' tick tags and missed ticks are found.
        now = dt.datetime.now(dt.UTC)
        tick = now.replace(minute=now.minute - now.minute % TICK_MINUTES, second=0, microsecond=0)
    engine = storage.engine()
    valid, invalid = read_sites(engine)
    sites = {site.site_id: site for site in valid}
    clocks = [(site.site_id, site.timezone) for site in valid]
    # Planned alone when due: its run fails naming the fault, where operators watch failures.
    clocks.extend((fault.site_id, fault.timezone) for fault in invalid if fault.timezone in iana_zone_names())
    last_date = last_date_partition(tick)
    launched, missed = missed_ticks(context.instance, tick)
    # The last tick that launched runs reported its faults itself.
    for fault in faults_to_report(invalid, [*missed, tick]):
        context.log.error(str(fault))
    # That tick is looked at again: the daemon may have stopped before launching all its runs.
    earlier = [launched, *missed] if launched is not None else missed
    due_at = {at: due_sites(clocks, at) for at in [*earlier, tick]}
    # In order of the ticks, then of the sites at each: a dict keeps it and sees repeats at once.
    due_once: dict[tuple[str, dt.date], None] = {}
    for site_id, tomorrow in [pair for pairs in due_at.values() for pair in pairs]:
        if tomorrow > last_date:
            context.log.warning(f"site {site_id}: {tomorrow} is beyond the last date partition")
        else:
            due_once[(site_id, tomorrow)] = None
    due = list(due_once)
    if not due:
        return dg.SkipReason(
            f"no site is due at {tick.isoformat()}: no site's own clock reads the planning time, "
            f"{PLANNING_TIME}, in the quarter-hour from then"
        )
    zones = dict(clocks)
    partition_order = with_site_partitions(context.instance, {site_id: zones[site_id] for site_id, _ in due})
    already = planned_at_ticks(context.instance, [*earlier, tick])
    due_now = set(due_at[tick])
    caught_up = [SiteDay(*pair).key for pair in due if pair not in due_now and SiteDay(*pair).key not in already]
    if caught_up:
        context.log.warning(
            f"planning {len(caught_up)} site-day(s) due at {len(earlier)} tick(s) missed or left unfinished since "
            f"{earlier[0].isoformat()} (the daemon down, or the schedule stopped): {', '.join(caught_up[:10])}{' ...' if len(caught_up) > 10 else ''}"
        )
    due = [(site_id, tomorrow) for site_id, tomorrow in due if SiteDay(site_id, tomorrow).key not in already]
    if not due:
        also = f" or at the {len(missed)} tick(s) missed before it" if missed else ""
        return dg.SkipReason(f"every site due at {tick.isoformat()}{also} has a run of its tick already")
    ready = ready_days(engine, sites, [(site_id, tomorrow) for site_id, tomorrow in due if site_id in sites])
    runs = plan_runs(due, partition_order, ready)
    context.log.info(f"{len(due)} site(s) due: {len(runs)} run(s)")
    return [run_request(days, tick) for days in runs]
