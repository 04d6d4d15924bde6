"""Reading dispatch runs back: by id, as the latest run of a site (and date), or listed newest
first, in the shapes of the contract."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, Row, Select, and_, or_, select

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.result import Kpis, Point
from dispatch_pipeline.storage.bulk import chunks
from dispatch_pipeline.storage.checks import StorageInputError, problem
from dispatch_pipeline.storage.runs.records import KeyedRun, ListedRun, RunRecord, StoredRun
from dispatch_pipeline.storage.tables import (
    KPI_COLUMNS,
    SCHEDULE_FLOW_COLUMNS,
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)
from dispatch_pipeline.storage.timestamps import iso_utc


def get_run(engine: Engine, run_id: uuid.UUID | str) -> StoredRun | None:
    """The stored run with this id, or None."""
    run_uuid = _as_uuid(run_id)
    with engine.connect() as connection:
        return _read_run(connection, run_uuid)


def keyed_run(engine: Engine, scope: str, key: str) -> KeyedRun | None:
    """The run stored under idempotency key `key` of `scope`, or None: one lookup in the index
    that keeps them unique."""
    runs = dispatch_runs.c
    with engine.connect() as connection:
        row = connection.execute(
            select(runs.id, runs.site_id, runs.request_fingerprint).where(
                runs.idempotency_scope == scope, runs.idempotency_key == key
            )
        ).first()
    return None if row is None else KeyedRun(*row)


def latest_run(engine: Engine, site_id: str, date: dt.date | None = None) -> StoredRun | None:
    """The most recently created run of a site (on one local date if given), or None."""
    query = (
        select(dispatch_runs.c.id)
        .where(dispatch_runs.c.site_id == site_id)
        # id breaks exact created_at ties (other processes) so the answer is at least stable.
        .order_by(dispatch_runs.c.created_at.desc(), dispatch_runs.c.id.desc())
        .limit(1)
    )
    if date is not None:
        query = query.where(dispatch_runs.c.date == _as_date(date))
    with engine.connect() as connection:
        run_id = connection.scalar(query)
        return None if run_id is None else _read_run(connection, run_id)


def list_runs(
    engine: Engine,
    site_id: str | None = None,
    date: dt.date | None = None,
    *,
    limit: int | None = None,
) -> list[RunRecord]:
    """Run rows, newest first, optionally for one site and/or one local date."""
    query = _newest_first(select(dispatch_runs), site_id, date, limit)
    with engine.connect() as connection:
        return [_run_record(row) for row in connection.execute(query)]


def list_runs_with_cost(
    engine: Engine, site_id: str, date: dt.date, *, limit: int | None = None, before: uuid.UUID | None = None
) -> list[ListedRun]:
    """The runs of a site's local date, newest first (as list_runs), each with its total_cost:
    one query, the KPI rows joined. IncompleteStoredRun for a run whose KPI row is gone.

    With `before` (a run_id of this site-day, as the last of a page): only the runs after it in
    that order, looked up first; UnlistedRun when it names no run of the site-day."""
    runs, kpis = dispatch_runs, dispatch_kpis
    query = _newest_first(
        select(runs, kpis.c.total_cost.label(_LISTED_COST)).select_from(
            # Outer: a run without its KPI row is refused, not left out of the list unsaid.
            runs.outerjoin(kpis, kpis.c.run_id == runs.c.id)
        ),
        site_id,
        date,
        limit,
    )
    listed = []
    with engine.connect() as connection:
        if before is not None:
            query = query.where(_older_than(connection, _as_uuid(before), site_id, _as_date(date)))
        for row in connection.execute(query):
            values = dict(row._mapping)
            total_cost = values.pop(_LISTED_COST)
            record = _run_record_of(values)
            if total_cost is None:  # the column is NOT NULL: the row is missing
                raise _incomplete(record, "its KPI row")
            listed.append(ListedRun.model_construct(run=record, total_cost=total_cost))
    return listed


class UnlistedRun(StorageInputError):
    """`before` of list_runs_with_cost names no run of the site-day listed: `found` is the
    (site_id, date) of the run it names, None when no run has that id."""

    def __init__(self, message: str, run_id: uuid.UUID, found: tuple[str, dt.date] | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.found = found  # whose run: a caller may not be allowed to hear of it


def _older_than(connection: Connection, run_id: uuid.UUID, site_id: str, date: dt.date) -> ColumnElement[bool]:
    """The runs after `run_id` in the order of _newest_first: (created_at, id) below its own.

    Both values are compared in SQL, bound as the columns' types, so each backend compares them
    as it sorts them, ties of created_at included: PostgreSQL's uuid by its bytes, SQLite's (32
    lowercase hex digits, as Uuid stores them) as text, the same order. The redundant
    created_at <= bound lets an index on (site_id, date, created_at) start the scan at the run."""
    runs = dispatch_runs.c
    row = connection.execute(
        select(runs.site_id, runs.date, runs.created_at).where(runs.id == run_id)
    ).first()
    if row is None or (row.site_id, row.date) != (site_id, date):
        found = None if row is None else (row.site_id, row.date)
        named = "no stored run has this id" if found is None else f"it is a run of site {found[0]} on {found[1]}"
        raise UnlistedRun(
            f"before: must be a run of site {site_id} on {date}; {named} (got {str(run_id)!r})", run_id, found
        )
    created_at = row.created_at
    return and_(runs.created_at <= created_at, or_(runs.created_at < created_at, runs.id < run_id))


# Not a column name of dispatch_runs, so the joined value cannot shadow one.
_LISTED_COST = "kpi_total_cost"


def _newest_first(query: Select[Any], site_id: str | None, date: dt.date | None, limit: int | None) -> Select[Any]:
    # created_at DESC, id DESC: the order latest_run takes the first of.
    query = query.order_by(dispatch_runs.c.created_at.desc(), dispatch_runs.c.id.desc())
    if site_id is not None:
        query = query.where(dispatch_runs.c.site_id == site_id)
    if date is not None:
        query = query.where(dispatch_runs.c.date == _as_date(date))
    if limit is not None:
        query = query.limit(limit)
    return query


def read_runs(engine: Engine, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredRun]:
    """Stored runs with KPIs and points, by id, in a few queries per 500 ids (for backfills)."""
    with engine.connect() as connection:
        return _read_runs(connection, run_ids)


# Bound parameters per IN list: far below every driver's limit.
_IN_CHUNK = 500


SiteDayKey = TypeVar("SiteDayKey", bound=tuple[str, dt.date])


def latest_run_ids(
    engine: Engine, site_days: Sequence[SiteDayKey], dagster_run_ids: Sequence[str] | None = None
) -> dict[SiteDayKey, uuid.UUID]:
    """The most recent run id of each (site_id, date) that has one (created_at, then id,
    decides), keyed by the caller's own tuples; with `dagster_run_ids`, of the runs those Dagster
    runs stored only. A backfill chunk asks for hundreds of days: a few queries per 500 sites and
    500 dates, not one per day."""
    wanted = {(site_id, date): day for day in site_days for site_id, date in [day]}
    sites = sorted({site_id for site_id, _ in wanted})
    dates = sorted({date for _, date in wanted})
    runs = dispatch_runs.c
    made_by = [] if dagster_run_ids is None else [runs.dagster_run_id.in_(list(dagster_run_ids))]
    best: dict[tuple[str, dt.date], tuple[Any, str, uuid.UUID]] = {}
    with engine.connect() as connection:
        for site_chunk in chunks(sites, _IN_CHUNK):
            for date_chunk in chunks(dates, _IN_CHUNK):
                rows = connection.execute(
                    select(runs.id, runs.site_id, runs.date, runs.created_at).where(
                        runs.site_id.in_(site_chunk), runs.date.in_(date_chunk), *made_by
                    )
                )
                for run_id, site_id, date, created_at in rows:
                    key = (site_id, date)
                    if key not in wanted:
                        continue
                    rank = (created_at, str(run_id), run_id)
                    if key not in best or rank[:2] > best[key][:2]:
                        best[key] = rank
    return {wanted[key]: rank[2] for key, rank in best.items()}


def stored_run_ids(engine: Engine, run_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `run_ids` that are stored: a primary-key lookup per 500 ids."""
    ids = list(run_ids)
    stored: set[uuid.UUID] = set()
    with engine.connect() as connection:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            stored.update(connection.scalars(select(dispatch_runs.c.id).where(dispatch_runs.c.id.in_(chunk))))
    return stored


