"""Read back the latest dispatch run of many site-days, as the results the assets hand on.

`storage.latest_run` answers for one site-day; a backfill chunk loads hundreds of partitions at
once, so their latest run ids come from `storage.latest_run_ids` and the runs from
`storage.read_runs`, a few queries for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from sqlalchemy import Engine

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.common import shorten
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.storage import latest_run_ids, read_runs


def latest_results(engine: Engine, days: Sequence[SiteDay]) -> dict[str, DispatchResult]:
    """`{partition key: DispatchResult}` of the latest run of every site-day; all must exist."""
    run_ids = latest_run_ids(engine, days)
    missing = [str(day) for day in days if day not in run_ids]
    if missing:
        raise dg.Failure(f"no stored dispatch run for {shorten(missing)}: materialise dispatch_schedule first")
    stored = read_runs(engine, list(run_ids.values()))
    return {day.key: stored[run_ids[day]].to_result() for day in days}
