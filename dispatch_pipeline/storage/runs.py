"""Dispatch runs: saved in bulk, all or nothing, never changed afterwards; read back by id, as
the latest run of a site (and date), or listed newest first, in the shapes of the contract."""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Connection, Engine, Row, Select, and_, or_, select
from sqlalchemy.exc import IntegrityError

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.request import TIMEOUT_MS_RANGE, Weights
from dispatch_pipeline.core.result import DispatchResult, Kpis, Point, SolverName, Status
from dispatch_pipeline.storage.bulk import bulk_insert, chunks
from dispatch_pipeline.storage.checks import (
    StorageInputError,
    check_aware,
    check_choice,
    check_finite,
    check_integer,
    check_length,
    check_site_id,
    parse_utc_timestamp,
    problem,
)
from dispatch_pipeline.storage.database import write_transaction
from dispatch_pipeline.storage.tables import (
    KPI_COLUMNS,
    RESOLUTIONS_MINUTES,
    RUN_SOLVERS,
    RUN_SOURCES,
    RUN_STATUSES,
    SCHEDULE_FLOW_COLUMNS,
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)
from dispatch_pipeline.storage.timestamps import creation_times, iso_utc

Source = Literal["dagster", "api", "cli"]
REASON_CODE_LENGTH = dispatch_explanations.c.reason_code.type.length

RUN_COLUMNS = (
    "id",
    "site_id",
    "date",
    "created_at",
    "status",
    "solver",
    "fallback_reason",
    "objective_value",
    "objective_config",
    "timeout_ms",
    "solve_ms",
    "mip_gap",
    "source",
    "dagster_run_id",
    "timezone",
    "resolution_minutes",
    "milp_solver",
    "forecast_issued_at",
    "prices_issued_at",
    "forecast_stored_at",
    "prices_stored_at",
    "site_updated_at",
)
# Written only with a keyed run (save_keyed_run): every other writer leaves them null.
IDEMPOTENCY_COLUMNS = ("idempotency_key", "idempotency_scope", "request_fingerprint")
SCHEDULE_COLUMNS = ("run_id", "ts", *SCHEDULE_FLOW_COLUMNS, "soc", "reason")
EXPLANATION_COLUMNS = ("run_id", "ts", "reason_code", "reason", "binding", "marginal_cost_per_kwh")
KPI_TABLE_COLUMNS = ("run_id", *KPI_COLUMNS)
# The Point fields stored as the schedule's numbers, in SCHEDULE_COLUMNS order (same names).
POINT_NUMBER_FIELDS = (*SCHEDULE_FLOW_COLUMNS, "soc")
_point_numbers = attrgetter(*POINT_NUMBER_FIELDS)


