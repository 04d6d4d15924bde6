"""Rule 3's threshold on a day with a demand charge: the lowest the battery's energy balance allows,
the lowest the plan holds, and the cheapest by the objective of a few above it."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback.day import Day
from dispatch_pipeline.core.fallback.forward_pass import forward_pass
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

# Rule 3's search for the cheapest threshold: passes above the lowest one the plan holds.
_SEARCH_PASSES = 3


def planned_schedule(problem: DispatchProblem) -> Schedule:
    """Rules 1 to 9."""
    day = Day(problem)
    if problem.demand_charge_per_kw <= 0 or problem.weights.cost <= 0:
        return forward_pass(day, None)
    # Rule 3's threshold: from the lowest import the battery can hold every interval under (never
    # below what its discharge rating leaves of the day's highest deficit) to the peak the site
    # would draw without a battery.
    highest = float(day.deficit_kw.max(initial=0.0))
    lowest = max(highest - problem.bess.max_discharge_kw, 0.0)
    tolerance = 1e-5 * max(1.0, highest)

    def held(threshold: float) -> Schedule | None:
        schedule = forward_pass(day, threshold)
        return schedule if schedule.grid_import.max(initial=0.0) <= threshold + tolerance / 10 else None

    start = _lowest_threshold(day, lowest, highest, tolerance)
    at_start = None if start is None else held(start)
    if at_start is None:
        # The pass holds less than the battery's energy balance allows (rule 1 recharging a battery
        # that starts below soc_min over the threshold, say): bisect on the pass itself.
        at_start = held(highest)
        if at_start is None:
            return forward_pass(day, None)
        low, start = (lowest if start is None else start), highest
        while start - low > tolerance:
            middle = (low + start) / 2
            schedule = held(middle)
            if schedule is None:
                low = middle
            else:
                start, at_start = middle, schedule
    return _cheapest_threshold(problem, day, start, highest, at_start)


def _cheapest_threshold(
    problem: DispatchProblem, day: Day, lowest: float, highest: float, at_lowest: Schedule
) -> Schedule:
    """The cheapest (by the objective) of the schedules at the lowest threshold the plan holds and
    at a few between it and the no-battery peak: each kW held lower saves the demand charge, and
    costs the discharges of every interval above it, their losses and wear, and what the expensive
    hours no longer get. A short golden-section search over u in [0, 1], the threshold at
    lowest + (highest - lowest) * u**1.5: closer to the lowest, where the cheapest mostly is; and
    the no-battery peak itself, as the cost need not fall and rise only once in between."""
    found = [(objective_value(problem, at_lowest), 0.0, at_lowest)]
    span = highest - lowest
    if span <= 0:
        return at_lowest

    def cost(u: float) -> float:
        schedule = forward_pass(day, lowest + span * u**1.5)
        found.append((objective_value(problem, schedule), u, schedule))
        return found[-1][0]

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = 0.0, 1.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    at_c, at_d = cost(c), cost(d)
    for _ in range(_SEARCH_PASSES - 2):
        if at_c < at_d:
            b, d, at_d = d, c, at_c
            c = b - ratio * (b - a)
            at_c = cost(c)
        else:
            a, c, at_c = c, d, at_d
            d = a + ratio * (b - a)
            at_d = cost(d)
    cost(1.0)
    cheapest = min(found, key=lambda entry: entry[:2])  # the lower threshold of equal costs
    return cheapest[2]


def _lowest_threshold(day: Day, low: float, high: float, tolerance: float) -> float | None:
    """The lowest threshold in [low, high] at which the battery, charging under it wherever
    the import leaves room and discharging what the import would exceed it by, ends the day on
    target without having to start fuller than it is or to leave [soc_min, soc_max] on the way
    (rule 4's draws included): the energy balance rule 3's threshold starts from, to within
    `tolerance` above the exact one. None if not even `high` balances (a battery that starts
    below soc_min, say)."""
    p = day.problem
    bess = p.bess
    e_min, e_final, start = p.energy_min_kwh, p.energy_final_kwh, p.energy_initial_kwh
    e_max = max(p.energy_max_kwh, e_final)
    # Last interval first, as `short` works backwards.
    deficit, surplus, forced = day.deficit_kw[::-1].copy(), day.surplus_kw[::-1].copy(), day.forced[::-1]
    import_cap = day.import_cap
    drawn, stored = p.dt / bess.discharge_efficiency, bess.charge_efficiency * p.dt
    max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
    has_forced = bool(forced.any())

    def short(threshold: float) -> float:
        # How far the battery would have to go above its band somewhere (kWh), or start above
        # where it is, worked backwards as level_needed does, without the clamp at the top;
        # less a hair, so that the threshold found is held.
        # (In place, out=: the same arithmetic as `np.minimum(np.maximum(deficit - threshold,
        # 0.0), max_dis) * drawn` and the like, with fewer arrays made for a root that takes a dozen.)
        loss = np.subtract(deficit, threshold)
        np.minimum(np.maximum(loss, 0.0, out=loss), max_dis, out=loss)
        loss *= drawn
        if has_forced:
            np.maximum(forced, loss, out=loss)
        gain = np.subtract(min(import_cap, threshold), deficit)
        np.maximum(gain, 0.0, out=gain)
        gain += surplus
        np.minimum(gain, max_ch, out=gain)
        gain *= stored
        after = np.subtract(loss, gain, out=loss).cumsum()  # what the intervals from t on take out, last t first
        needed = np.minimum.accumulate(after)
        np.maximum(e_final, np.subtract(e_min, needed, out=needed), out=needed)
        needed += after
        return max(float(needed[-1]) - start, float(needed[:-1].max(initial=-np.inf)) - e_max) - 1e-9

    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        at_high = short(high)
        if not at_high <= 0:
            return None
        at_low = short(low)
        if at_low <= 0:
            return low
        return _first_held(short, low, high, tolerance / 4, at_low, at_high)


def _first_held(
    short: Callable[[float], float], low: float, high: float, xtol: float, at_low: float, at_high: float
) -> float:
    """A threshold within `xtol` above a root of `short` in [low, high], at which it is <= 0, given
    at_low = short(low) > 0 >= short(high) = at_high. The Illinois variant of regula falsi: `short`
    is piecewise linear, where it finds the root in a few steps, and it keeps the bracket, halving
    the weight of an end that stays put so that a kink slows it to no worse than bisection's pace.
    Written here rather than taken from scipy.optimize, whose import would cost every process that
    plans a day a third of a second and about 50 MB."""
    side = 0
    for _ in range(200):
        if high - low <= xtol:
            break
        middle = (low * at_high - high * at_low) / (at_high - at_low)
        if not low < middle < high:  # rounding at the ends of a narrow bracket
            middle = (low + high) / 2
        at_middle = short(middle)
        if at_middle > 0:
            low, at_low = middle, at_middle
            if side == -1:
                at_high /= 2
            side = -1
        else:
            high, at_high = middle, at_middle
            if side == 1:
                at_low /= 2
            side = 1
    return high

