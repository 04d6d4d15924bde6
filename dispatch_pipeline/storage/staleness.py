"""Which stored plans the forecasts and prices stored since they were made have made stale: a
newer issue, or an issue's values overwritten by loading it again under the same issue time; or
their site registered again with other values since the registration they were made with."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import (
    Engine,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    func,
    literal_column,
    select,
    union_all,
)

from dispatch_pipeline.storage.bulk import chunks
from dispatch_pipeline.storage.checks import check_aware
from dispatch_pipeline.storage.runs.read import latest_run_ids
from dispatch_pipeline.storage.tables import SITE_ID, dispatch_runs, forecasts, price_series, sites
from dispatch_pipeline.storage.timestamps import UtcDateTime

# Days per statement: one round trip for a fleet's days, far below any limit on bound parameters
# (three per day).
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
class DayInputs:
    """What a day's intervals read now from one stored series (per interval its most recent
    issue): the newest of those issues, and when the most recently written of those rows was."""

    newest_issue: dt.datetime
    newest_write: dt.datetime


@dataclass(frozen=True)
class StalePlan:
    """The latest plan of a day, and what its stored inputs read now (both series together): the
    newest issue, and when the most recently written row was written (NEVER for both when the day
    has no rows any more); and when its site's registration last changed, if after the
    registration the plan was made with."""

    run_id: uuid.UUID
    newest_issue: dt.datetime
    newest_write: dt.datetime
    site_changed_at: dt.datetime | None = None

    @property
    def inputs(self) -> str:
        """The state of the day's inputs in one string: a newer issue, an issue loaded again with
        other values, or the site registered again with other values changes it
        (stale_plan_sensor acts once per state and stale plan)."""
        series = f"{self.newest_issue.isoformat()} written {self.newest_write.isoformat()}"
        return series if self.site_changed_at is None else f"{series} site {self.site_changed_at.isoformat()}"


def stale_plans(engine: Engine, days: Mapping[Key, DayWindow]) -> dict[Key, StalePlan]:
    """The days whose latest run was stored by Dagster and read a forecast (or price series) that
    has changed since: an interval of the day now reads an issue newer than the newest the run
    read, or a row written after the newest row the run read (an issue loaded again with other
    values, or one loaded out of order for intervals that read an older one still). Rows no
    interval reads (an issue with a later one over the same intervals) change nothing.

    A Dagster plan made with a registration of its site older than the one stored now (another
    battery, limits, tariff, ...: `updated_at`, which an import of the same values leaves as it
    is) is stale too: the run's `site_updated_at`, the oldest registration its steps read, so a
    change between a step reading the site and the plan being stored counts. A run stored before
    runs kept it (migration 0007) counts from its creation. Days of sites no longer registered
    are judged by their series only.

    A Dagster plan on the site's time-of-use tariff read no price series because none was stored
    for its day: any now stored makes it stale, whenever it was issued (day-ahead prices are
    often loaded after the plan, with the hour they were published). A run stored before runs
    kept the issue time of their forecast (migration 0005), or when the rows they read were
    written (0006), counts from its creation; rows stored before 0006 count as written in 1970.
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
                select(
                    runs.id, runs.source, runs.created_at, runs.forecast_issued_at, runs.prices_issued_at,
                    runs.forecast_stored_at, runs.prices_stored_at, runs.site_updated_at,
                    sites.c.updated_at.label("site_now"),
                )
                .select_from(dispatch_runs.outerjoin(sites, sites.c.site_id == runs.site_id))
                .where(runs.id.in_(chunk))
            )
        }
    planned = {key: read[latest[(w.site_id, w.date)]] for key, w in windows.items() if (w.site_id, w.date) in latest}
    planned = {key: run for key, run in planned.items() if run.source == "dagster"}
    now_forecast = day_inputs(engine, forecasts, {key: windows[key] for key in planned})
    now_prices = day_inputs(engine, price_series, {key: windows[key] for key in planned})
    stale: dict[Key, StalePlan] = {}
    for key, run in planned.items():
        compared = (
            (now_forecast.get(key), run.forecast_issued_at or run.created_at, run.forecast_stored_at or run.created_at),
            (
                now_prices.get(key),
                run.prices_issued_at or NEVER,
                run.prices_stored_at or (run.created_at if run.prices_issued_at else NEVER),
            ),
        )
        inputs = [now for now, _, _ in compared if now is not None]
        # The registration the plan was made with; unknown before 0007: its creation stands in.
        planned_with = run.site_updated_at or run.created_at
        changed = run.site_now is not None and run.site_now > planned_with
        site_changed_at = run.site_now if changed else None
        if site_changed_at is not None or any(
            now.newest_issue > read_issue or now.newest_write > read_write
            for now, read_issue, read_write in compared
            if now is not None
        ):
            stale[key] = StalePlan(
                run.id,
                max((now.newest_issue for now in inputs), default=NEVER),
                max((now.newest_write for now in inputs), default=NEVER),
                site_changed_at,
            )
    return stale