class RecordedWeights(BaseModel):
    """The weights a stored run was solved with, as stored.

    Not the request's `Weights`: a run is a record of what was solved, and rules on new requests
    tightened since (weights above 1e9, or between 0 and 1e-9, are refused now) must not make
    the runs stored before them unreadable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cost: float
    curtail: float
    violation: float


class RunRecord(BaseModel):
    """One row of `dispatch_runs`."""

    model_config = ConfigDict(frozen=True)

    run_id: uuid.UUID
    site_id: str
    date: dt.date
    created_at: dt.datetime
    status: Status
    solver: SolverName
    fallback_reason: str | None
    objective_value: float
    objective_config: RecordedWeights
    timeout_ms: int
    solve_ms: float
    mip_gap: float | None
    source: Source
    dagster_run_id: str | None
    timezone: str
    resolution_minutes: int
    milp_solver: str | None
    forecast_issued_at: dt.datetime | None
    prices_issued_at: dt.datetime | None
    forecast_stored_at: dt.datetime | None
    prices_stored_at: dt.datetime | None
    site_updated_at: dt.datetime | None


class StoredRun(BaseModel):
    """A stored run with its KPIs and its points (schedule joined with explanations, by ts)."""

    model_config = ConfigDict(frozen=True)

    run: RunRecord
    kpis: Kpis
    points: list[Point]

    def to_result(self) -> DispatchResult:
        """The DispatchResult this run was saved from."""
        run = self.run
        return DispatchResult(
            run_id=run.run_id,
            status=run.status,
            # The contract ties the two: status "fallback" exactly when the fallback rule ran.
            fallback_used=run.status == "fallback",
            solver=run.solver,
            objective_value=run.objective_value,
            kpis=self.kpis,
            site_id=run.site_id,
            date=run.date,
            timezone=run.timezone,
            resolution_minutes=run.resolution_minutes,
            fallback_reason=run.fallback_reason,
            milp_solver=run.milp_solver,
            mip_gap=run.mip_gap,
            solve_ms=run.solve_ms,
            timeout_ms=run.timeout_ms,
            # As solved: not judged again by the rules on new requests.
            objective_config=Weights.model_construct(**run.objective_config.model_dump()),
            forecast_issued_at=run.forecast_issued_at,
            prices_issued_at=run.prices_issued_at,
            forecast_stored_at=run.forecast_stored_at,
            prices_stored_at=run.prices_stored_at,
            site_updated_at=run.site_updated_at,
            points=self.points,
        )


class ListedRun(BaseModel):
    """A stored run's row and its day's total cost (its KPI row's `total_cost`), without points."""

    model_config = ConfigDict(frozen=True)

    run: RunRecord
    total_cost: float


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key for one request, whose key it is (`scope`: keys of two scopes never meet)
    and the fingerprint of the request it came with. Opaque strings to storage."""

    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class KeyedRun:
    """The run stored under an idempotency key, and the fingerprint of the request that stored it."""

    run_id: uuid.UUID
    site_id: str
    fingerprint: str


# ----------------------------------------------------------------------------------------- write


def save_runs(
    engine: Engine,
    results: Sequence[DispatchResult],
    *,
    source: str,
    dagster_run_id: str | None = None,
) -> list[uuid.UUID]:
    """Store every result (run, KPIs, schedule, explanations) in one transaction; return their ids.

    All or nothing: any bad value or database error leaves no row of any result behind. Runs are
    only ever added: a result whose run_id is already stored fails the whole call.
    """
    results = _checked_batch(results, source, dagster_run_id)
    if not results:
        return []
    _write_runs(engine, results, source, dagster_run_id, None)
    return [result.run_id for result in results]


def save_keyed_run(
    engine: Engine, result: DispatchResult, key: IdempotencyKey, *, source: str
) -> tuple[KeyedRun, bool]:
    """Store `result` under `key` unless a run is stored under it already (in `key.scope`).

    Returns the run the key names, and whether it is `result`, stored now; when it is another,
    nothing of `result` is written. Two calls with one key at once store one run: the database's
    unique index on (scope, key) decides, and the other call gets the first one's run. As
    save_runs otherwise (all or nothing, checks first).
    """
    _check_key(key)
    [result] = _checked_batch([result], source, None)
    try:
        _write_runs(engine, [result], source, None, key)
    except IntegrityError:
        # Most likely the index: another request stored a run under the key since the caller
        # looked. Anything else (a run_id stored already) leaves the key free, and is raised.
        stored = keyed_run(engine, key.scope, key.key)
        if stored is None:
            raise
        return stored, False
    return KeyedRun(result.run_id, result.site_id, key.fingerprint), True


def _check_key(key: Any) -> None:
    if not isinstance(key, IdempotencyKey):
        raise problem("key", "must be an IdempotencyKey", type(key).__name__)
    runs = dispatch_runs.c
    for name, column, may_be_empty in (
        ("key", runs.idempotency_key, False),
        ("scope", runs.idempotency_scope, True),
        ("fingerprint", runs.request_fingerprint, False),
    ):
        value = getattr(key, name)
        if not isinstance(value, str) or "\x00" in value or not (value or may_be_empty):
            raise problem(f"key.{name}", "must be a non-empty string without NUL" if not may_be_empty
                          else "must be a string without NUL", value)
        check_length(value, column, f"key.{name}")


def _write_runs(
    engine: Engine,
    results: list[DispatchResult],
    source: str,
    dagster_run_id: str | None,
    key: IdempotencyKey | None,
) -> None:
    parsed_ts: dict[str, dt.datetime] = {}
    with write_transaction(engine) as connection:
        bulk_insert(
            connection, dispatch_schedule, SCHEDULE_COLUMNS, _schedule_rows(results, parsed_ts)
        )
        bulk_insert(
            connection,
            dispatch_explanations,
            EXPLANATION_COLUMNS,
            _explanation_rows(results, parsed_ts),
        )
        # The runs (and their KPIs, which refer to them) after the interval rows, stamped then:
        # "latest" orders by created_at, and a batch that took seconds to write must not count as
        # older than a run stored while it was writing. One tick per result: a later entry of the
        # same batch counts as the more recent run.
        created_at = creation_times(connection, len(results))
        run_rows = _run_rows(results, created_at, source, dagster_run_id)
        if key is None:
            bulk_insert(connection, dispatch_runs, RUN_COLUMNS, run_rows)
        else:
            keyed = ((*row, key.key, key.scope, key.fingerprint) for row in run_rows)
            bulk_insert(connection, dispatch_runs, (*RUN_COLUMNS, *IDEMPOTENCY_COLUMNS), keyed)
        bulk_insert(connection, dispatch_kpis, KPI_TABLE_COLUMNS, _kpi_rows(results))


def check_runs_storable(
    results: Sequence[DispatchResult], *, source: str, dagster_run_id: str | None = None
) -> None:
    """StorageInputError for what save_runs would refuse of these arguments (all but a run_id
    stored already), found without a database.

    save_runs checks each point as it writes it (a backfill's millions are gone through once), so
    its refusal comes with the database open: a caller that must not create a database, or its
    tables, for a run it then cannot store asks this first.
    """
    results = _checked_batch(results, source, dagster_run_id)
    parsed_ts: dict[str, dt.datetime] = {}
    for _row in _schedule_rows(results, parsed_ts):
        pass
    for _row in _explanation_rows(results, parsed_ts):
        pass


def _checked_batch(results: Sequence[Any], source: str, dagster_run_id: str | None) -> list[Any]:
    """The results as a list, once what save_runs checks before its transaction passes."""
    check_choice(source, RUN_SOURCES, "source")
    if dagster_run_id is not None and not (
        isinstance(dagster_run_id, str) and 0 < len(dagster_run_id) <= 64
    ):
        raise problem(
            "dagster_run_id", "must be a non-empty string of at most 64 characters", dagster_run_id
        )
    results = list(results)
    _check_runs(results)
    return results


def _which(i: int, result: DispatchResult) -> str:
    """A result in messages: its place in the batch, and its site-day (a batch need not be in any
    order the caller knows)."""
    return f"results[{i}] (site {result.site_id!r} on {result.date})"


def _check_runs(results: list[Any]) -> None:
    """The per-run checks, done before the transaction opens; per-point ones run while streaming."""
    seen: set[uuid.UUID] = set()
    for i, result in enumerate(results):
        if not isinstance(result, DispatchResult):
            raise problem(f"results[{i}]", "must be a DispatchResult", type(result).__name__)
        field = _which(i, result)
        if result.run_id in seen:
            raise problem(f"{field}.run_id", "appears twice in this batch", str(result.run_id))
        seen.add(result.run_id)
        check_site_id(result.site_id, f"{field}.site_id")
        check_choice(result.status, RUN_STATUSES, f"{field}.status")
        check_choice(result.solver, RUN_SOLVERS, f"{field}.solver")
        if result.resolution_minutes not in RESOLUTIONS_MINUTES:
            raise problem(
                f"{field}.resolution_minutes",
                f"must be one of {RESOLUTIONS_MINUTES}",
                result.resolution_minutes,
            )
        if result.fallback_used != (result.status == "fallback"):
            # Not stored: read back from the status, it would come back changed.
            raise problem(
                f"{field}.fallback_used",
                f"must say whether status is 'fallback' (status is {result.status!r})",
                result.fallback_used,
            )
        check_integer(result.timeout_ms, TIMEOUT_MS_RANGE, f"{field}.timeout_ms")
        for name in ("timezone", "milp_solver"):
            check_length(getattr(result, name), dispatch_runs.c[name], f"{field}.{name}")
        for name in ("objective_value", "solve_ms"):
            check_finite(getattr(result, name), f"{field}.{name}")
        if result.mip_gap is not None:
            check_finite(result.mip_gap, f"{field}.mip_gap")
        for name in (
            "forecast_issued_at", "prices_issued_at", "forecast_stored_at", "prices_stored_at", "site_updated_at"
        ):
            if getattr(result, name) is not None:
                check_aware(getattr(result, name), f"{field}.{name}")
        for name in KPI_COLUMNS:
            check_finite(getattr(result.kpis, name), f"{field}.kpis.{name}")
        _check_interval_starts(result, field)


def _check_interval_starts(result: DispatchResult, field: str) -> None:
    """The points are the local day's intervals, one each (in any order): a run is read back
    by its day's intervals, and one stored with others could not be read (or would read as
    another day's plan)."""
    try:
        starts = _day_starts(result.date, result.timezone, result.resolution_minutes)
    except ZoneInfoNotFoundError:
        raise problem(f"{field}.timezone", "must be an IANA time zone", result.timezone) from None
    except (TypeError, ValueError) as exc:  # a day that never happened, a resolution not dividing it
        raise StorageInputError(f"{field}.{exc}") from None
    points = result.points
    if len(points) == len(starts) and {point.ts for point in points} == set(starts):
        return  # as the solver spells them: no parsing
    expected = {dt.datetime.fromisoformat(start): start for start in starts}
    seen: set[dt.datetime] = set()
    for j, point in enumerate(points):
        ts_field = f"{field}.points[{j}].ts"
        ts = parse_utc_timestamp(point.ts, ts_field)
        if ts not in expected:
            raise problem(
                ts_field,
                f"must start an interval of {result.date} in {result.timezone} at "
                f"{result.resolution_minutes} minutes ({starts[0]} to {starts[-1]})",
                point.ts,
            )
        if ts in seen:
            raise problem(ts_field, "repeats an interval of the run", point.ts)
        seen.add(ts)
    missing = [start for ts, start in expected.items() if ts not in seen]
    if not missing:
        return  # spelled otherwise (an offset of +00:00, say), but the day's intervals
    raise problem(
        f"{field}.points",
        f"must hold all {len(starts)} intervals of {result.date} in {result.timezone} at "
        f"{result.resolution_minutes} minutes; {len(missing)} missing, the first {missing[0]}",
        f"{len(points)} points",
    )


@functools.lru_cache(maxsize=4096)
def _day_starts(date: dt.date, timezone: str, resolution_minutes: int) -> tuple[str, ...]:
    return tuple(local_day(date, timezone, resolution_minutes).iso_timestamps())


def _run_rows(
    results: list[DispatchResult],
    created_at: list[dt.datetime],
    source: str,
    dagster_run_id: str | None,
) -> Iterator[tuple[Any, ...]]:
    for result, created in zip(results, created_at, strict=True):
        yield (
            result.run_id,
            result.site_id,
            result.date,
            created,
            result.status,
            result.solver,
            result.fallback_reason,
            result.objective_value,
            result.objective_config.model_dump(mode="json"),
            result.timeout_ms,
            result.solve_ms,
            result.mip_gap,
            source,
            dagster_run_id,
            result.timezone,
            result.resolution_minutes,
            result.milp_solver,
            result.forecast_issued_at,
            result.prices_issued_at,
            result.forecast_stored_at,
            result.prices_stored_at,
            result.site_updated_at,
        )


def _kpi_rows(results: list[DispatchResult]) -> Iterator[tuple[Any, ...]]:
    for result in results:
        kpis = result.kpis
        yield (result.run_id, *(getattr(kpis, name) for name in KPI_COLUMNS))


def _schedule_rows(
    results: list[DispatchResult], parsed_ts: dict[str, dt.datetime]
) -> Iterator[tuple[Any, ...]]:
    for i, result in enumerate(results):
        run_id = result.run_id
        for j, point in enumerate(result.points):
            numbers = _point_numbers(point)
            if not _all_finite(numbers):
                _raise_first_non_finite(point, POINT_NUMBER_FIELDS, f"{_which(i, result)}.points[{j}]")
            yield (
                run_id,
                _timestamp(point.ts, parsed_ts, i, result, j),
                *numbers,
                point.reason,
            )


def _explanation_rows(
    results: list[DispatchResult], parsed_ts: dict[str, dt.datetime]
) -> Iterator[tuple[Any, ...]]:
    for i, result in enumerate(results):
        run_id = result.run_id
        for j, point in enumerate(result.points):
            marginal = point.marginal_cost_per_kwh
            if len(point.reason_code) > REASON_CODE_LENGTH:
                check_length(point.reason_code, dispatch_explanations.c.reason_code,
                             f"{_which(i, result)}.points[{j}].reason_code")
            if marginal is not None and not _all_finite((marginal,)):
                _raise_first_non_finite(
                    point, ("marginal_cost_per_kwh",), f"{_which(i, result)}.points[{j}]"
                )
            yield (
                run_id,
                _timestamp(point.ts, parsed_ts, i, result, j),
                point.reason_code,
                point.reason,
                point.binding,
                marginal,
            )


def _all_finite(values: tuple[Any, ...]) -> bool:
    # The per-value check with its message is only built on failure: this runs ~3M times a backfill.
    try:
        return all(map(math.isfinite, values))
    except TypeError:
        return False


def _raise_first_non_finite(point: Point, names: Sequence[str], field: str) -> None:
    for name in names:
        check_finite(getattr(point, name), f"{field}.{name}")


def _timestamp(text: str, cache: dict[str, dt.datetime], i: int, result: DispatchResult, j: int) -> dt.datetime:
    # Both point tables need every ts, and fleets repeat the same instants: parse each once.
    parsed = cache.get(text)
    if parsed is None:
        parsed = cache[text] = parse_utc_timestamp(text, f"{_which(i, result)}.points[{j}].ts")
    return parsed


# ------------------------------------------------------------------------------------------ read


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
