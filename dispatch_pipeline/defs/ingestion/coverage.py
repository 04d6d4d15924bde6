"""Does a series cover every interval of a local day? If not, which intervals are missing, and
which stored rows lie between the day's intervals?"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from dispatch_pipeline.core.calendar import LocalDay, describe_missing
from dispatch_pipeline.storage.timestamps import iso_utc


def align_to_day(
    frame: pd.DataFrame, day: LocalDay, columns: tuple[str, ...]
) -> tuple[pd.DataFrame, list[pd.Timestamp], list[pd.Timestamp]]:
    """The frame's rows at the day's interval starts, the interval starts it lacks, and the
    timestamps of its rows that start no interval of the day.

    A row with a missing value counts as a missing interval: half a row cannot be planned with.
    A row off the grid (a 5-minute value, a stray second) would be left out of the plan without
    a word if it were not named: the day is then not planned from what was stored.
    """
    expected = day.timestamps()
    indexed = frame.set_index("ts")
    indexed = indexed[~indexed.index.duplicated(keep="last")]
    off_grid = list(indexed.index.difference(expected))
    aligned = indexed.reindex(expected)
    incomplete = aligned[list(columns)].isna().any(axis=1)
    missing = list(expected[incomplete.to_numpy()])
    aligned = aligned.rename_axis("ts").reset_index()
    return aligned, missing, off_grid


def utc_nanoseconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Epoch nanoseconds of timezone-aware timestamps, whatever unit pandas chose for them."""
    return pd.DatetimeIndex(values).as_unit("ns").asi8


INCOMPLETE_PARTITIONS_KEY = "incomplete_partitions"


def fail_partitions(problems: dict[str, str]) -> None:
    """Fail the step when any site-day cannot be planned, naming the first few and listing up to 50.

    `problems` maps partition keys to messages. Every key goes into the failure's metadata:
    `partition_recovery_sensor` reads it to plan the run's other days without them.
    """
    if not problems:
        return
    messages = list(problems.values())
    more = f"; and {len(messages) - 5} more" if len(messages) > 5 else ""
    raise dg.Failure(
        description=f"{len(messages)} site-day(s) cannot be planned: " + "; ".join(messages[:5]) + more,
        metadata={
            "incomplete": dg.MetadataValue.json(messages[:50]),
            INCOMPLETE_PARTITIONS_KEY: dg.MetadataValue.json(sorted(problems)),
        },
    )


def missing_message(series: str, site_id: str, day: LocalDay, missing: list[pd.Timestamp]) -> str:
    return (
        f"{series} for site {site_id} on {day.date} ({day.timezone}) is missing "
        f"{describe_missing(missing, day.resolution_minutes)}"
    )


def off_grid_message(series: str, site_id: str, day: LocalDay, off_grid: list[pd.Timestamp]) -> str:
    shown = ", ".join(iso_utc(ts) for ts in off_grid[:3])
    more = f" and {len(off_grid) - 3} more" if len(off_grid) > 3 else ""
    return (
        f"{series} for site {site_id} on {day.date} ({day.timezone}) has {len(off_grid)} stored "
        f"row(s) that start no {day.resolution_minutes}-minute interval of the day: {shown}{more} "
        "(the plan takes one value per interval start; loading again cannot replace rows off the "
        "grid: delete them, as docs/operations.md shows under Loading forecasts and prices)"
    )


def unusable_slice_message(series: str, site_id: str, day: LocalDay,
                           missing: list[pd.Timestamp], off_grid: list[pd.Timestamp]) -> str | None:
    """Why a site-day's stored series cannot be planned with, or None when it can."""
    reasons = []
    if missing:
        reasons.append(missing_message(series, site_id, day, missing))
    if off_grid:
        reasons.append(off_grid_message(series, site_id, day, off_grid))
    return "; ".join(reasons) or None
