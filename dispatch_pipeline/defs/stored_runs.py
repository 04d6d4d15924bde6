"""Read back the latest dispatch run of many site-days in a handful of queries.

`storage.latest_run` answers for one site-day; a backfill chunk loads hundreds of partitions at
once, so this module finds their latest run ids in batches and reads them with
`storage.read_runs`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import dagster as dg
from sqlalchemy import Engine, select

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.storage import read_runs
from dispatch_pipeline.storage.tables import (
    dispatch_runs,
)

# Bound parameters per IN list: far below every driver's limit.
IN_CHUNK = 500


def _chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def latest_run_ids(
    engine: Engine, days: Sequence[SiteDay], dagster_run_ids: Sequence[str] | None = None
) -> dict[SiteDay, uuid.UUID]:
    """The most recent run id of each site-day that has one (created_at, then id, decides);
    with `dagster_run_ids`, of the runs those Dagster runs stored only."""
    wanted = set(days)
    sites = sorted({day.site_id for day in days})
    dates = sorted({day.date for day in days})
    runs = dispatch_runs.c
    made_by = [] if dagster_run_ids is None else [runs.dagster_run_id.in_(list(dagster_run_ids))]
    best: dict[SiteDay, tuple[Any, str, uuid.UUID]] = {}
    with engine.connect() as connection:
        for site_chunk in _chunks(sites):
            for date_chunk in _chunks(dates):
                rows = connection.execute(
                    select(runs.id, runs.site_id, runs.date, runs.created_at).where(
                        runs.site_id.in_(site_chunk), runs.date.in_(date_chunk), *made_by
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


def latest_results(engine: Engine, days: Sequence[SiteDay]) -> dict[str, DispatchResult]:
    """`{partition key: DispatchResult}` of the latest run of every site-day; all must exist."""
    run_ids = latest_run_ids(engine, days)
    missing = [str(day) for day in days if day not in run_ids]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise dg.Failure(f"no stored dispatch run for {shown}: materialise dispatch_schedule first")
    stored = read_runs(engine, list(run_ids.values()))
    return {day.key: stored[run_ids[day]].to_result() for day in days}
