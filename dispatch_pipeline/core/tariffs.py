"""Time-of-use tariffs: a site's price rules, expanded to the per-interval prices a request carries.

A tariff is written in local clock time ("peak 08:00-22:00 on weekdays") because that is how
utilities publish them. Expansion assigns every interval of the local day the price in force at
its LOCAL START time, so a spring-forward day (92 quarter-hours) simply never sees 02:00-03:00
and a fall-back day (100) prices the repeated 02:00-03:00 hour twice at the same rate.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.request import FiniteFloat, NonNegativeFloat, StorableText

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)  # index = datetime.date.weekday()

_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00")
Price = FiniteFloat  # may be negative
CURRENCY_PATTERN = r"^[A-Z]{3}$"
# The currency of prices when nothing says otherwise (a request carries none; a site may).
DEFAULT_CURRENCY = "MYR"
_MINUTE = dt.timedelta(minutes=1)


def clock_to_minutes(text: str) -> int:
    """'HH:MM' (or '24:00') to minutes after local midnight."""
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prices(_Frozen):
    buy: Price = Field(description="Import price, currency/kWh.")
    sell: Price = Field(description="Export price, currency/kWh.")


class TouPeriod(_Frozen):
    name: StorableText = Field(min_length=1)
    start: str = Field(description="Local clock time 'HH:MM' the period starts (inclusive).")
    end: str = Field(description="Local clock time 'HH:MM' it ends (exclusive); may be '24:00'.")
    # No default: a weekday peak written without its days would silently charge weekends too.
    days: tuple[Weekday, ...] = Field(
        description="The local weekdays it applies on, e.g. [mon, tue, wed, thu, fri]; every day "
        "is [mon, tue, wed, thu, fri, sat, sun]."
    )
    buy: Price
    sell: Price

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            # Minutes after midnight, perhaps, or hours: either way a guess.
            raise ValueError(f"must be a local clock time 'HH:MM' written as text (got the number {value})")
        if not isinstance(value, str) or not _CLOCK.fullmatch(value):
            raise ValueError(f"must be a local clock time 'HH:MM' from 00:00 to 24:00 (got {value!r})")
        return value

    @field_validator("days")
    @classmethod
    def _distinct_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one day (got [])")
        repeated = sorted({d for d in value if value.count(d) > 1}, key=WEEKDAYS.index)
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _ends_after_start(self) -> TouPeriod:
        if self.end_minute <= self.start_minute:
            raise ValueError(
                f"period {self.name!r}: end {self.end!r} must be after start {self.start!r} "
                "(split a period that crosses midnight into two)"
            )
        return self

    @property
    def start_minute(self) -> int:
        return clock_to_minutes(self.start)

    @property
    def end_minute(self) -> int:
        return clock_to_minutes(self.end)

    def describe(self) -> str:
        return f"{self.name!r} ({self.start}-{self.end} on {describe_days(self.days)})"


class TouTariff(_Frozen):
    """Prices by local clock time and weekday; any time no period covers pays `default`."""

    currency: str = Field(DEFAULT_CURRENCY, pattern=CURRENCY_PATTERN)
    demand_charge_per_kw: NonNegativeFloat = 0.0
    default: Prices
    periods: tuple[TouPeriod, ...] = ()

    @model_validator(mode="after")
    def _no_overlaps(self) -> TouTariff:
        for i, first in enumerate(self.periods):
            for j in range(i + 1, len(self.periods)):
                second = self.periods[j]
                shared = [d for d in WEEKDAYS if d in first.days and d in second.days]
                if shared and first.start_minute < second.end_minute and second.start_minute < first.end_minute:
                    raise ValueError(
                        f"periods[{i}] {first.describe()} overlaps periods[{j}] "
                        f"{second.describe()} on {describe_days(shared)}"
                    )
        return self


def describe_days(days: tuple[str, ...] | list[str]) -> str:
    ordered = [d for d in WEEKDAYS if d in days]
    return "every day" if len(ordered) == len(WEEKDAYS) else ",".join(ordered)


def local_clock_minutes(day: LocalDay) -> np.ndarray:
    """Minutes after local midnight, on the local wall clock, of every interval start.

    Wall time = the day's first clock time + elapsed time + (UTC offset now - UTC offset at the
    start). The first clock time is 00:00 but where the clocks spring forward at midnight
    (Santiago, Cairo, Havana, Beirut): there the day starts at 01:00. The offset is constant on
    all but the two DST days a year, so only those pay for a per-interval zone lookup.
    """
    zone = ZoneInfo(day.timezone)
    step = dt.timedelta(minutes=day.resolution_minutes)
    first = day.start_utc.astimezone(zone)
    clock = first.hour * 60 + first.minute + np.arange(day.intervals) * day.resolution_minutes
    first_offset = first.utcoffset()
    last_offset = (day.end_utc - step).astimezone(zone).utcoffset()
    if first_offset == last_offset:
        return clock
    shift = [
        ((day.start_utc + k * step).astimezone(zone).utcoffset() - first_offset) // _MINUTE
        for k in range(day.intervals)
    ]
    return clock + np.array(shift, dtype=int)


def off_grid_times(tariff: TouTariff, resolution_minutes: int) -> list[str]:
    """Where a period starts or ends inside an interval of `resolution_minutes`, as
    "periods[i].start '08:10'": there the interval would be priced wholly at one side's price."""
    return [
        f"periods[{i}].{edge} {clock!r}"
        for i, period in enumerate(tariff.periods)
        for edge, clock in (("start", period.start), ("end", period.end))
        if clock_to_minutes(clock) % resolution_minutes
    ]


def expand_tariff(tariff: TouTariff, day: LocalDay) -> tuple[np.ndarray, np.ndarray]:
    """Buy and sell price of every interval of `day`, by the interval's local start time."""
    off_grid = off_grid_times(tariff, day.resolution_minutes)
    if off_grid:
        raise ValueError(
            f"tariff {', '.join(off_grid)}: not on the {day.resolution_minutes}-minute interval grid, "
            "so part of an interval would pay another period's price"
        )
    minutes = local_clock_minutes(day)
    buy = np.full(day.intervals, tariff.default.buy)
    sell = np.full(day.intervals, tariff.default.sell)
    weekday = WEEKDAYS[day.date.weekday()]  # every interval of a local day shares its weekday
    for period in tariff.periods:
        if weekday in period.days:
            within = (minutes >= period.start_minute) & (minutes < period.end_minute)
            buy[within] = period.buy
            sell[within] = period.sell
    return buy, sell