def _read_run(connection: Connection, run_id: uuid.UUID) -> StoredRun | None:
    return _read_runs(connection, [run_id]).get(run_id)


def _read_runs(connection: Connection, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredRun]:
    records: dict[uuid.UUID, RunRecord] = {}
    kpis: dict[uuid.UUID, Kpis] = {}
    points: dict[uuid.UUID, list[Point]] = defaultdict(list)
    schedule, explanation = dispatch_schedule.c, dispatch_explanations.c
    ids = list(run_ids)
    unexplained: set[uuid.UUID] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for row in connection.execute(select(dispatch_runs).where(dispatch_runs.c.id.in_(chunk))):
            record = _run_record(row)
            records[record.run_id] = record
        for row in connection.execute(select(dispatch_kpis).where(dispatch_kpis.c.run_id.in_(chunk))):
            values = row._mapping
            kpis[values["run_id"]] = Kpis(**{name: values[name] for name in KPI_COLUMNS})
        point_rows = connection.execute(
            select(
                schedule.run_id,
                schedule.ts,
                *(schedule[name] for name in SCHEDULE_FLOW_COLUMNS),
                schedule.soc,
                schedule.reason,
                explanation.reason_code,
                explanation.binding,
                explanation.marginal_cost_per_kwh,
            )
            .select_from(
                dispatch_schedule.outerjoin(
                    dispatch_explanations,
                    and_(explanation.run_id == schedule.run_id, explanation.ts == schedule.ts),
                )
            )
            .where(schedule.run_id.in_(chunk))
            .order_by(schedule.run_id, schedule.ts)
        )
        for row in point_rows:
            run_id = row._mapping["run_id"]
            if row._mapping["reason_code"] is None:
                unexplained.add(run_id)
            points[run_id].append(_point(row))
    _refuse_incomplete(records, kpis, points, unexplained)
    return {
        run_id: StoredRun.model_construct(run=record, kpis=kpis[run_id], points=points[run_id])
        for run_id, record in records.items()
    }


