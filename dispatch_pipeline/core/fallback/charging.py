"""Rule 5's charging: the hours it adds before an expensive hour its cheapest bands come too late
for, and the level it charges to in each of its hours."""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.fallback.day import Day
from dispatch_pipeline.core.fallback.levels import level_needed
from dispatch_pipeline.core.fallback.prices import charging_hours
from dispatch_pipeline.core.fallback.tolerance import EPS

# Rule 5's charging before expensive hours its cheapest bands come too late for: the expensive
# hours it adds hours for (a morning peak, an evening one, and one more).
_IN_TIME_PASSES = 3


def charging_in_time(day: Day, charging: np.ndarray, peak_safe: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Rule 5's hours, and where what they can store before an expensive hour (with what the
    battery holds above soc_min at the start) falls short of what the expensive hours up to it
    draw, the cheapest hours before it where storing pays against it that make up the shortfall:
    the day's cheapest bands may all come after a morning peak."""
    problem = day.problem
    buy = problem.buy
    held = max(problem.energy_initial_kwh - problem.energy_min_kwh, 0.0)
    drawn = np.cumsum(need)
    for _ in range(_IN_TIME_PASSES):
        stored = np.where(charging, peak_safe, 0.0)
        stored_before = np.cumsum(stored) - stored
        short = (need > 0) & (drawn - held - stored_before > EPS)
        if not short.any():
            break
        t = int(np.argmax(short))
        before = day.storing & ~charging & (day.hours < t) & day.pays_against(buy, buy[t])
        if not before.any():
            break
        charging = charging | charging_hours(buy, before, peak_safe, float(drawn[t] - held - stored_before[t]))
    return charging


def charging_levels(
    day: Day,
    charging_up: np.ndarray,
    peak_safe: np.ndarray,
    need: np.ndarray,
    final: float,
    need_after: np.ndarray,
    planned: np.ndarray,
) -> np.ndarray:
    """Rule 5's level in each of its hours (`charging_up`): `final` plus what the later intervals
    draw (`need_after`), or where lower, the level the target (`final`) and the later draws (`need`,
    rule 9's discharges for room and, in the hours that refill for them, the middle hours') need
    when the later hours cheaper to store in put energy back before they draw: rule 5's own cheaper
    hours (as the peak guard allows, `peak_safe`), the cheaper hours outside rule 3's expensive and
    middle hours where storing pays against no later expensive hour (rule 6 buys the end-of-day
    target back there, likewise), and PV surplus whose export price is lower (or where exporting it
    costs more than curtailing). Of an hour that storing at the price does not pay against, the
    later draws count only the threshold's and rule 4's (`planned`)."""
    problem = day.problem
    buy = problem.buy
    level = final + need_after
    hours = np.flatnonzero(charging_up)
    if len(hours) == 0:
        return level
    surplus_value = day.surplus_value
    # The draws: in each interval the largest of the expensive hours' (or the threshold's), rule 9's
    # and, in the hours that refill for them, the middle hours'.
    draws = np.maximum(need, day.middle_reserve)
    draws_with_middle = np.maximum(draws, day.middle_need)
    # The later hours that put energy back at the grid's price: rule 5's, and those that store for
    # no expensive hour (where rule 6 buys the target back), outside rule 3's.
    refilling = charging_up | ~(day.expensive | day.middle | day.pays_to_store)
    for price in sorted(set(buy[hours].tolist())):
        at_price = charging_up & (buy == price)
        first = int(np.argmax(at_price))
        gain = np.where(refilling & (buy < price), peak_safe, np.where(surplus_value < price, day.surplus_gain, 0.0))
        if not gain[first + 1:].any():
            continue
        loss = draws_with_middle if day.refills_middle[first] else draws
        # An hour that storing at this price does not pay against draws only what the threshold
        # and rule 4 take there: it is not charged for (rule 9's draws there included).
        loss = np.where(~day.pays_against(price, buy), planned, loss)
        at = level_needed(gain, loss, final, problem.energy_min_kwh, problem.energy_max_kwh, first)
        level[at_price] = np.minimum(level, at)[at_price]
    return level

