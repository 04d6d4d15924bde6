"""Read back the latest dispatch run of many site-days in a handful of queries.

`storage.latest_run` reads one run with three queries; a backfill chunk loads hundreds of
partitions at once, so this module reads them in batches: one query for the candidate runs, one
each for their rows, KPIs and points. It builds the same `StoredRun` the storage layer returns.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import dagster as dg
from sqlalchemy import Engine, and_, select

from dispatch_pipeline.core.result import DispatchResult, Kpis, Point
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.storage import RunRecord, StoredRun
from dispatch_pipeline.storage.tables import (
    KPI_COLUMNS,
    SCHEDULE_FLOW_COLUMNS,
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)
from dispatch_pipeline.storage.timestamps import iso_utc

# Bound parameters per IN list: far below every driver's limit.
IN_CHUNK = 500


def _chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def latest_run_ids(engine: Engine, days: Sequence[SiteDay]) -> dict[SiteDay, uuid.UUID]:
    """The most recent run id of each site-day that has one (created_at, then id, decides)."""
    wanted = set(days)
    sites = sorted({day.site_id for day in days})
    dates = sorted({day.date for day in days})
    runs = dispatch_runs.c
    best: dict[SiteDay, tuple[Any, str, uuid.UUID]] = {}
    with engine.connect() as connection:
        for site_chunk in _chunks(sites):
            for date_chunk in _chunks(dates):
                rows = connection.execute(
                    select(runs.id, runs.site_id, runs.date, runs.created_at).where(
                        runs.site_id.in_(site_chunk), runs.date.in_(date_chunk)
                    )
                )
                for run_id, site_id, date, created_at in rows:
                    day = SiteDay(site_id, date)
                    if day not in wanted:
                        continue
                    rank = (created_at, str(run_id), run_id)
                    if day not in best or rank[:2] > best[day][:2]:
                        best[day] = rank
    return {day: rank[2] for day, rank in best.items()}


def read_runs(engine: Engine, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredRun]:
    """Stored runs with KPIs and points, by id."""
    records: dict[uuid.UUID, RunRecord] = {}
    kpis: dict[uuid.UUID, Kpis] = {}
    points: dict[uuid.UUID, list[Point]] = defaultdict(list)
    schedule, explanation = dispatch_schedule.c, dispatch_explanations.c
    with engine.connect() as connection:
        for chunk in _chunks(list(run_ids)):
            for row in connection.execute(select(dispatch_runs).where(dispatch_runs.c.id.in_(chunk))):
                values = dict(row._mapping)
                values["run_id"] = values.pop("id")
                records[values["run_id"]] = RunRecord.model_validate(values)
            for row in connection.execute(
                select(dispatch_kpis).where(dispatch_kpis.c.run_id.in_(chunk))
            ):
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
                values = row._mapping
                points[values["run_id"]].append(
                    Point.model_construct(
                        ts=iso_utc(values["ts"]),
                        **{name: values[name] for name in SCHEDULE_FLOW_COLUMNS},
                        soc=values["soc"],
                        reason=values["reason"],
                        reason_code=values["reason_code"] or "",
                        binding=values["binding"] or [],
                        marginal_cost_per_kwh=values["marginal_cost_per_kwh"],
                    )
                )
    missing_kpis = [str(run_id) for run_id in records if run_id not in kpis]
    if missing_kpis:
        raise LookupError(f"run_id: stored run has no KPI row (got {missing_kpis[0]!r})")
    return {
        run_id: StoredRun.model_construct(run=record, kpis=kpis[run_id], points=points[run_id])
        for run_id, record in records.items()
    }


def latest_results(engine: Engine, days: Sequence[SiteDay]) -> dict[str, DispatchResult]:
    """`{partition key: DispatchResult}` of the latest run of every site-day; all must exist."""
    run_ids = latest_run_ids(engine, days)
    missing = [str(day) for day in days if day not in run_ids]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise dg.Failure(f"no stored dispatch run for {shown}: materialise dispatch_schedule first")
    stored = read_runs(engine, list(run_ids.values()))
    return {day.key: stored[run_ids[day]].to_result() for day in days}
