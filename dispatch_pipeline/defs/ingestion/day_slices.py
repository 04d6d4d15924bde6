"""Read a stored series for many site-days with a few queries: one per site and span of dates.

A backfill chunk asks for hundreds of days of one site; a query per day would spend more time in
round trips than in reading. Rows come back ordered by `ts`, so each day is a contiguous slice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES
from dispatch_pipeline.defs.ingestion.coverage import utc_nanoseconds
from dispatch_pipeline.defs.partitions import SiteDay

SeriesLoader = Callable[[Engine, str, dt.datetime, dt.datetime], pd.DataFrame]

# One query covers at most this many days, and never a gap longer than MAX_GAP_DAYS between
# requested dates: sparse requests must not read years of rows nobody asked for.
MAX_SPAN_DAYS = 400
MAX_GAP_DAYS = 7


def _spans(dates: Sequence[dt.date]) -> list[list[dt.date]]:
    spans: list[list[dt.date]] = []
    for date in sorted(set(dates)):
        if spans and (date - spans[-1][-1]).days <= MAX_GAP_DAYS and (date - spans[-1][0]).days < MAX_SPAN_DAYS:
            spans[-1].append(date)
        else:
            spans.append([date])
    return spans


def load_day_slices(
    engine: Engine, load: SeriesLoader, days: Sequence[SiteDay], sites: Mapping[str, Site]
) -> dict[SiteDay, tuple[LocalDay, pd.DataFrame]]:
    """Each site-day's local day and the stored rows inside it (possibly none)."""
    dates_by_site: dict[str, list[dt.date]] = defaultdict(list)
    for day in days:
        dates_by_site[day.site_id].append(day.date)
    slices: dict[SiteDay, tuple[LocalDay, pd.DataFrame]] = {}
    for site_id, dates in dates_by_site.items():
        site = sites[site_id]
        for span in _spans(dates):
            local_days = [site.local_day(date, RESOLUTION_MINUTES) for date in span]
            frame = load(engine, site_id, local_days[0].start_utc, local_days[-1].end_utc)
            stamps = utc_nanoseconds(frame["ts"])
            for date, local in zip(span, local_days, strict=True):
                first, last = np.searchsorted(stamps, utc_nanoseconds(pd.DatetimeIndex([local.start_utc, local.end_utc])))
                slices[SiteDay(site_id, date)] = (local, frame.iloc[first:last].reset_index(drop=True))
    return slices
