"""Day slices of a stored series: what each site-day holds and lacks, read with one query per span.

The loader is a stand-in over an in-memory frame, so these tests need no database.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.tariffs import expand_tariff
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES
from dispatch_pipeline.defs.ingestion.coverage import align_to_day
from dispatch_pipeline.defs.ingestion.day_slices import SeriesLoader, load_day_slices
from dispatch_pipeline.defs.ingestion.tariff import _tou_frame, site_registration
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.demo import demo_site

COLUMNS = ("buy", "sell")
BERLIN = demo_site("BERLIN_DEPOT")
SPRING_FORWARD = dt.date(2024, 3, 31)  # 92 quarter-hours in Berlin
ISSUED_AT = pd.Timestamp("2024-03-01T00:00Z")


def local(date: dt.date) -> LocalDay:
    return BERLIN.local_day(date, RESOLUTION_MINUTES)


def price_rows(*dates: dt.date) -> pd.DataFrame:
    """Stored rows for every interval of the dates, as the storage layer returns them."""
    ts = pd.DatetimeIndex(np.concatenate([local(date).timestamps() for date in dates]))
    return pd.DataFrame(
        {"ts": ts, "buy": np.linspace(0.1, 0.3, len(ts)), "sell": 0.05, "issued_at": ISSUED_AT}
    )


def no_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.to_datetime([], utc=True),
            "buy": np.array([], dtype=float),
            "sell": np.array([], dtype=float),
            "issued_at": pd.to_datetime([], utc=True),
        }
    )


def stored(frame: pd.DataFrame, queries: list | None = None) -> SeriesLoader:
    def load(engine, site_id, start_utc, end_utc):
        if queries is not None:
            queries.append((site_id, start_utc, end_utc))
        return frame[(frame["ts"] >= start_utc) & (frame["ts"] < end_utc)].reset_index(drop=True)

    return load


def slices(frame: pd.DataFrame, *dates: dt.date, queries: list | None = None):
    days = [SiteDay(BERLIN.site_id, date) for date in dates]
    loaded = load_day_slices(None, stored(frame, queries), COLUMNS, days, {BERLIN.site_id: BERLIN})
    return {day.date: loaded[day] for day in days}


def assert_lacks_every_interval(day_slice, frame: pd.DataFrame) -> None:
    day = day_slice.local
    assert day_slice.stored_rows == 0
    assert day_slice.missing == list(day.timestamps())
    assert len(day_slice.rows) == day.intervals
    assert day_slice.rows[list(COLUMNS)].isna().all().all()
    # Exactly what aligning no rows to the day gives: same columns, dtypes and index.
    aligned, missing, off_grid = align_to_day(frame.iloc[:0], day, COLUMNS)
    assert off_grid == [] and day_slice.off_grid == []
    pd.testing.assert_frame_equal(day_slice.rows, aligned)
    assert day_slice.missing == missing


@pytest.mark.parametrize("date", [dt.date(2024, 3, 30), SPRING_FORWARD, dt.date(2024, 10, 27)])
def test_a_day_without_stored_rows_lacks_every_interval(date):
    assert_lacks_every_interval(slices(no_rows(), date)[date], no_rows())


def test_days_with_and_without_rows_share_one_span():
    full, partial = dt.date(2024, 3, 27), dt.date(2024, 3, 28)
    unstored = [dt.date(2024, 3, 29), dt.date(2024, 3, 30), SPRING_FORWARD, dt.date(2024, 4, 1)]
    frame = price_rows(full, partial)
    gap = local(partial).timestamps()[[10, 11, 40]]
    frame = frame[~frame["ts"].isin(gap[:2])].reset_index(drop=True)
    frame.loc[frame["ts"] == gap[2], "sell"] = np.nan

    queries: list = []
    by_date = slices(frame, full, partial, *unstored, queries=queries)

    assert queries == [(BERLIN.site_id, local(full).start_utc, local(unstored[-1]).end_utc)]

    assert by_date[full].missing == [] and by_date[full].stored_rows == 96
    assert by_date[partial].missing == list(gap) and by_date[partial].stored_rows == 94
    for date in unstored:
        assert_lacks_every_interval(by_date[date], frame)
    # Blank rows are shared by days of one length only.
    assert [len(by_date[date].rows) for date in unstored] == [96, 96, 92, 96]


def test_tou_frame_matches_one_built_from_a_scalar_source():
    day = local(SPRING_FORWARD)
    buy, sell = expand_tariff(BERLIN.tariff, day)
    # In another zone, to the microsecond: the column holds the same instant in UTC.
    registered = dt.datetime(2024, 3, 1, 10, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    reference = pd.DataFrame({
        "ts": day.timestamps(), "buy": buy, "sell": sell, "source": "tou_tariff",
        "demand_charge_per_kw": BERLIN.tariff.demand_charge_per_kw,
        "issued_at": pd.Series(pd.NaT, index=range(day.intervals), dtype="datetime64[us, UTC]"),
        "stored_at": pd.Series(pd.NaT, index=range(day.intervals), dtype="datetime64[us, UTC]"),
        "site_updated_at": pd.Series(pd.Timestamp(registered), index=range(day.intervals), dtype="datetime64[us, UTC]"),
    })
    frame = _tou_frame(BERLIN.tariff, day, registered)
    pd.testing.assert_frame_equal(frame, reference)
    assert site_registration(frame) == registered


def test_rows_between_the_days_intervals_make_the_day_unusable_naming_them():
    """A 5-minute series read on the quarter-hour grid would lose two values in three without a
    word; the day is refused instead, naming the rows."""
    date = dt.date(2024, 3, 27)
    full = price_rows(date)
    five_minutes = local(date).timestamps() + pd.Timedelta(minutes=5)
    stray = pd.DataFrame({"ts": five_minutes[:4], "buy": 0.9, "sell": 0.0, "issued_at": ISSUED_AT})
    frame = pd.concat([full, stray]).sort_values("ts", kind="stable").reset_index(drop=True)

    day_slice = slices(frame, date)[date]

    assert day_slice.missing == []
    assert day_slice.off_grid == list(five_minutes[:4])
    reason = day_slice.unusable_reason("price series", BERLIN.site_id)
    assert reason is not None
    assert f"price series for site {BERLIN.site_id} on {date}" in reason
    assert "4 stored row(s) that start no 15-minute interval" in reason
    assert "2024-03-26T23:05:00Z" in reason
    assert slices(full, date)[date].unusable_reason("price series", BERLIN.site_id) is None