def day_inputs(engine: Engine, table: Table, windows: Mapping[Key, DayWindow]) -> dict[Key, DayInputs]:
    """Per day with rows, what its intervals read from the table now (see DayInputs): one
    statement per 200 days (_day_inputs_statement)."""
    keys = list(windows)
    found: dict[Key, DayInputs] = {}
    with engine.connect() as connection:
        for chunk in chunks(keys, _WINDOWS_PER_QUERY):
            parameters = {}
            for n, key in enumerate(chunk):
                window = windows[key]
                parameters |= {f"site_{n}": window.site_id, f"start_{n}": window.start_utc, f"end_{n}": window.end_utc}
            for day, newest_issue, newest_write in connection.execute(
                _day_inputs_statement(table, len(chunk)), parameters
            ):
                found[chunk[day]] = DayInputs(newest_issue, newest_write)
    return found


@functools.cache
def _day_inputs_statement(table: Table, days: int) -> Select[tuple[int, dt.datetime, dt.datetime]]:
    """The days (site_{n}, start_{n}, end_{n}) as a list of rows joined to the table's rows of their
    intervals (the primary key's index: site_id, then ts), ranked per interval newest issue
    first as load_latest ranks them; per day, the newest issue and write of the rows ranked first.

    One statement object per table and number of days, its values bound at execution: SQLAlchemy
    then compiles it once per process, not once per tick and chunk (most of the time it took). A
    UNION ALL of one-row selects, not a VALUES list: SQLAlchemy does not cache a statement with
    bound values in a VALUES list, and SQLite names no columns of one in FROM.
    """
    listed = union_all(
        *(
            select(
                literal_column(str(n), Integer).label("day"),
                bindparam(f"site_{n}", type_=SITE_ID).label("site_id"),
                bindparam(f"start_{n}", type_=UtcDateTime).label("start_utc"),
                bindparam(f"end_{n}", type_=UtcDateTime).label("end_utc"),
            )
            for n in range(days)
        )
    ).cte("days")
    t = table.c
    issue_rank = (
        func.row_number()
        .over(partition_by=(listed.c.day, t.ts), order_by=t.issued_at.desc())
        .label("issue_rank")
    )
    ranked = (
        select(listed.c.day, t.issued_at, t.stored_at, issue_rank)
        .select_from(
            listed.join(table, and_(t.site_id == listed.c.site_id, t.ts >= listed.c.start_utc, t.ts < listed.c.end_utc))
        )
        .subquery("ranked")
    )
    return (
        select(ranked.c.day, func.max(ranked.c.issued_at), func.max(ranked.c.stored_at))
        .where(ranked.c.issue_rank == 1)
        .group_by(ranked.c.day)
    )


def _checked(window: DayWindow) -> DayWindow:
    check_aware(window.start_utc, "start_utc")
    check_aware(window.end_utc, "end_utc")
    return window
