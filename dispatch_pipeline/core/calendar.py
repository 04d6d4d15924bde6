"""The site's local day as a run of UTC intervals (92, 96 or 100 quarter-hours across DST)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

UTC = dt.UTC
# The pipeline's interval: the contract's day of 96 quarter-hours (92/100 on DST days).
PIPELINE_RESOLUTION_MINUTES = 15
# Whole years inside what a nanosecond timestamp (pandas, numpy, the stored series) can hold:
# 1677-09-21 to 2262-04-11, less a day's margin for any UTC offset.
FIRST_DATE = dt.date(1678, 1, 1)
LAST_DATE = dt.date(2261, 12, 31)


@dataclass(frozen=True)
class LocalDay:
    date: dt.date
    timezone: str
    resolution_minutes: int
    start_utc: dt.datetime
    end_utc: dt.datetime

    @property
    def intervals(self) -> int:
        return int((self.end_utc - self.start_utc) / dt.timedelta(minutes=self.resolution_minutes))

    @property
    def dt_hours(self) -> float:
        return self.resolution_minutes / 60.0

    def timestamps(self) -> pd.DatetimeIndex:
        """Interval starts in UTC."""
        # Imported here: solver workers load this module and never need pandas (a second of start-up).
        import pandas as pd

        return pd.date_range(
            self.start_utc, periods=self.intervals, freq=f"{self.resolution_minutes}min"
        )

    def iso_timestamps(self) -> list[str]:
        start = np.datetime64(self.start_utc.replace(tzinfo=None), "s")
        steps = start + np.arange(self.intervals) * np.timedelta64(self.resolution_minutes * 60, "s")
        return [f"{s}Z" for s in steps.astype(str)]


def local_midnight_utc(date: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(date, dt.time(0), tzinfo=zone).astimezone(UTC)


def local_day(date: dt.date, timezone: str, resolution_minutes: int) -> LocalDay:
    if not FIRST_DATE <= date <= LAST_DATE:
        raise ValueError(f"date: {date} is outside the supported range {FIRST_DATE} to {LAST_DATE}")
    zone = ZoneInfo(timezone)
    start = local_midnight_utc(date, zone)
    end = local_midnight_utc(date + dt.timedelta(days=1), zone)
    length = end - start
    if length <= dt.timedelta(0):
        # Samoa (Pacific/Apia) skipped 2011-12-30, Kiritimati 1994-12-31: no interval to plan.
        raise ValueError(f"date: {date} never happened in {timezone} (its clocks skipped the whole day)")
    step = dt.timedelta(minutes=resolution_minutes)
    if length % step:
        raise ValueError(
            f"resolution_minutes: {resolution_minutes} does not divide the {_duration(length)} local day "
            f"{date} in {timezone}"
        )
    return LocalDay(date, timezone, resolution_minutes, start, end)


def _duration(length: dt.timedelta) -> str:
    """'24 h 30 min', '23 h 15 min 30 s': a day's length as a reader says it."""
    seconds = int(length.total_seconds())
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "min"), (seconds % 60, "s")]
    return " ".join(f"{amount} {unit}" for amount, unit in parts if amount or unit == "h")


def next_local_date(timezone: str, now: dt.datetime | None = None) -> dt.date:
    """The site's tomorrow: the default day to plan."""
    now = now or dt.datetime.now(UTC)
    return now.astimezone(ZoneInfo(timezone)).date() + dt.timedelta(days=1)


def describe_missing(missing: Sequence[dt.datetime], resolution_minutes: int) -> str:
    """Missing interval starts as compact UTC ranges: '16:00Z-18:45Z, 22:00Z (13 intervals)'."""
    step = dt.timedelta(minutes=resolution_minutes)
    ranges: list[list[dt.datetime]] = []
    for ts in missing:
        if ranges and ts - ranges[-1][1] == step:
            ranges[-1][1] = ts
        else:
            ranges.append([ts, ts])

    def label(ts: dt.datetime) -> str:
        return ts.strftime("%Y-%m-%dT%H:%MZ")

    parts = [label(a) if a == b else f"{label(a)}..{label(b)}" for a, b in ranges]
    shown = ", ".join(parts[:6]) + (f", ... ({len(parts) - 6} more ranges)" if len(parts) > 6 else "")
    return f"{shown} ({len(missing)} of the day's intervals, starts in UTC)"
