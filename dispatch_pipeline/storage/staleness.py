"""Which stored plans a forecast or price issue stored since they were made has made stale."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine, Table, func, select

from dispatch_pipeline.storage.bulk import chunks
from dispatch_pipeline.storage.checks import check_aware
from dispatch_pipeline.storage.runs import latest_run_ids
from dispatch_pipeline.storage.tables import dispatch_runs, forecasts, price_series

# Scalar subqueries (or run ids) per statement: one round trip for a fleet's days, far below any
# limit on bound parameters (three per subquery).
_WINDOWS_PER_QUERY = 200

Key = TypeVar("Key")
NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class DayWindow:
    """A site's local day as the UTC instants its intervals start in: [start_utc, end_utc)."""

    site_id: str
    date: dt.date
    start_utc: dt.datetime
    end_utc: dt.datetime


@dataclass(frozen=True)
class StalePlan:
    """The latest plan of a day, and the newest issue of its inputs stored after the ones it read."""

    run_id: uuid.UUID
    newest_issue: dt.datetime


def stale_plans(engine: Engine, days: Mapping[Key, DayWindow]) -> dict[Key, StalePlan]:
    """The days whose latest run was stored by Dagster and read a forecast (or price series) older
    than the newest issue now stored for an interval of the day.

    A Dagster plan on the site's time-of-use tariff read no price series because none was stored
    for its day: any now stored makes it stale, whenever it was issued (day-ahead prices are
    often loaded after the plan, with the hour they were published). A run stored before runs
    kept the issue time of their forecast (migration 0005) counts from its creation.
    Runs of the API or the CLI were asked for with the caller's own inputs, and are left alone.
    """
    windows = {key: _checked(window) for key, window in days.items()}
    latest = latest_run_ids(engine, [(window.site_id, window.date) for window in windows.values()])
    if not latest:
        return {}
    runs = dispatch_runs.c
    with engine.connect() as connection:
        read = {
            row.id: row
            for chunk in chunks(list(latest.values()), _WINDOWS_PER_QUERY)
            for row in connection.execute(
                select(runs.id, runs.source, runs.created_at, runs.forecast_issued_at, runs.prices_issued_at)
                .where(runs.id.in_(chunk))
            )
        }
    planned = {key: read[latest[(w.site_id, w.date)]] for key, w in windows.items() if (w.site_id, w.date) in latest}
    planned = {key: run for key, run in planned.items() if run.source == "dagster"}
    newest_forecast = _newest_issues(engine, forecasts, {key: windows[key] for key in planned})
    newest_prices = _newest_issues(engine, price_series, {key: windows[key] for key in planned})
    stale: dict[Key, StalePlan] = {}
    for key, run in planned.items():
        newer = [
            issue
            for issue, read_issue in (
                (newest_forecast[key], run.forecast_issued_at or run.created_at),
                (newest_prices[key], run.prices_issued_at or NEVER),
            )
            if issue is not None and issue > read_issue
        ]
        if newer:
            stale[key] = StalePlan(run.id, max(newer))
    return stale


def _newest_issues(engine: Engine, table: Table, windows: Mapping[Key, DayWindow]) -> dict[Key, dt.datetime | None]:
    """Per day, the newest `issued_at` among the table's rows for its intervals (None: no row)."""
    keys = list(windows)
    newest: dict[Key, dt.datetime | None] = {}
    with engine.connect() as connection:
        for chunk in chunks(keys, _WINDOWS_PER_QUERY):
            columns = [
                select(func.max(table.c.issued_at))
                .where(
                    table.c.site_id == windows[key].site_id,
                    table.c.ts >= windows[key].start_utc,
                    table.c.ts < windows[key].end_utc,
                )
                .scalar_subquery()
                .label(f"day_{n}")
                for n, key in enumerate(chunk)
            ]
            row = connection.execute(select(*columns)).one()
            newest.update(zip(chunk, row, strict=True))
    return newest


def _checked(window: DayWindow) -> DayWindow:
    check_aware(window.start_utc, "start_utc")
    check_aware(window.end_utc, "end_utc")
    return window
