from __future__ import annotations

import datetime as dt

import pytest

from dispatch_pipeline.core.calendar import FIRST_DATE, LAST_DATE, local_day, next_local_date


@pytest.mark.parametrize(
    ("date", "timezone", "resolution", "intervals", "first_ts"),
    [
        (dt.date(2024, 3, 15), "Asia/Kuala_Lumpur", 15, 96, "2024-03-14T16:00:00Z"),
        (dt.date(2024, 3, 31), "Europe/Berlin", 15, 92, "2024-03-30T23:00:00Z"),
        (dt.date(2024, 10, 27), "Europe/Berlin", 15, 100, "2024-10-26T22:00:00Z"),
        (dt.date(2024, 11, 3), "America/New_York", 60, 25, "2024-11-03T04:00:00Z"),
        (dt.date(2024, 3, 10), "America/New_York", 5, 276, "2024-03-10T05:00:00Z"),
        (dt.date(2024, 6, 1), "UTC", 30, 48, "2024-06-01T00:00:00Z"),
    ],
)
def test_local_day_intervals_in_utc(date, timezone, resolution, intervals, first_ts) -> None:
    day = local_day(date, timezone, resolution)
    assert day.intervals == intervals
    stamps = day.iso_timestamps()
    assert len(stamps) == intervals
    assert stamps[0] == first_ts
    assert all(s.endswith("Z") for s in stamps)


def test_next_day_is_the_sites_tomorrow() -> None:
    # 23:30 UTC on 1 March is already 2 March in Kuala Lumpur (UTC+8): tomorrow there is 3 March.
    now = dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.UTC)
    assert next_local_date("Asia/Kuala_Lumpur", now) == dt.date(2024, 3, 3)
    assert next_local_date("America/Los_Angeles", now) == dt.date(2024, 3, 2)


@pytest.mark.parametrize(
    ("date", "timezone"),
    [(FIRST_DATE, "Pacific/Kiritimati"), (LAST_DATE, "Pacific/Pago_Pago"), (LAST_DATE, "Etc/GMT+12")],
)
def test_supported_range_ends_hold_whole_days_in_any_zone(date, timezone) -> None:
    # UTC+14 and UTC-12 push the day furthest past its date; pandas must still hold every stamp.
    day = local_day(date, timezone, 15)
    assert len(day.timestamps()) == day.intervals == 96


@pytest.mark.parametrize(
    "date", [FIRST_DATE - dt.timedelta(days=1), LAST_DATE + dt.timedelta(days=1), dt.date.max, dt.date.min]
)
def test_dates_outside_the_supported_range_are_refused_by_name(date) -> None:
    with pytest.raises(ValueError, match=f"^date: {date} is outside the supported range"):
        local_day(date, "UTC", 15)
