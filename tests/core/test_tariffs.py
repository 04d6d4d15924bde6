"""ToU tariffs: validation messages, and expansion to per-interval prices across DST."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.tariffs import (
    TouTariff,
    expand_tariff,
    local_clock_minutes,
)

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

KL_STYLE = {
    "currency": "MYR",
    "demand_charge_per_kw": 1.5,
    "default": {"buy": 0.224, "sell": 0.18},
    "periods": [
        {"name": "peak", "start": "08:00", "end": "22:00", "days": ["mon", "tue", "wed", "thu", "fri"],
         "buy": 0.365, "sell": 0.24},
    ],
}

# One price per hour around the DST jump (02:00-03:00 local in Europe), every day of the week.
AROUND_DST = {
    "default": {"buy": 0.0, "sell": 0.0},
    "periods": [
        {"name": "one", "start": "01:00", "end": "02:00", "days": EVERY_DAY, "buy": 1.0, "sell": -1.0},
        {"name": "two", "start": "02:00", "end": "03:00", "days": EVERY_DAY, "buy": 2.0, "sell": -2.0},
        {"name": "three", "start": "03:00", "end": "04:00", "days": EVERY_DAY, "buy": 3.0, "sell": -3.0},
        {"name": "late", "start": "22:00", "end": "24:00", "days": EVERY_DAY, "buy": 4.0, "sell": -4.0},
    ],
}


def tariff(data: dict) -> TouTariff:
    return TouTariff.model_validate(data)


def at(hour: int, minute: int = 0) -> int:
    """Index of a local time on a day without a DST change, at 15-minute resolution."""
    return hour * 4 + minute // 15


def test_weekday_peak_window_on_an_ordinary_day():
    day = local_day(dt.date(2024, 3, 15), "Asia/Kuala_Lumpur", 15)  # a Friday
    buy, sell = expand_tariff(tariff(KL_STYLE), day)
    assert len(buy) == len(sell) == 96
    assert buy[at(7, 45)] == 0.224 and sell[at(7, 45)] == 0.18
    assert buy[at(8)] == 0.365 and sell[at(8)] == 0.24
    assert buy[at(21, 45)] == 0.365
    assert buy[at(22)] == 0.224
    assert np.count_nonzero(buy == 0.365) == 14 * 4
    # The interval at 08:00 local starts at 00:00 UTC in Kuala Lumpur (UTC+8).
    assert day.timestamps()[at(8)] == pd.Timestamp("2024-03-15T00:00Z")


def test_weekday_only_period_is_absent_on_saturday():
    day = local_day(dt.date(2024, 3, 16), "Asia/Kuala_Lumpur", 15)
    buy, sell = expand_tariff(tariff(KL_STYLE), day)
    assert np.all(buy == 0.224) and np.all(sell == 0.18)


def test_spring_forward_day_skips_the_missing_hour():
    day = local_day(dt.date(2024, 3, 31), "Europe/Berlin", 15)
    buy, sell = expand_tariff(tariff(AROUND_DST), day)
    assert len(buy) == 92
    assert list(buy[:4]) == [0.0] * 4  # 00:00-00:45
    assert list(buy[4:8]) == [1.0] * 4  # 01:00-01:45 CET
    assert list(buy[8:12]) == [3.0] * 4  # 03:00-03:45 CEST: 02:xx never happens
    assert np.count_nonzero(buy == 2.0) == 0
    assert list(buy[-8:]) == [4.0] * 8  # 22:00-23:45
    assert list(sell[4:12]) == [-1.0] * 4 + [-3.0] * 4
    assert day.timestamps()[8] == pd.Timestamp("2024-03-31T01:00Z")  # 03:00 CEST


def test_fall_back_day_prices_the_repeated_hour_twice():
    day = local_day(dt.date(2024, 10, 27), "Europe/Berlin", 15)
    buy, sell = expand_tariff(tariff(AROUND_DST), day)
    assert len(buy) == 100
    assert list(buy[4:8]) == [1.0] * 4  # 01:00-01:45 CEST
    assert list(buy[8:16]) == [2.0] * 8  # 02:00-02:45 CEST, then 02:00-02:45 CET
    assert list(buy[16:20]) == [3.0] * 4  # 03:00-03:45 CET
    assert list(buy[-8:]) == [4.0] * 8
    assert list(sell[8:16]) == [-2.0] * 8
    assert day.timestamps()[12] == pd.Timestamp("2024-10-27T01:00Z")  # the second 02:00, CET
    assert list(local_clock_minutes(day)[6:18]) == [90, 105, 120, 135, 150, 165, 120, 135, 150, 165, 180, 195]


def test_a_day_that_starts_at_01_00_prices_by_the_clock():
    # Santiago skips 00:00-00:59 on 2024-09-08: the first interval is 01:00 local.
    day = local_day(dt.date(2024, 9, 8), "America/Santiago", 60)
    assert day.intervals == 23
    assert list(local_clock_minutes(day)[:3]) == [60, 120, 180]
    buy, _ = expand_tariff(tariff(with_period(start="18:00", end="22:00")), day)
    assert [hour for hour, price in zip(range(1, 24), buy, strict=True) if price == 0.5] == [18, 19, 20, 21]


def test_period_may_start_at_midnight_and_end_at_24_00():
    data = {
        "default": {"buy": 0.3, "sell": 0.1},
        "periods": [
            {"name": "night", "start": "00:00", "end": "06:30", "days": EVERY_DAY, "buy": 0.1, "sell": 0.05},
            {"name": "evening", "start": "21:00", "end": "24:00", "days": EVERY_DAY, "buy": 0.2, "sell": 0.05},
        ],
    }
    day = local_day(dt.date(2024, 6, 3), "America/New_York", 30)
    buy, _ = expand_tariff(tariff(data), day)
    assert len(buy) == 48
    assert list(buy[:13]) == [0.1] * 13  # 00:00 .. 06:00 start inside the night period
    assert buy[13] == 0.3  # 06:30
    assert list(buy[42:]) == [0.2] * 6  # 21:00 .. 23:30


def reference_prices(t: TouTariff, day) -> tuple[list[float], list[float]]:
    """Slow and obvious: convert every interval start to local time with pandas and look it up."""
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    buy, sell = [], []
    for ts in day.timestamps().tz_convert(day.timezone):
        minute = ts.hour * 60 + ts.minute
        price = t.default
        for p in t.periods:
            if names[ts.weekday()] in p.days and p.start_minute <= minute < p.end_minute:
                price = p
        buy.append(price.buy)
        sell.append(price.sell)
    return buy, sell


@pytest.mark.parametrize(
    ("timezone", "resolution"),
    [
        ("Europe/Berlin", 15),
        ("Europe/Berlin", 60),
        ("America/New_York", 30),
        ("Australia/Lord_Howe", 15),  # DST moves the clock by 30 minutes
        ("Asia/Kuala_Lumpur", 15),
        # Clocks change at midnight: on spring-forward days the local day starts at 01:00.
        ("America/Santiago", 15),
        ("Africa/Cairo", 15),
        ("America/Havana", 60),
        ("Asia/Beirut", 30),
    ],
)
def test_matches_a_per_interval_reference_on_every_day_of_a_year(timezone, resolution):
    def clock(hours: float) -> str:
        """The interval start at or before `hours` after midnight, as 'HH:MM'."""
        minutes = int(hours * 60) // resolution * resolution
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    t = tariff({
        "default": {"buy": 0.2, "sell": 0.05},
        "periods": [
            {"name": "dst_hour", "start": clock(1.5), "end": clock(2.75), "days": EVERY_DAY, "buy": 0.9, "sell": 0.3},
            {"name": "weekday_day", "start": clock(7.25), "end": "19:00", "days": ["mon", "tue", "wed", "thu", "fri"],
             "buy": 0.4, "sell": 0.1},
            {"name": "weekend_noon", "start": "11:00", "end": "15:00", "days": ["sat", "sun"], "buy": -0.02, "sell": -0.05},
        ],
    })
    lengths = set()
    for offset in range(366):
        day = local_day(dt.date(2024, 1, 1) + dt.timedelta(days=offset), timezone, resolution)
        buy, sell = expand_tariff(t, day)
        expected_buy, expected_sell = reference_prices(t, day)
        assert buy.tolist() == expected_buy, day.date
        assert sell.tolist() == expected_sell, day.date
        lengths.add(day.intervals)
    if timezone == "Europe/Berlin":
        per_hour = 60 // resolution
        assert lengths == {23 * per_hour, 24 * per_hour, 25 * per_hour}


@pytest.mark.parametrize(("start", "end", "resolution", "named"), [
    ("08:10", "09:00", 15, "periods[0].start '08:10'"),
    ("08:00", "09:20", 15, "periods[0].end '09:20'"),
    ("08:15", "09:00", 30, "periods[0].start '08:15'"),
    ("08:30", "09:00", 60, "periods[0].start '08:30'"),
])
def test_a_period_boundary_inside_an_interval_is_refused_not_priced_from_the_next(start, end, resolution, named):
    # Priced by interval start, the interval holding 08:10 would pay the default price for 08:10-08:15.
    t = tariff(with_period(start=start, end=end))
    with pytest.raises(ValueError, match=re.escape(f"tariff {named}: not on the {resolution}-minute interval grid")):
        expand_tariff(t, local_day(dt.date(2024, 6, 3), "Europe/Berlin", resolution))


def with_period(**changes) -> dict:
    period = {"name": "peak", "start": "08:00", "end": "22:00", "days": EVERY_DAY, "buy": 0.5, "sell": 0.2} | changes
    return {"default": {"buy": 0.2, "sell": 0.1}, "periods": [period]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (with_period(start="25:00"), ["periods.0.start", "'25:00'"]),
        (with_period(end="8:00"), ["periods.0.end", "'8:00'"]),
        (with_period(end="08:00\n"), ["periods.0.end", "'08:00\\n'"]),
        (with_period(start="09:00", end="08:00"), ["periods.0", "end '08:00'", "start '09:00'", "crosses midnight"]),
        (with_period(start="09:00", end="09:00"), ["periods.0", "end '09:00'"]),
        (with_period(days=["mon", "funday"]), ["periods.0.days.1", "'funday'"]),
        (with_period(days=[]), ["periods.0.days", "at least one day"]),
        # A weekday peak written without its days must not silently charge weekends too.
        ({"default": {"buy": 0.2, "sell": 0.1}, "periods": [{"name": "peak", "start": "08:00", "end": "22:00",
                                                             "buy": 0.5, "sell": 0.2}]},
         ["periods.0.days", "Field required"]),
        (with_period(days=["mon", "tue", "mon"]), ["periods.0.days", "mon more than once"]),
        (with_period(buy=float("nan")), ["periods.0.buy", "nan"]),
        (with_period(buy="0.5"), ["periods.0.buy", "'0.5'"]),
        (with_period(price=0.5), ["periods.0.price", "Extra inputs are not permitted"]),
        (with_period(start=1320), ["periods.0.start", "the number 1320", "'HH:MM'"]),
        ({"default": {"buy": 0.2, "sell": 0.1}, "demand_charge_per_kw": -1.0}, ["demand_charge_per_kw", "-1.0"]),
        ({"default": {"buy": 0.2, "sell": 0.1}, "currency": "myr"}, ["currency", "'myr'"]),
        ({"default": {"buy": 0.2}}, ["default.sell", "Field required"]),
        ({"periods": []}, ["default", "Field required"]),
    ],
)
def test_bad_tariffs_are_rejected_naming_field_and_value(data, expected):
    with pytest.raises(ValidationError) as caught:
        TouTariff.model_validate(data)
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_overlapping_periods_on_a_shared_day_name_both():
    data = {
        "default": {"buy": 0.2, "sell": 0.1},
        "periods": [
            {"name": "peak", "start": "08:00", "end": "22:00", "days": ["mon", "tue", "wed", "thu", "fri"],
             "buy": 0.5, "sell": 0.2},
            {"name": "weekend", "start": "00:00", "end": "24:00", "days": ["sat", "sun"], "buy": 0.1, "sell": 0.1},
            {"name": "evening", "start": "21:30", "end": "23:00", "days": ["fri", "sat"], "buy": 0.6, "sell": 0.2},
        ],
    }
    with pytest.raises(ValidationError) as caught:
        TouTariff.model_validate(data)
    message = str(caught.value)
    assert "periods[0] 'peak' (08:00-22:00 on mon,tue,wed,thu,fri)" in message
    assert "periods[2] 'evening' (21:30-23:00 on fri,sat)" in message
    assert "on fri" in message


def test_touching_periods_and_disjoint_days_are_fine():
    data = {
        "default": {"buy": 0.2, "sell": 0.1},
        "periods": [
            {"name": "a", "start": "08:00", "end": "12:00", "days": EVERY_DAY, "buy": 0.5, "sell": 0.2},
            {"name": "b", "start": "12:00", "end": "18:00", "days": EVERY_DAY, "buy": 0.6, "sell": 0.2},
            {"name": "weekday_night", "start": "18:00", "end": "24:00", "days": ["mon"], "buy": 0.3, "sell": 0.1},
            {"name": "sunday_night", "start": "18:00", "end": "24:00", "days": ["sun"], "buy": 0.1, "sell": 0.1},
        ],
    }
    t = TouTariff.model_validate(data)
    assert t.currency == "MYR" and t.demand_charge_per_kw == 0.0
    assert t.periods[0].days == tuple(EVERY_DAY)


def test_tariff_is_frozen():
    t = tariff(KL_STYLE)
    with pytest.raises(ValidationError):
        t.demand_charge_per_kw = 2.0
