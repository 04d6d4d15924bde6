"""Does a series cover every interval of a local day? If not, which intervals are missing?"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from dispatch_pipeline.core.calendar import LocalDay


def align_to_day(frame: pd.DataFrame, day: LocalDay, columns: tuple[str, ...]) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """The frame's rows at the day's interval starts, and the interval starts it lacks.

    A row with a missing value counts as a missing interval: half a row cannot be planned with.
    """
    expected = day.timestamps()
    indexed = frame.set_index("ts")
    indexed = indexed[~indexed.index.duplicated(keep="last")]
    aligned = indexed.reindex(expected)
    incomplete = aligned[list(columns)].isna().any(axis=1)
    missing = list(expected[incomplete.to_numpy()])
    aligned = aligned.rename_axis("ts").reset_index()
    return aligned, missing


def utc_nanoseconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Epoch nanoseconds of timezone-aware timestamps, whatever unit pandas chose for them."""
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def describe_missing(missing: list[pd.Timestamp], resolution_minutes: int) -> str:
    """Missing interval starts as compact UTC ranges: '16:00Z-18:45Z, 22:00Z (13 intervals)'."""
    step = dt.timedelta(minutes=resolution_minutes)
    ranges: list[list[pd.Timestamp]] = []
    for ts in missing:
        if ranges and ts - ranges[-1][1] == step:
            ranges[-1][1] = ts
        else:
            ranges.append([ts, ts])

    def label(ts: pd.Timestamp) -> str:
        return ts.strftime("%Y-%m-%dT%H:%MZ")

    parts = [label(a) if a == b else f"{label(a)}..{label(b)}" for a, b in ranges]
    shown = ", ".join(parts[:6]) + (f", ... ({len(parts) - 6} more ranges)" if len(parts) > 6 else "")
    return f"{shown} ({len(missing)} of the day's intervals, starts in UTC)"


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
