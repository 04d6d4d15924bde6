"""Saving dispatch runs: in bulk, all or nothing, never changed afterwards; every value checked
on the way in."""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.request import TIMEOUT_MS_RANGE
from dispatch_pipeline.core.result import DispatchResult, Point
from dispatch_pipeline.storage.bulk import bulk_insert
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
from dispatch_pipeline.storage.runs.read import keyed_run
from dispatch_pipeline.storage.runs.records import (
    EXPLANATION_COLUMNS,
    IDEMPOTENCY_COLUMNS,
    KPI_TABLE_COLUMNS,
    POINT_NUMBER_FIELDS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    IdempotencyKey,
    KeyedRun,
)
from dispatch_pipeline.storage.tables import (
    KPI_COLUMNS,
    RESOLUTIONS_MINUTES,
    RUN_SOLVERS,
    RUN_SOURCES,
    RUN_STATUSES,
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)
from dispatch_pipeline.storage.timestamps import creation_times

REASON_CODE_LENGTH = dispatch_explanations.c.reason_code.type.length
_point_numbers = attrgetter(*POINT_NUMBER_FIELDS)


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
