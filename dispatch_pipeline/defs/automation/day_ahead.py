"""`day_ahead_dispatch_schedule`: plan each site's tomorrow at 14:00 on the site's own clock.

One schedule serves every timezone: it ticks every quarter-hour (UTC) and requests a run for each
site whose local clock reads the planning time at that tick, for the site's local tomorrow. The
quarter-hour tick catches zones offset by :30 and :45 (India, Nepal) too; a tick at 14:07 in no
site's zone requests nothing.
"""

import datetime as dt
import os
from zoneinfo import ZoneInfo

import dagster as dg

from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.partitions import (
    SITES_PARTITIONS_NAME,
    last_date_partition,
    site_day_key,
)
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import list_sites

TICK_MINUTES = 15
# Local clock time the day-ahead plan is made ("HH:MM"): after the day-ahead forecasts and
# prices are issued, before the site needs its plan.
PLANNING_TIME = os.environ.get("DISPATCH_PLANNING_TIME", "14:00")


def planning_minute(text: str = PLANNING_TIME) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def due_sites(
    sites: list[tuple[str, str]], tick_utc: dt.datetime, planning_at: int | None = None
) -> list[tuple[str, dt.date]]:
    """(site_id, local tomorrow) of every (site_id, timezone) whose planning time is this tick.

    A site is due when its local clock at the tick is within [planning time, + one tick).
    """
    planning_at = planning_minute() if planning_at is None else planning_at
    due = []
    for site_id, timezone in sites:
        local = tick_utc.astimezone(ZoneInfo(timezone))
        minute = local.hour * 60 + local.minute
        if planning_at <= minute < planning_at + TICK_MINUTES:
            due.append((site_id, local.date() + dt.timedelta(days=1)))
    return due


@dg.schedule(
    name="day_ahead_dispatch_schedule",
    cron_schedule=f"*/{TICK_MINUTES} * * * *",
    execution_timezone="UTC",
    job=day_ahead_dispatch_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"At {PLANNING_TIME} local time of each site, plan the site's next local day "
        "(one run per site, partition site x tomorrow)."
    ),
)
def day_ahead_dispatch_schedule(context: dg.ScheduleEvaluationContext, storage: DispatchStorage):
    tick = context.scheduled_execution_time
    if tick is None:
        tick = dt.datetime.now(dt.UTC)
    sites = [(site.site_id, site.timezone) for site in list_sites(storage.engine())]
    partitions = set(context.instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))
    last_date = last_date_partition(tick)
    requested = 0
    for site_id, tomorrow in due_sites(sites, tick):
        if site_id not in partitions:
            # The sites sensor adds it within a minute; tomorrow's tick would be too late, so say so.
            context.log.warning(f"site {site_id} is due but has no partition yet: skipped")
            continue
        if tomorrow > last_date:
            context.log.warning(f"site {site_id}: {tomorrow} is beyond the last date partition")
            continue
        key = site_day_key(site_id, tomorrow)
        requested += 1
        yield dg.RunRequest(
            run_key=str(key),
            partition_key=key,
            tags={"dispatch/site": site_id, "dispatch/date": tomorrow.isoformat()},
        )
    if not requested:
        yield dg.SkipReason(f"no site reaches {PLANNING_TIME} local time at {tick.isoformat()}")