class IncompleteStoredRun(LookupError):
    """A stored run lacks rows save_runs wrote with it: some were deleted outside the application.
    Read back as it is, it would be a plan with missing intervals or blank explanations."""

    def __init__(self, message: str, site_id: str) -> None:
        super().__init__(message)
        self.site_id = site_id  # whose run: a caller may not be allowed to hear of it


def _refuse_incomplete(
    records: dict[uuid.UUID, RunRecord],
    kpis: dict[uuid.UUID, Kpis],
    points: dict[uuid.UUID, list[Point]],
    unexplained: set[uuid.UUID],
) -> None:
    for run_id, record in records.items():
        expected = _intervals(record.date, record.timezone, record.resolution_minutes)
        if run_id not in kpis:
            lacks = "its KPI row"
        elif len(points[run_id]) != expected:
            lacks = f"schedule rows: it holds {len(points[run_id])} of the day's {expected} intervals"
        elif run_id in unexplained:
            lacks = "explanation rows for some of its intervals"
        else:
            continue
        raise _incomplete(record, lacks)


def _incomplete(record: RunRecord, lacks: str) -> IncompleteStoredRun:
    return IncompleteStoredRun(
        f"run_id: stored run {record.run_id} (site {record.site_id}, {record.date}) lacks {lacks}; "
        "rows of a run are only ever written together, so some were deleted by hand "
        "(delete a run whole, as docs/operations.md shows under Deleting plans)",
        record.site_id,
    )


@functools.lru_cache(maxsize=4096)
def _intervals(date: dt.date, timezone: str, resolution_minutes: int) -> int:
    return local_day(date, timezone, resolution_minutes).intervals


def _run_record(row: Row[Any]) -> RunRecord:
    return _run_record_of(dict(row._mapping))


def _run_record_of(values: dict[str, Any]) -> RunRecord:
    values["run_id"] = values.pop("id")
    return RunRecord.model_validate(values)


def _point(row: Row[Any]) -> Point:
    values = row._mapping
    # Rows come from save_runs, which validated them on the way in.
    return Point.model_construct(
        ts=iso_utc(values["ts"]),
        **{name: values[name] for name in SCHEDULE_FLOW_COLUMNS},
        soc=values["soc"],
        reason=values["reason"],
        # None only where an explanation row is missing, which _refuse_incomplete refuses.
        reason_code=values["reason_code"],
        binding=values["binding"],
        marginal_cost_per_kwh=values["marginal_cost_per_kwh"],
    )


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise problem("run_id", "must be a UUID", value) from None


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise problem("date", "must be a calendar date, not a datetime", value)
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise problem("date", "must be an ISO date YYYY-MM-DD", value) from None
