"""Materialisation metadata of runs that carry many partitions.

Dagster copies an output's metadata into the materialisation of every partition of the run, so a
run-wide figure would read as each day's own: those keys start with `run/`. Each partition's own
numbers are added per partition, for runs up to DETAILED_PARTITIONS_MAX (every day-ahead run while
DISPATCH_DAY_AHEAD_SITES_PER_RUN keeps to its default of 250 or less).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import pandas as pd

from dispatch_pipeline.defs.common import shorten

# Runs up to this size (a day-ahead tick's batch) get each partition's own numbers and plot; a
# backfill chunk gets a summary. A plot costs 30-130 ms, and even numbers alone are dear in bulk:
# Dagster checks every partition's metadata against the run's whole key range (a query and the
# range's keys per call), which took a run of 365 partitions from 22.2 G to 28.6 G instructions
# (+29 %, bench/run_instructions.py).
DETAILED_PARTITIONS_MAX = 250

RUN_PREFIX = "run/"


def detailed(partitions: int) -> bool:
    """Whether a run of this many partitions records each partition's own metadata."""
    return partitions <= DETAILED_PARTITIONS_MAX


def skipped_detail(partitions: int) -> str:
    return (
        f"skipped: {partitions} partitions in this run; each partition's own numbers are recorded "
        f"for runs of up to {DETAILED_PARTITIONS_MAX} partitions, to keep backfills fast. Every "
        "plan's are in the dispatch_runs and dispatch_kpis tables"
    )


def run_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` under run-wide keys."""
    return {f"{RUN_PREFIX}{name}": value for name, value in values.items()}


def record(
    context: dg.AssetExecutionContext,
    shared: dict[str, Any],
    per_partition: Mapping[str, dict[str, Any]],
    asset_key: str | None = None,
) -> dict[str, Any]:
    """The output's metadata: for a one-partition run, that partition's own (the run's figures
    would repeat it); for a run of several, `shared`, each partition's own being added to that
    partition's materialisation."""
    if len(per_partition) == 1:
        return next(iter(per_partition.values()))
    for key, metadata in per_partition.items():
        context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
    return shared


def frames_metadata(
    context: dg.AssetExecutionContext,
    frames: Mapping[str, pd.DataFrame],
    day_metadata: Callable[[str, pd.DataFrame], dict[str, Any]],
    **run_values: Any,
) -> dict[str, Any]:
    """The metadata of an output of one frame per partition key (`record`): the run's number of
    partitions, `run_values` and its site-days; each partition's `day_metadata(key, frame)`."""
    shared = run_metadata({"partitions": len(frames), **run_values, "site_days": shorten(sorted(frames))})
    per_partition = {key: day_metadata(key, frame) for key, frame in frames.items()} if detailed(len(frames)) else {}
    return record(context, shared, per_partition)
