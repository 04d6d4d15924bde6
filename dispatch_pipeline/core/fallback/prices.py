"""The day's prices as the rules read them: its expensive and cheap hours (top and bottom quartile
of the buy price), and the cheapest price bands that can store an energy."""

from __future__ import annotations

import math

import numpy as np

from dispatch_pipeline.core.fallback.tolerance import EPS


def price_quartiles(buy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expensive, cheap) masks: top and bottom quartile of the day's buy price.

    Tariffs come in bands, and a band often straddles the 75th percentile. It counts as expensive
    only when that brings the expensive hours closer to a quarter of the day than leaving it out: with
    off-peak, shoulder and peak prices (0.20 / 0.35 / 0.55) the peak alone is the top quartile,
    not the shoulder that fills the rest of it; a peak covering a third of the day stays one
    when a short event above it is dearer still. The cheap end keeps every price at or below the
    25th percentile (rule 3's middle hours are priced against its cheapest hour that pays to
    store; rule 5 picks the price bands it needs, `charging_hours`). When
    one price fills a quartile (20 off-peak hours and 4 peak ones, say), the peak is what lies
    above it. A flat tariff has neither: there is nothing to shift energy between.
    """
    ordered = np.sort(buy)
    lowest, highest = float(ordered[0]), float(ordered[-1])
    if highest - lowest <= EPS:
        none = np.zeros(len(buy), dtype=bool)
        return none, none
    high, low = _quantile(ordered, 0.75), _quantile(ordered, 0.25)
    expensive = buy >= high - EPS if high > lowest + EPS else buy > lowest + EPS
    above = buy > high + EPS
    quarter = len(buy) / 4
    if above.any() and abs(int(above.sum()) - quarter) <= abs(int(expensive.sum()) - quarter):
        expensive = above
    cheap = buy <= low + EPS if low < highest - EPS else buy < highest - EPS
    return expensive, cheap


def _quantile(ordered: np.ndarray, q: float) -> float:
    """np.quantile(values, q), given the values in ascending order: its default (linear) method, the
    same arithmetic (numpy's _lerp) without the generic machinery, which costs more than the rest
    of price_quartiles."""
    index = (len(ordered) - 1) * q
    below = math.floor(index)
    if below >= len(ordered) - 1:
        return float(ordered[-1])
    gamma = index - below
    low, high = float(ordered[below]), float(ordered[below + 1])
    step = high - low
    return low + step * gamma if gamma < 0.5 else high - step * (1 - gamma)


def charging_hours(
    buy: np.ndarray, eligible: np.ndarray, stored_kwh: np.ndarray, need_kwh: float, by_price: np.ndarray | None = None
) -> np.ndarray:
    """Of the `eligible` intervals, those in the cheapest price bands that together can store
    `need_kwh` (`stored_kwh` per interval). A 5-hour super-off-peak that fills the battery leaves
    the off-peak around it out (charging there first would leave no room for the cheaper hours);
    a 1-hour one that cannot keeps it in. All of them when even they cannot store enough.
    `by_price`: `hours_by_price(buy, eligible)`, where the caller keeps it."""
    if by_price is None:
        by_price = hours_by_price(buy, eligible)
    if len(by_price) == 0:
        return eligible
    enough = int(np.searchsorted(np.cumsum(stored_kwh[by_price]), need_kwh - EPS))
    threshold = buy[by_price[min(enough, len(by_price) - 1)]]
    return eligible & (buy <= threshold + EPS)


def hours_by_price(buy: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The `eligible` intervals, cheapest first (in time order within a price)."""
    hours = np.flatnonzero(eligible)
    return hours[np.argsort(buy[hours], kind="stable")]

