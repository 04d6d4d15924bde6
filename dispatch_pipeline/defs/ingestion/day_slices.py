"""Read a stored series for many site-days with a few queries: one per site and span of dates.

A backfill chunk asks for hundreds of days of one site; a query per day would spend more time in
round trips than in reading. Rows come back ordered by `ts`, so each day is a contiguous slice,
and whether it holds exactly the day's intervals is checked on arrays, not per row; only a day
that does not is aligned interval by interval to say what it lacks. A day without a single
stored row (the common case for prices: most sites use their ToU tariff) lacks every interval,
which needs no alignment to say: its slice is built from the day's timestamps and NaN values.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import cache, partial
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES
from dispatch_pipeline.defs.ingestion.coverage import (
    align_to_day,
    unusable_slice_message,
    utc_nanoseconds,
)
from dispatch_pipeline.defs.partitions import SiteDay, context_site_days
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.defs.site_lookup import registered_sites, unplannable_days

SeriesLoader = Callable[[Engine, str, dt.datetime, dt.datetime], pd.DataFrame]

# One query covers at most this many days, and never a gap longer than MAX_GAP_DAYS between
# requested dates: sparse requests must not read years of rows nobody asked for.
MAX_SPAN_DAYS = 400
MAX_GAP_DAYS = 7


class DaySlice:
    """One site-day of a stored series: its local day, its rows aligned to the day's intervals
    (NaN where data is missing), the interval starts without a complete row, the stored rows off
    the interval grid, and how many rows were stored inside the day, on the grid or not.

    For a day without a single stored row, rows and missing intervals are only built when asked
    for: a site without price series has a year of such days per backfill run, and its tariff
    comes from elsewhere.
    """

    def __init__(
        self,
        local: LocalDay,
        stored_rows: int,
        rows: pd.DataFrame | None = None,
        missing: list[pd.Timestamp] | None = None,
        off_grid: list[pd.Timestamp] | None = None,
        blank_values: Callable[[], pd.DataFrame] | None = None,
    ) -> None:
        self.local = local
        self.stored_rows = stored_rows
        self.off_grid = off_grid or []
        self._rows, self._missing, self._blank_values = rows, missing, blank_values

    @property
    def rows(self) -> pd.DataFrame:
        if self._rows is None:
            # What align_to_day says of a day without a single stored row, without its cost.
            rows = self._blank_values().copy()
            rows.insert(0, "ts", self.local.timestamps())
            self._rows = rows
        return self._rows

    @property
    def missing(self) -> list[pd.Timestamp]:
        if self._missing is None:
            self._missing = self.local.timestamps().to_list()
        return self._missing

    def unusable_reason(self, series: str, site_id: str) -> str | None:
        """Why the day cannot be planned from this series (intervals missing, rows off the
        grid), naming the site and the date; None when it can."""
        return unusable_slice_message(series, site_id, self.local, self.missing, self.off_grid)


def _spans(dates: Sequence[dt.date]) -> list[list[dt.date]]:
    spans: list[list[dt.date]] = []
    for date in sorted(set(dates)):
        if spans and (date - spans[-1][-1]).days <= MAX_GAP_DAYS and (date - spans[-1][0]).days < MAX_SPAN_DAYS:
            spans[-1].append(date)
        else:
            spans.append([date])
    return spans


def load_day_slices(
    engine: Engine,
    load: SeriesLoader,
    columns: Sequence[str],
    days: Sequence[SiteDay],
    sites: Mapping[str, Site],
) -> dict[SiteDay, DaySlice]:
    """Each site-day's local day, its rows aligned to the day's intervals, and what is missing."""
    dates_by_site: dict[str, list[dt.date]] = defaultdict(list)
    for day in days:
        dates_by_site[day.site_id].append(day.date)
    slices: dict[SiteDay, DaySlice] = {}
    for site_id, dates in dates_by_site.items():
        site = sites[site_id]
        for span in _spans(dates):
            local_days = [site.local_day(date, RESOLUTION_MINUTES) for date in span]
            frame = load(engine, site_id, local_days[0].start_utc, local_days[-1].end_utc)
            span_slices = _slice_days(frame, local_days, columns)
            for local, slice_ in zip(local_days, span_slices, strict=True):
                slices[SiteDay(site_id, local.date)] = slice_
    return slices


class StepSlices(NamedTuple):
    """What load_step_slices found for a step: its usable sites by id, when each one's
    registration last changed, partition key -> why for the days that cannot be planned, and the
    stored series of every other day."""

    sites: dict[str, Site]
    updated_at: dict[str, dt.datetime]
    problems: dict[str, str]
    slices: dict[SiteDay, DaySlice]


def load_step_slices(
    context: Any, storage: DispatchStorage, load: SeriesLoader, columns: Sequence[str]
) -> StepSlices:
    """The stored series of every partition of the step (`context`) whose site is registered and
    usable and whose date its clock did not skip; the others are in `problems`."""
    days = context_site_days(context)
    engine = storage.engine()
    sites, unusable, updated_at = registered_sites(engine, (day.site_id for day in days))
    problems = unplannable_days(days, sites, unusable)
    usable = [day for day in days if day.key not in problems]
    return StepSlices(sites, updated_at, problems, load_day_slices(engine, load, columns, usable, sites))


def _slice_days(
    frame: pd.DataFrame, local_days: list[LocalDay], columns: Sequence[str]
) -> list[DaySlice]:
    """Each day's slice of `frame`, whose rows are ordered by `ts` and cover the days."""
    step = np.int64(RESOLUTION_MINUTES * 60 * 10**9)
    stamps = utc_nanoseconds(frame["ts"])
    has_gaps = frame[list(columns)].isna().to_numpy().any(axis=1)
    bounds = utc_nanoseconds(pd.DatetimeIndex([d.start_utc for d in local_days]))
    # Days of one length share their blank values; across DST there are two or three lengths.
    blank_values_for = cache(partial(_blank_values, frame))
    slices: list[DaySlice] = []
    for local, start in zip(local_days, bounds, strict=True):
        first = int(np.searchsorted(stamps, start))
        last = first + int(np.searchsorted(stamps[first:], start + local.intervals * step))
        if first == last:
            slices.append(DaySlice(local, 0, blank_values=partial(blank_values_for, local.intervals)))
            continue
        expected = start + np.arange(local.intervals, dtype=np.int64) * step
        rows = frame.iloc[first:last].reset_index(drop=True)
        if np.array_equal(stamps[first:last], expected) and not has_gaps[first:last].any():
            slices.append(DaySlice(local, len(rows), rows, []))
        else:
            aligned, missing, off_grid = align_to_day(rows, local, tuple(columns))
            slices.append(DaySlice(local, len(rows), aligned, missing, off_grid))
    return slices


def _blank_values(frame: pd.DataFrame, intervals: int) -> pd.DataFrame:
    """The frame's columns but `ts`, as `intervals` rows of NaN (NaT).

    Reindexed, as align_to_day makes its rows, so that every column gets the dtype it would there.
    """
    return frame.iloc[:0].drop(columns="ts").reindex(pd.RangeIndex(intervals))
