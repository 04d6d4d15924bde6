"""The rule-based schedule: what a site runs when the MILP cannot answer in time.

One forward pass over the day, a handful of rules an operator would write down:

1. A battery below soc_min is recharged as fast as its rating allows: every interval spent
   below the band counts as violation again, more than importing over the cap for it would.
2. PV surplus goes into the battery up to soc_max, less the room rule 9 keeps for what pays to
   store later (surplus that a full battery would spill at a loss now is stored whatever that
   room). Surplus the grid takes at a non-negative price within the export cap goes in only up to
   what the later intervals will draw: the end-of-day target (at least soc_min) where some later
   hour buys dearer than that export price (with a demand charge, always), rule 4's draws and
   rule 3's to its threshold, and the draws of rule 3's expensive and middle hours (their whole
   deficit, up to the discharge rating) up to the last of them where storing pays: where the
   export price it forgoes, after round-trip losses, and the wear the objective bills per kWh
   delivered cost less than that hour's buy price. Where a later hour of rule 9's that makes room
   pays so, it goes in up to soc_max (rule 9 draws what lies above the room). The rest is exported
   up to the cap while exporting costs less than curtailing; only what neither can take is
   curtailed.
3. In the day's expensive hours (top quartile of the buy price) the battery covers the deficit
   when the import it replaces costs more than the battery's wear (cycle_cost_per_kwh), down to a
   floor that keeps the end-of-day target reachable by later recharging, net of what rule 4 will
   draw from it later. Energy the target needs back goes only where putting it back pays after
   round-trip losses and wear (rule 5's test): the floor counts only the later recharging, PV
   surplus at the export price it forgoes or the grid at its buy price, that is cheap enough; what
   the battery holds above the target costs only the wear. The floor also keeps what the dearer
   expensive hours after it will draw (their whole deficit, up to the discharge rating; where rule 4
   or the threshold below draws more, that), refilled only by the same later recharging: on a day of
   many prices (a spot tariff) the dearest expensive hours are covered first, not the earliest.
   With a demand charge billed on the day's peak import, the battery first holds the import of
   every interval, expensive or not, at a threshold, whatever the price and the wear: it discharges
   what the import would exceed it by, down to the level the end-of-day target needs when every
   later interval recharges under the threshold (net of rule 4's later draws), and it is recharged
   for it only where the import stays under the threshold (rules 5 and 6). The threshold lies
   between the lowest one the battery can hold and the peak the site would draw without it. The
   lowest is where the battery, charging under the threshold wherever the import leaves room and
   discharging above it, would otherwise have to leave its SOC band or start the day fuller than it
   is to end on target (the ratings, the efficiencies and rule 4's draws count; it is never below
   the day's highest deficit less the discharge rating). Each kW held lower saves the demand charge
   and costs the discharges of every interval above it, their losses and wear, and the energy the
   expensive hours would otherwise have had: the threshold is the cheapest, by the objective, of
   the lowest and a few above it (a short golden-section search between the lowest and the
   no-battery peak, closer to the lowest, and the no-battery peak itself). Beyond the threshold the battery covers more of an expensive hour's deficit, where
   that beats the wear, only with what the later intervals' threshold and rule 4 will not need
   (and, as without a demand charge, what its floor keeps for the dearer expensive hours).
   Should the plan hold less than that energy balance allows (rule 1 recharging a battery that
   starts below soc_min over the threshold, say), the lowest is the one the plan holds, found by
   bisection; should it not even hold the no-battery peak, the battery covers the expensive hours'
   deficit chronologically, whatever the wear and the recharge.
   It also discharges in the day's middle hours, with a demand charge too (the energy they draw is
   bought back under the threshold): of the other hours with a deficit, those whose price beats a
   kWh stored in the cheapest of the cheap hours (bottom quartile) where storing pays against a
   later expensive hour (rule 5's test) after round-trip losses and wear, the dearest that
   together draw what the SOC band holds and the day's PV surplus can put back where storing it
   pays against the cheapest of them (a full battery exporting at 0.05 refills for 0.35). There
   it covers the deficit with what it holds above its middle floor (and rule 3's floor): the level
   that the later expensive hours' draws (their whole deficit, up to the discharge rating), the
   later dearer middle hours' (likewise: in time order the cheaper would spend it first), rule 9's
   later discharges' in hours no cheaper (likewise) and, with a demand charge, the later
   discharges to the threshold in the other hours (rule 9's on top of them), or rule 4's where
   larger, and the end-of-day target need, counting only the later recharging in rule 5's hours
   where storing pays against the cheapest of the middle hours (with a demand charge, under the
   threshold), and the PV surplus whose export price does so. In an hour where rule 5 charges,
   only when its next charging hour is cheaper: what it delivered would otherwise be bought back
   at the same price or dearer, less the losses.
4. The battery also discharges to hold imports under the import cap, down to the level the
   end-of-day target still needs: energy it cannot recharge later would only move the violation
   to the end of the day, larger by the discharge losses.
5. In cheap hours it charges from the grid when that pays after round-trip losses against a later
   expensive hour. Its hours are those outside the expensive ones where that pays, of their price
   bands the cheapest that can store (as the peak guard allows) what the expensive hours, rule 3's
   middle hours and, with a demand charge, rule 3's discharges to its threshold in the other hours
   need, up to the SOC band: the bottom quartile where it can store that, dearer hours that still
   pay where it cannot (the peak guard leaving its hours too little room, say). Where those hours
   all come too late for an expensive hour (a morning peak before a cheap midday), what they and
   the battery's charge above soc_min at the start cannot store before it, the cheapest hours
   before it where storing pays against it store. It charges there
   up to the energy the expensive hours after it will need, and with a demand charge what rule
   3's discharges to its threshold will draw in the other hours after it too, but not into the
   room rule 9 keeps; with a demand charge, never above rule 3's threshold (without one, the peak
   the site would draw without a battery). Those of its hours where storing pays against the
   cheapest of the middle hours charge for what the middle hours after them will draw too. Where
   its later, cheaper hours (as the peak guard allows; besides its own, those outside rule 3's
   expensive and middle hours where storing pays against no later expensive hour, where rule 6
   buys the end-of-day target back) or PV surplus exported at a lower price (or where exporting
   costs more than curtailing) can store some of that in time, it charges only to the level that
   those draws and rule 9's later discharges to make room (in each interval the larger) and the
   end-of-day target (at least soc_min) need with that later charging, when that is lower: a
   dearer cheap hour does not fill the battery before a cheaper one. Those draws count, of an
   hour where storing at the charging hour's price does not pay (rule 5's test), expensive or
   one where rule 9 makes room, only what rule 3's threshold and rule 4 draw there: the rest
   would cost more stored than bought.
6. It charges for the terminal SOC target in the cheapest hours that can still store it: in each
   interval, what the later intervals no dearer to buy in (and PV surplus, whatever the price)
   could not store in time, counting the discharges rule 4 and rule 3's threshold will still make:
   under that threshold when a peak is billed and time allows, up to the import cap when it must.
   On a flat tariff that is just in time.
7. A battery above soc_max (it started the day there) discharges into the site's load, and into
   the export room PV leaves while exporting costs less than staying above, until it is back
   within its band.
8. While the site is paid to import (a negative buy price), the battery charges from the grid
   as fast as rule 5's limits allow, in the most negative of those hours that can fill it: every
   kWh it draws then earns money, whether or not a later hour uses it. It leaves room for the PV
   surplus of the hours after it, which rule 2 stores first, so as not to spill it at a price.
   Not on a day with a demand charge: charging up to the peak guard would set the billed peak
   that rule 3's discharges are there to lower.
9. Storing pays by itself where a full battery would spill PV surplus at a loss (export it at a
   negative price, or curtail it: beyond the export cap, or where exporting costs more than
   curtailing) and in rule 8's hours: the battery makes room for it beforehand. The room it needs
   at the end of each interval is worked backwards from the end of the day: each such interval
   needs what it can store (the surplus spilt at a loss, up to the charge rating; in rule 8's
   hours what the import cap leaves the rating), an expensive hour makes room of its own by what
   rule 3 would draw there, and no more room is needed than the SOC band holds. The battery
   discharges into the deficit of the dearest hours before such intervals that together can make
   the most room they need, and of the expensive hours among them, where what it delivers
   replaces import dearer than storing it back later costs after round-trip losses and wear
   (rule 5's test, against the priciest of the later intervals that refill it): down to the
   level that leaves that room, counting the room the later of those hours will still make, and
   never below rule 3's floor. What it stores back then serves the later hours and the end-of-day
   target as the energy it delivered would have.
10. The plan is never dearer, by the objective, than leaving the battery idle all day (PV serving
   the load, the rest exported while that costs less than curtailing, within the export cap): on
   a day where the rules' interplay would cost more, the battery idles.

By construction it never charges and discharges, or imports and exports, in the same interval,
and it never leaves [0, capacity] or exceeds a rating or the hard export cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

_EPS = 1e-9
# Rule 3's search for the cheapest threshold: passes above the lowest one the plan holds.
_SEARCH_PASSES = 3
# Rule 5's charging before expensive hours its cheapest bands come too late for: the expensive
# hours it adds hours for (a morning peak, an evening one, and one more).
_IN_TIME_PASSES = 3
# _levels_needed works up to this many rows out one by one, more at once (where that is faster).
_ROWS_ONE_BY_ONE = 4


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
    if highest - lowest <= _EPS:
        none = np.zeros(len(buy), dtype=bool)
        return none, none
    high, low = _quantile(ordered, 0.75), _quantile(ordered, 0.25)
    expensive = buy >= high - _EPS if high > lowest + _EPS else buy > lowest + _EPS
    above = buy > high + _EPS
    quarter = len(buy) / 4
    if above.any() and abs(int(above.sum()) - quarter) <= abs(int(expensive.sum()) - quarter):
        expensive = above
    cheap = buy <= low + _EPS if low < highest - _EPS else buy < highest - _EPS
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
    enough = int(np.searchsorted(np.cumsum(stored_kwh[by_price]), need_kwh - _EPS))
    threshold = buy[by_price[min(enough, len(by_price) - 1)]]
    return eligible & (buy <= threshold + _EPS)


def hours_by_price(buy: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The `eligible` intervals, cheapest first (in time order within a price)."""
    hours = np.flatnonzero(eligible)
    return hours[np.argsort(buy[hours], kind="stable")]


def _sum_after(values: np.ndarray) -> np.ndarray:
    """For each t, the sum of values strictly after t."""
    return np.concatenate((values[:0:-1].cumsum()[::-1], (0.0,)))


def _levels_needed(
    gains: np.ndarray, loss: np.ndarray, final: float, lowest: float, highest: float, since: np.ndarray
) -> np.ndarray:
    """_level_needed for each row of `gains`, from since[k] on in row k (NaN or exact before).

    Without losses, at once; with a few rows, one by one (each a few tens of microseconds);
    with more, without a Python loop over the intervals: each interval u, worked backwards, maps
    the level after it to the one before it by x -> min(top, max(lowest, x + taken[u])). Such
    maps compose into one of the same form (a shift, and a floor and a ceiling), so the level at
    every t, the maps of the intervals after it applied to `final`, is a prefix scan: log2(T)
    steps over the whole array."""
    rows, T = gains.shape
    if not np.count_nonzero(loss):  # _level_needed's own shortcut, row by row
        needed = np.empty((rows, T))
        needed[:, :-1] = np.maximum(lowest, final - gains[:, :0:-1].cumsum(axis=1)[:, ::-1])
        needed[:, -1] = final
        return needed
    if rows <= _ROWS_ONE_BY_ONE:
        return np.array(
            [_level_needed(gain, loss, final, lowest, highest, int(first)) for gain, first in zip(gains, since, strict=True)]
        )
    top = max(highest, final)
    # Backwards: position j holds the interval T - 1 - j, and after the scan the composition of
    # the maps of intervals T - 1 down to T - 1 - j.
    shift = (loss[None, :] - gains)[:, ::-1].copy()
    floor = np.full((rows, T), float(lowest))
    ceiling = np.full((rows, T), float(top))
    step = 1
    while step < T:
        # Applying the earlier composition first: (s1, f1, c1) then (s2, f2, c2) is
        # (s1 + s2, clip(f1 + s2, f2, c2), clip(c1 + s2, f2, c2)).
        s2, f2, c2 = shift[:, step:], floor[:, step:], ceiling[:, step:]
        new_floor = np.minimum(np.maximum(floor[:, :-step] + s2, f2), c2)
        new_ceiling = np.minimum(np.maximum(ceiling[:, :-step] + s2, f2), c2)
        shift[:, step:] = shift[:, :-step] + s2
        floor[:, step:], ceiling[:, step:] = new_floor, new_ceiling
        step *= 2
    needed = np.empty((rows, T))
    needed[:, -1] = final
    # The level at the end of t: the maps of intervals T - 1 down to t + 1, position T - 2 - t.
    composed = slice(T - 2, None, -1)
    needed[:, :-1] = np.minimum(np.maximum(final + shift[:, composed], floor[:, composed]), ceiling[:, composed])
    return needed


def _level_needed(
    gain: np.ndarray, loss: np.ndarray, final: float, lowest: float, highest: float, since: int = 0
) -> np.ndarray:
    """For each t, the energy the battery needs at the end of t to end the day at `final`, when
    each later interval u can add at most gain[u] and will take loss[u] out (from t = `since` on:
    the loop below stops there, and leaves the earlier ones NaN).

    Worked backwards from the end of the day: an interval that takes energy out raises the level
    needed before it, one that can add energy lowers it, but never below `lowest` (the battery
    cannot give what it holds below it) nor above `highest` or `final`, whichever is higher (it
    cannot hold more: as full as it can be is the best it can do). A loss and a gain never fall in
    the same interval. Without losses this is `final` less what the later intervals can add.
    """
    if not np.count_nonzero(loss):  # most days: the same, without a Python loop
        needed = np.maximum(lowest, final - _sum_after(gain))
        needed[-1] = final
        return needed
    # On plain floats, backwards: the same arithmetic as numpy's, a few times faster (it runs
    # several times a pass). min(highest, max(lowest, x)), spelt out.
    needed = []
    level, highest = final, max(highest, final)
    for taken, added in zip(loss[since:][::-1].tolist(), gain[since:][::-1].tolist(), strict=True):
        needed.append(level)
        level = level + taken - added
        level = level if level > lowest else lowest
        level = level if level < highest else highest
    needed += [math.nan] * since
    needed.reverse()
    return np.fromiter(needed, float, len(needed))


def rule_based_schedule(problem: DispatchProblem) -> Schedule:
    """The rules of the module docstring, over the whole day."""
    planned = _planned_schedule(problem)
    idle = idle_schedule(problem)
    return idle if objective_value(problem, idle) < objective_value(problem, planned) else planned


def idle_schedule(problem: DispatchProblem) -> Schedule:
    """Rule 10's yardstick: the battery idle all day, PV serving the load and its surplus exported
    within the export cap where that costs less than curtailing it."""
    net = problem.load_kw - problem.pv_kw
    w = problem.weights
    surplus = np.maximum(-net, 0.0)
    export = np.where(w.cost * problem.sell >= -w.curtail, np.minimum(surplus, problem.export_bound_kw), 0.0)
    curtail = surplus - export
    idle = np.zeros(problem.intervals)
    return Schedule(
        pv_set=problem.pv_kw - curtail,
        curtail=curtail,
        charge=idle,
        discharge=idle.copy(),
        grid_import=np.maximum(net, 0.0),
        grid_export=export,
        energy=np.full(problem.intervals, float(problem.energy_initial_kwh)),
    )


def _planned_schedule(problem: DispatchProblem) -> Schedule:
    """Rules 1 to 9."""
    day = _Day(problem)
    if problem.demand_charge_per_kw <= 0 or problem.weights.cost <= 0:
        return _schedule(day, None)
    # Rule 3's threshold: from the lowest import the battery can hold every interval under (never
    # below what its discharge rating leaves of the day's highest deficit) to the peak the site
    # would draw without a battery.
    highest = float(day.deficit_kw.max(initial=0.0))
    lowest = max(highest - problem.bess.max_discharge_kw, 0.0)
    tolerance = 1e-5 * max(1.0, highest)

    def held(threshold: float) -> Schedule | None:
        schedule = _schedule(day, threshold)
        return schedule if schedule.grid_import.max(initial=0.0) <= threshold + tolerance / 10 else None

    start = day.lowest_threshold(lowest, highest, tolerance)
    at_start = None if start is None else held(start)
    if at_start is None:
        # The pass holds less than the battery's energy balance allows (rule 1 recharging a battery
        # that starts below soc_min over the threshold, say): bisect on the pass itself.
        at_start = held(highest)
        if at_start is None:
            return _schedule(day, None)
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
    problem: DispatchProblem, day: _Day, lowest: float, highest: float, at_lowest: Schedule
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
        schedule = _schedule(day, lowest + span * u**1.5)
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


class _Day:
    """What the rules read off the day whatever rule 3's threshold: computed once, for the forward
    pass (`_schedule`) that runs once a day, and a few times with a demand charge."""

    def __init__(self, problem: DispatchProblem) -> None:
        self.problem = problem
        T, dt = problem.intervals, problem.dt
        bess = problem.bess
        eta_c, eta_d = bess.charge_efficiency, bess.discharge_efficiency
        max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
        e_min, e_max, e_final = problem.energy_min_kwh, problem.energy_max_kwh, problem.energy_final_kwh
        buy, sell = problem.buy, problem.sell
        import_cap = problem.import_cap_kw if problem.import_cap_kw is not None else np.inf
        w = problem.weights
        self.target_band = (e_final, e_min, e_max)
        # Rule 6's price rows: no_dearer[k, u], interval u buys at no more than the k-th price of
        # the day; price_rows[t], the row of t's price; price_first[k], the first interval at it.
        prices, self.price_first, self.price_rows = np.unique(buy, return_index=True, return_inverse=True)
        self.no_dearer, self.hours = buy[None, :] <= prices[:, None], np.arange(T)

        expensive, cheap = price_quartiles(buy)
        # Rule 3's hours: discharging there replaces import dearer than the wear it costs, or, with
        # a demand charge, may also lower the day's billed peak.
        discharging = expensive & ((buy > bess.cycle_cost_per_kwh) | (problem.demand_charge_per_kw > 0))
        deficit = np.maximum(problem.load_kw - problem.pv_kw, 0.0)
        surplus = np.maximum(problem.pv_kw - problem.load_kw, 0.0)
        self.expensive, self.cheap, self.discharging = expensive, cheap, discharging
        self.deficit_kw, self.surplus_kw, self.import_cap = deficit, surplus, import_cap
        self.surplus_gain = self.chargeable(0.0)  # what PV surplus alone can store

        # Stored energy rule 4 will draw later to hold imports under the cap (an interval with load
        # above the cap has nothing to charge from). The levels below count it: what the later hours
        # can recharge does not bring the battery to its target if rule 4 spends part of it first.
        with np.errstate(divide="ignore", over="ignore"):
            self.forced = np.minimum(np.maximum(deficit - import_cap, 0.0), max_dis) * dt / eta_d
        self.at_cap = self.chargeable(import_cap)
        needed_at_cap = self.level_needed(self.at_cap)
        # Rule 4's own floor: the level the target needs, charging at the cap in every later hour,
        # not counting rule 4's later discharges (where the energy is not there they do not happen;
        # each kWh it holds the cap with is worth the same whichever hour it is spent in).
        # Held back only where the shortfall at the end would cost more than the discharge saves: a
        # kWh delivered ends 1/eta_d kWh short, against the import violation, price and wear it spares.
        # A target below soc_min (a start there, left as the target) is no floor.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            holds_for_target = w.violation / eta_d > w.violation + w.cost * (buy - bess.cycle_cost_per_kwh)
        target_floor = (  # needed_at_cap's, where rule 4 draws nothing
            needed_at_cap if not self.forced.any() else _level_needed(self.at_cap, np.zeros(T), e_final, e_min, e_max)
        )
        holding_floor = np.where(holds_for_target, np.maximum(e_min, target_floor), e_min)

        # Stored energy the expensive hours after t will draw, and the priciest of them: grid
        # charging at t pays only against a dearer hour still to come.
        with np.errstate(over="ignore"):
            self.expensive_need = np.where(discharging, np.minimum(deficit, max_dis) * dt / eta_d, 0.0)
        self.need_after = _sum_after(self.expensive_need)
        dearest_after = np.concatenate(
            [np.maximum.accumulate(np.where(discharging, buy, -np.inf)[::-1])[::-1][1:], [-np.inf]]
        )
        export_beats_curtailing = w.cost * sell >= -w.curtail
        exported_at = np.where(export_beats_curtailing, sell, -np.inf)  # what storing surplus forgoes
        self.pays_to_store = self.pays_against(buy, dearest_after)
        # Rule 3's middle hours (with a demand charge too): of the other hours with a deficit, those
        # whose price beats a kWh stored in the day's cheapest hour that pays to store after
        # round-trip losses and wear, the dearest that together draw what the SOC band holds and
        # the PV surplus that pays to store against them refills; what they draw, and the cheapest
        # of their prices (rule 5 fills for them where that pays).
        with np.errstate(over="ignore"):
            drawable = np.minimum(deficit, max_dis) * dt / eta_d
        middle = ~discharging & (deficit > 0)
        if middle.any():
            cheapest = float(buy[cheap & self.pays_to_store].min(initial=np.inf))
            middle &= self.pays_against(np.full(T, cheapest), buy)
            if middle.any():
                refilled = self.pays_against(exported_at, float(buy[middle].min()))
                refill_kwh = float(self.surplus_gain[refilled].sum())
                middle = charging_hours(-buy, middle, drawable, e_max - e_min + refill_kwh)
        self.middle, self.middle_need = middle, np.where(middle, drawable, 0.0)
        self.middle_price = float(buy[middle].min(initial=np.inf))
        self.middle_need_kwh = self.middle_need.sum()
        # Rule 5's hours that refill for them (where storing pays against that price), the PV
        # surplus that does, what the middle hours after t draw, and the first of them (the pass
        # reads their floor from there on).
        self.refills_middle = self.pays_against(buy, self.middle_price)
        self.surplus_refills_middle = self.pays_against(exported_at, self.middle_price)
        self.middle_need_after = _sum_after(self.middle_need)
        self.middle_from = int(np.argmax(middle)) if middle.any() else T
        # Rule 5's hours, before it narrows them to the price bands it needs (every pass does): any
        # outside the expensive ones where storing pays, as the bottom quartile alone may not store
        # enough under the peak guard; the narrowing keeps to the quartile where it does.
        self.storing = ~expensive & self.pays_to_store
        self.storing_by_price = hours_by_price(buy, self.storing)
        # Rule 3's discharges beyond the peak, without a threshold and with one (then only where
        # they beat the wear), and for its arbitrage floor each of their prices with the later
        # recharging, from PV surplus or the grid, that pays against it.
        self.arbitrage = (discharging, expensive & (buy > bess.cycle_cost_per_kwh))
        self.from_surplus = np.where(expensive, 0.0, np.minimum(surplus, max_ch) * eta_c * dt)
        surplus_cost = self.storing_cost(exported_at)
        grid_cost = self.storing_cost(buy)

        def arbitrage_prices(
            hours: np.ndarray,
        ) -> list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray | None]]:
            # (The pass works each price's floor out from the first of its hours on.) And what the
            # dearer of those hours draw (their whole deficit, up to the discharge rating), which
            # the floor keeps for: None where none is dearer.
            entries = []
            for price in sorted(set(buy[hours].tolist())):  # np.unique's, for less
                at_price = hours & (buy == price)
                dearer = hours & (buy > price)
                dearer_need = np.where(dearer, drawable, 0.0) if dearer.any() else None
                entries.append(
                    (at_price, int(np.argmax(at_price)), surplus_cost < price, grid_cost < price, dearer_need)
                )
            return entries

        # A day with a demand charge reads only those with a threshold (its pass without one skips
        # the arbitrage floor), a day without only those without.
        read = int(problem.demand_charge_per_kw > 0)
        self.arbitrage_prices = tuple(
            arbitrage_prices(hours) if with_threshold == read else []
            for with_threshold, hours in enumerate(self.arbitrage)
        )
        # Rule 8's hours: drawing from the grid earns money (when cost counts at all), and the room
        # the PV surplus of the hours after t will take.
        self.paid = (buy < -_EPS) & (w.cost > 0) & (problem.demand_charge_per_kw == 0)
        # Without a demand charge the peak guard is the import cap, so this is the pass's own.
        self.paid_to_charge = charging_hours(buy, self.paid, self.at_cap, e_max - e_min)
        surplus_room_after = _sum_after(np.minimum(surplus, max_ch) * eta_c * dt)
        export_beats_violating = export_beats_curtailing & (w.cost * -sell * eta_d < w.violation)
        lossy, self.room_for, self.making_room = self._room_for_gains(export_beats_curtailing)
        # What the middle floor keeps besides the expensive hours' draws: rule 9's, at their most.
        self.middle_reserve = np.where(self.making_room & ~discharging, drawable, 0.0)
        # The middle hours by price, where their floor keeps for other draws than those: what the
        # dearer middle hours after them draw (in time order, the cheaper would spend it first),
        # and rule 9's only in hours no cheaper (a cheaper one is better left to the grid, and the
        # room it makes, the middle hour's draw has made already).
        self.middle_prices = []
        for price in sorted(set(buy[middle].tolist())):
            at_price = middle & (buy == price)
            first = int(np.argmax(at_price))
            kept = np.maximum(
                np.where(buy >= price, self.middle_reserve, 0.0), np.where(middle & (buy > price), self.middle_need, 0.0)
            )
            if not np.array_equal(kept[first:], self.middle_reserve[first:]):
                self.middle_prices.append((at_price, first, kept))
        # Rule 2: the surplus the grid takes at a non-negative price (kW), stored only for what the
        # later intervals will draw (kWh): rule 3's expensive and middle hours up to the last of
        # them whose buy price storing at t pays against (the export price it forgoes after
        # round-trip losses, and the wear the objective bills per kWh delivered), the hours before
        # it included, which draw first. Rule 9 draws what lies above the room it makes: where one
        # of its later hours pays, the surplus is stored up to soc_max.
        sell_t = np.broadcast_to(sell, (T,))
        gains = (w.cost > 0) & export_beats_curtailing & (sell_t >= 0)
        self.exportable = np.where(gains, np.minimum(surplus, problem.export_bound_kw), 0.0)
        draws = np.where(discharging, self.expensive_need, 0.0) + self.middle_need
        room_making = self.middle_reserve > 0
        self.priced_after, room_after = np.zeros(T), np.zeros(T, dtype=bool)
        if (gains & (surplus > 0)).any() and (draws.any() or room_making.any()):
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                value = sell_t / (eta_c * eta_d) + bess.cycle_cost_per_kwh
                hours = np.arange(T)
                # pays[t, u]: storing at t pays against a later draw at u.
                pays = (value[:, None] < buy[None, :]) & (hours[None, :] > hours[:, None])
                paying = pays & (draws > 0)
                last = np.where(paying.any(axis=1), T - 1 - np.argmax(paying[:, ::-1], axis=1), -1)
                drawn = np.concatenate([[0.0], np.cumsum(draws)])  # drawn[k]: draws of intervals < k
                self.priced_after = np.where(last > hours, drawn[last + 1] - drawn[hours + 1], 0.0)
                room_after = (pays & room_making).any(axis=1)
        # And the end-of-day target where buying it later (rule 6, whichever later hour it buys
        # in) may cost more than the export price it forgoes; with a demand charge, always.
        dearest_later = np.concatenate([np.maximum.accumulate(buy[::-1])[::-1][1:], [np.inf]])
        target = max(e_final, e_min)
        self.store_base = np.where((dearest_later > sell_t) | (problem.demand_charge_per_kw > 0), target, e_min)
        self.store_base[room_after] = np.inf
        self.store_priced = self.store_base + self.priced_after

        # What the pass compares the battery's energy with, whatever the threshold: the level below
        # which rule 9's room is kept, the level rule 8 fills to (the room the later surplus will
        # take left), the surplus rule 2 stores beyond what the grid takes at a gain, the charging
        # rule 4's cap leaves, and what a discharge can deliver into the deficit.
        self.below_room = e_max - self.room_for
        paid_level = e_max - surplus_room_after
        spare_surplus = surplus - self.exportable
        headroom_at_cap = surplus + np.maximum(0.0, import_cap - deficit)
        deliverable = np.minimum(deficit, max_dis)
        # And for the grid flows the pass leaves.
        self.net_load_kw = problem.load_kw - problem.pv_kw
        self.export_bound_kw = problem.export_bound_kw
        self.export_beats_curtailing = export_beats_curtailing
        # What storing PV surplus forgoes, for rule 5: its export price, where it is exported.
        self.surplus_value = np.broadcast_to(exported_at, (T,))
        # The pass steps through the intervals once a day, and a few times with a demand charge:
        # on plain floats, a few times faster than on numpy scalars, with the same IEEE arithmetic.
        self.per_interval = tuple(
            values.tolist() for values in (
                surplus, deficit, needed_at_cap, self.export_bound_kw, export_beats_violating, holding_floor,
                lossy, self.below_room, spare_surplus, paid_level, headroom_at_cap, deliverable,
                self.making_room & (self.room_for > 0), self.paid_to_charge, self.middle,
            )
        )
        # Rule 3's hours beyond the peak that have a deficit to cover, without a threshold and with
        # one, and the first of them: the pass works out the levels only they read from there on.
        self.arbitrage_hours = tuple((hours & (deficit > 0)).tolist() for hours in self.arbitrage)
        self.arbitrage_from = tuple(int(np.argmax(hours)) if hours.any() else T for hours in self.arbitrage)

    def _room_for_gains(self, export_beats_curtailing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rule 9: (the PV surplus (kW) that would be spilt at a loss with the battery full, the room
        (kWh) the battery needs at the end of each interval to store what pays to store in the
        intervals after it, the intervals that discharge to make that room).

        Storing pays by itself where a full battery would export PV surplus at a negative price or
        curtail it, and where the site is paid to import (rule 8's hours). The room they need is
        worked backwards from the end of the day: each such interval needs what it can store, an
        expensive hour that rule 3 discharges in makes room of its own (up to what its deficit
        draws), and no room is needed beyond the SOC band. The room is made in the dearest hours
        with a deficit before those intervals that together can make it, where discharging pays
        after round-trip losses and wear against the priciest of the later intervals that refill
        it: what it delivers then is stored back for nothing, or less."""
        p = self.problem
        T, dt, w, bess = p.intervals, p.dt, p.weights, p.bess
        none = np.zeros(T)
        if w.cost <= 0:
            return none, none, np.zeros(T, dtype=bool)
        buy, sell, surplus, deficit = p.buy, p.sell, self.surplus_kw, self.deficit_kw
        # Per kWh spilt: the negative price it is exported at, else the curtailment weight.
        spill_value = np.where(export_beats_curtailing & (sell < 0), sell, -w.curtail / w.cost)
        exported_at_a_gain = np.where(export_beats_curtailing & (sell >= 0), p.export_bound_kw, 0.0)
        lossy = np.where(spill_value < 0, np.maximum(surplus - exported_at_a_gain, 0.0), 0.0)
        paid = self.paid_to_charge
        gain = np.where(
            paid, self.at_cap, np.minimum(lossy, bess.max_charge_kw) * bess.charge_efficiency * dt
        )
        if not (gain > _EPS).any():
            return lossy, none, np.zeros(T, dtype=bool)
        # What a kWh stored there costs: the import price where paid (or what the surplus it stores
        # first is worth), else what spilling it costs.
        surplus_value = np.where(surplus <= 0, -np.inf, np.where(lossy >= surplus, spill_value, sell))
        value = np.where(gain > _EPS, np.where(paid, np.maximum(buy, surplus_value), spill_value), -np.inf)
        value_after = np.concatenate([np.maximum.accumulate(value[::-1])[::-1][1:], [-np.inf]])
        with np.errstate(over="ignore"):
            drawable = np.minimum(deficit, bess.max_discharge_kw) * dt / bess.discharge_efficiency
        band = p.energy_max_kwh - p.energy_min_kwh

        def room_needed(draws: np.ndarray) -> np.ndarray:
            room, level = [], 0.0
            for added, taken in zip(reversed(gain.tolist()), reversed(draws.tolist()), strict=True):
                room.append(level)
                level = min(band, max(0.0, level + added - taken))
            room.reverse()
            return np.array(room, dtype=float)

        room = room_needed(self.expensive_need)
        pays = (room > _EPS) & (deficit > 0) & self.pays_against(value_after, buy)
        eligible = pays & ~self.discharging
        making_room = np.zeros(T, dtype=bool)
        # Each run of intervals that needs room: its dearest hours that can make the most it needs.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (room > _EPS).astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            run = np.zeros(T, dtype=bool)
            run[start:stop] = True
            making_room |= charging_hours(-buy, eligible & run, drawable, float(room[start:stop].max()))
        # The room still needed with those discharges made later on as well: how low each may go.
        room = room_needed(self.expensive_need + np.where(making_room, drawable, 0.0))
        return lossy, room, (making_room | self.discharging) & pays

    def chargeable(self, cap: float) -> np.ndarray:
        """Energy (kWh) each interval can put into the battery without importing above `cap`."""
        bess, dt = self.problem.bess, self.problem.dt
        return np.minimum(bess.max_charge_kw, np.maximum(cap - self.deficit_kw, 0.0) + self.surplus_kw) * (
            bess.charge_efficiency
        ) * dt

    def level_needed(self, gain: np.ndarray, loss: np.ndarray | None = None, since: int = 0) -> np.ndarray:
        """_level_needed to the day's target within its SOC band; `loss` rule 4's draws by default."""
        return _level_needed(gain, self.forced if loss is None else loss, *self.target_band, since)

    def pays_against(self, price: np.ndarray, value: np.ndarray | float) -> np.ndarray:
        """Where storing a kWh bought at `price` costs less than `value` after round-trip losses and wear."""
        return self.storing_cost(price) < value  # NaN < x is False too

    def storing_cost(self, price: np.ndarray) -> np.ndarray:
        """What a kWh bought at `price` costs once delivered: round-trip losses and wear."""
        bess = self.problem.bess
        # The wear carries the discharge losses as a margin: the objective bills it per kWh
        # delivered, but a forward pass that counts it so stores slightly more than pays on the
        # whole (1,360 generated and spot-tariff days: 36 cheaper, 32 dearer, +0.003 % in sum).
        # Efficiencies near 0 (valid, if absurd) make the cost of storing infinite: it never pays.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            round_trip = bess.charge_efficiency * bess.discharge_efficiency
            return price / round_trip + bess.cycle_cost_per_kwh / bess.discharge_efficiency

    def shave_kw(self, threshold: float) -> np.ndarray:
        """Rule 3's discharges to hold every interval's import at `threshold` (kW)."""
        return np.minimum(np.maximum(self.deficit_kw - threshold, 0.0), self.problem.bess.max_discharge_kw)

    def lowest_threshold(self, low: float, high: float, tolerance: float) -> float | None:
        """The lowest threshold in [low, high] at which the battery, charging under it wherever
        the import leaves room and discharging what the import would exceed it by, ends the day on
        target without having to start fuller than it is or to leave [soc_min, soc_max] on the way
        (rule 4's draws included): the energy balance rule 3's threshold starts from, to within
        `tolerance` above the exact one. None if not even `high` balances (a battery that starts
        below soc_min, say)."""
        p = self.problem
        bess = p.bess
        e_min, e_final, start = p.energy_min_kwh, p.energy_final_kwh, p.energy_initial_kwh
        e_max = max(p.energy_max_kwh, e_final)
        # Last interval first, as `short` works backwards.
        deficit, surplus, forced = self.deficit_kw[::-1].copy(), self.surplus_kw[::-1].copy(), self.forced[::-1]
        import_cap = self.import_cap
        drawn, stored = p.dt / bess.discharge_efficiency, bess.charge_efficiency * p.dt
        max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
        has_forced = bool(forced.any())

        def short(threshold: float) -> float:
            # How far the battery would have to go above its band somewhere (kWh), or start above
            # where it is, worked backwards as _level_needed does, without the clamp at the top;
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


def _charging_in_time(day: _Day, charging: np.ndarray, peak_safe: np.ndarray, need: np.ndarray) -> np.ndarray:
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
        short = (need > 0) & (drawn - held - stored_before > _EPS)
        if not short.any():
            break
        t = int(np.argmax(short))
        before = day.storing & ~charging & (day.hours < t) & day.pays_against(buy, buy[t])
        if not before.any():
            break
        charging = charging | charging_hours(buy, before, peak_safe, float(drawn[t] - held - stored_before[t]))
    return charging


def _charging_levels(
    day: _Day,
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
        at = _level_needed(gain, loss, final, problem.energy_min_kwh, problem.energy_max_kwh, first)
        level[at_price] = np.minimum(level, at)[at_price]
    return level


def _schedule(day: _Day, threshold: float | None) -> Schedule:
    """The forward pass of the rules; with a demand charge, rule 3 holds every interval's
    import at `threshold` (None: covers the expensive hours' deficit chronologically, whatever
    the wear)."""
    problem = day.problem
    T, dt = problem.intervals, problem.dt
    bess = problem.bess
    eta_c, eta_d = bess.charge_efficiency, bess.discharge_efficiency
    max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
    e_min, e_max, e_final = problem.energy_min_kwh, problem.energy_max_kwh, problem.energy_final_kwh
    buy = problem.buy
    import_cap = day.import_cap
    expensive, deficit = day.expensive, day.deficit_kw

    # With a threshold, only the part of the deficit above it is there for the peak: the rest
    # of rule 3's discharges must beat the wear.
    with_threshold = threshold is not None
    # Energy the battery can still take in after t without breaking the import cap, in the hours
    # it would charge in (anything but expensive): how low it may go and still end on target.
    # Grid charging should not set the day's peak when that peak is billed: it then stays under
    # rule 3's threshold (or the peak the site would draw without a battery), unless the
    # end-of-day target needs more.
    charging_cap = import_cap
    if problem.demand_charge_per_kw > 0:
        charging_cap = min(import_cap, float(deficit.max(initial=0.0)) if threshold is None else threshold)
    # Rule 3's discharges to the threshold, in every interval whose import would exceed it
    # (kW), what they draw (kWh), and with rule 4's the draws the levels below plan for.
    shave = np.zeros(T) if threshold is None else day.shave_kw(threshold)
    with np.errstate(divide="ignore", over="ignore"):
        shave_draws = shave * dt / eta_d
        planned = np.maximum(day.forced, shave_draws)

    peak_safe = day.chargeable(charging_cap)
    # The energy the battery needs at the end of t to end the day on target, and to hold the cap
    # and the threshold on the way, charging as the peak guard (or the cap) allows: for rule 6, in
    # the later intervals no dearer to buy in than t (and from PV surplus in any), so that what
    # they cannot store in time is bought at t (one row per price of the day); for the floor of
    # rule 3, in the hours it would recharge in.
    gains = np.where(day.no_dearer, peak_safe, day.surplus_gain)
    needed_peak_safe = _levels_needed(gains, planned, *day.target_band, day.price_first)[day.price_rows, day.hours]
    recharge = np.where(expensive, 0.0, peak_safe)
    floor_after = day.level_needed(recharge)
    # What rule 3's arbitrage keeps for the threshold of the intervals after t, expensive or
    # not, beyond its floor (read in its hours only: from the first on).
    reserve_after = floor_after if threshold is None else day.level_needed(recharge, planned, day.arbitrage_from[1])
    # How low a discharge to the threshold may take the battery: the level the target needs
    # when every later interval, expensive or not, recharges under the threshold (the later
    # discharges to it are not kept for: where the energy runs out, that threshold is not held).
    shave_floor = floor_after if threshold is None else day.level_needed(peak_safe)

    # Rule 3's arbitrage floor: energy the end-of-day target needs back is spent at t only where a
    # later hour it recharges in (anything but expensive) can put it back at a price that pays
    # against buy[t] after round-trip losses: PV surplus at the export price it forgoes (nothing,
    # where it would be curtailed), the grid at its buy price. Energy above what those hours bring
    # back (above the target, or refilled by surplus that pays) costs only the wear. The dearer of
    # rule 3's hours after t draw from the same level: what they take, those hours do not refill.
    arbitrage_floor = np.full(T, -np.inf)
    if with_threshold or problem.demand_charge_per_kw <= 0:
        from_surplus = day.from_surplus
        from_grid = np.maximum(recharge - from_surplus, 0.0)
        for at_price, first, surplus_pays, grid_pays, dearer_need in day.arbitrage_prices[with_threshold]:
            gain = np.where(surplus_pays, from_surplus, 0.0) + np.where(grid_pays, from_grid, 0.0)
            loss = planned if dearer_need is None else np.maximum(planned, dearer_need)
            arbitrage_floor[at_price] = day.level_needed(gain, loss, since=first)[at_price]
    # Rule 5's aim: the energy the expensive hours after t will draw, and with a threshold what
    # the discharges to it will draw in the other intervals after t.
    need, need_after = day.expensive_need, day.need_after
    if with_threshold:
        need = np.where(day.discharging, need, shave_draws)
        need_after = _sum_after(need)
    # And what the middle hours will draw, in the hours of rule 5 where storing pays against the
    # cheapest of them. Rule 3's middle floor: the level the expensive hours' draws, rule 9's, the
    # threshold's and rule 4's and the end-of-day target need, refilled only in those hours (under
    # the threshold, where there is one) and by PV surplus whose export price pays against them.
    charging = charging_hours(
        buy, day.storing, peak_safe, min(e_max - e_min, float(need.sum() + day.middle_need_kwh)), day.storing_by_price
    )
    charging = _charging_in_time(day, charging, peak_safe, need)
    middle_floor = None
    if day.middle.any():
        refill = charging & day.refills_middle
        need_after = need_after + np.where(refill, day.middle_need_after, 0.0)
        refill_gain = np.where(refill, peak_safe, np.where(day.surplus_refills_middle, day.surplus_gain, 0.0))
        middle_floor = day.level_needed(refill_gain, np.maximum(planned, need + day.middle_reserve), day.middle_from)
        for at_price, first, kept in day.middle_prices:
            loss = np.maximum(planned, need + kept)
            middle_floor[at_price] = day.level_needed(refill_gain, loss, first)[at_price]
    paid_to_charge = day.paid_to_charge
    # Rule 2's ceiling for exportable surplus: the target (or soc_max, for rule 9), what rule 3's
    # expensive and middle hours will draw up to the last that storing pays against, and rule 4's
    # and the threshold's draws.
    store_level = np.minimum(max(e_max, e_final), day.store_priced + _sum_after(planned))

    # Charge power that moves an energy into the battery: with an efficiency so small that
    # eta_c * dt rounds to 0 (valid, if absurd), any power moves none.
    charge_gain = eta_c * dt

    def charge_kw(energy_kwh: float) -> float:
        return energy_kwh / charge_gain if charge_gain else math.copysign(math.inf, energy_kwh)

    # What each interval's rules compare the battery's energy with, where that does not depend on
    # the energy: worked out for the whole day here, so that the pass below does only what does.
    # (np.maximum and the builtins agree on these: none is NaN, and the sign of a zero does not
    # survive the clamps the pass puts them through.)
    peak_safe_headroom = day.surplus_kw + np.maximum(0.0, charging_cap - deficit)
    charging_up = charging & (need_after > 0)
    charging_level = np.minimum(
        day.below_room, _charging_levels(day, charging_up, peak_safe, need, max(e_min, e_final), need_after, planned)
    )
    floor = np.maximum(e_min, floor_after)
    shave_stop = np.maximum(e_min, shave_floor)
    arbitrage_stop = np.maximum(np.maximum(floor, reserve_after), arbitrage_floor)
    # Read in the middle hours only. None in an hour where rule 5 charges unless its next charging
    # hour is cheaper: it would buy the energy back at the price or dearer, less the losses.
    middle_stop = floor if middle_floor is None else np.maximum(floor, middle_floor)
    if day.middle.any():
        charging_at = np.flatnonzero(charging_up)
        next_charging_price = np.append(buy[charging_at], np.inf)[np.searchsorted(charging_at, day.hours, "right")]
        middle_stop = np.where(charging_up & (next_charging_price >= buy - _EPS), np.inf, middle_stop)
    room_stop = np.maximum(floor, day.below_room)

    # On plain floats, as _Day keeps the per-interval values that do not depend on the threshold;
    # the builtins max and min spelt out (max(a, b) is `b if b > a else a`), as they cost a call
    # each where the pass makes a few per interval.
    (surplus, deficit, needed_at_cap, export_bound, export_beats_violating, holding_floor, lossy, below_room,
     spare_surplus, paid_level, headroom_at_cap, deliverable, discharges_for_room, paid_to_charge,
     middle) = day.per_interval
    arbitrage = day.arbitrage_hours[with_threshold]
    (charging_up, charging_level, needed_peak_safe, peak_safe_headroom, store_level, shave, shave_stop,
     arbitrage_stop, middle_stop, room_stop) = (
        values.tolist() for values in (
            charging_up, charging_level, needed_peak_safe, peak_safe_headroom, store_level, shave, shave_stop,
            arbitrage_stop, middle_stop, room_stop,
        )
    )
    charges, discharges, energies = [], [], []
    energy = float(problem.energy_initial_kwh)
    import_cap = float(import_cap)
    e_min, e_max, max_ch, max_dis = map(float, (e_min, e_max, max_ch, max_dis))
    below_band, above_band = e_min - _EPS, e_max + _EPS
    for t in range(T):
        room = charge_kw(e_max - energy)
        room = room if room < max_ch else max_ch
        room = room if room > 0.0 else 0.0
        charge = 0.0
        if surplus[t] > 0:
            # Rule 2, leaving rule 9's room for what pays to store later: surplus that would be spilt
            # at a loss now is stored whatever that room.
            # Exportable surplus only up to what the later intervals will draw.
            useful = charge_kw(store_level[t] - energy)
            useful = useful if useful > spare_surplus[t] else spare_surplus[t]
            kept = charge_kw(below_room[t] - energy)
            kept = kept if kept < useful else useful
            kept = kept if kept > lossy[t] else lossy[t]
            charge = room if room < surplus[t] else surplus[t]
            charge = kept if kept < charge else charge
        # Without surplus rule 2 stores nothing, and any other rule's charge that counts is more.

        if energy < below_band:
            wanted = charge_kw(e_min - energy)
            wanted = wanted if wanted < room else room
            charge = wanted if wanted > charge else charge
        if charging_up[t]:
            wanted = charge_kw(charging_level[t] - energy)
            wanted = wanted if wanted > 0.0 else 0.0
            wanted = wanted if wanted < room else room
            wanted = peak_safe_headroom[t] if peak_safe_headroom[t] < wanted else wanted
            charge = wanted if wanted > charge else charge
        if paid_to_charge[t]:
            wanted = charge_kw(paid_level[t] - energy)
            wanted = wanted if wanted > 0.0 else 0.0
            wanted = wanted if wanted < room else room
            wanted = peak_safe_headroom[t] if peak_safe_headroom[t] < wanted else wanted
            charge = wanted if wanted > charge else charge
        shortfall = needed_peak_safe[t] - energy
        if shortfall > _EPS:
            wanted = charge_kw(shortfall)
            wanted = wanted if wanted < room else room
            wanted = peak_safe_headroom[t] if peak_safe_headroom[t] < wanted else wanted
            charge = wanted if wanted > charge else charge
        shortfall = needed_at_cap[t] - energy
        if shortfall > _EPS:
            wanted = charge_kw(shortfall)
            wanted = wanted if wanted < room else room
            wanted = headroom_at_cap[t] if headroom_at_cap[t] < wanted else wanted
            charge = wanted if wanted > charge else charge

        discharge = 0.0
        if charge <= _EPS:
            charge = 0.0
            if shave[t] > 0:
                available = (energy - shave_stop[t]) * eta_d / dt
                available = available if available > 0.0 else 0.0
                discharge = available if available < shave[t] else shave[t]
            if arbitrage[t]:
                available = (energy - arbitrage_stop[t]) * eta_d / dt
                available = available if available > 0.0 else 0.0
                available = available if available < deliverable[t] else deliverable[t]
                discharge = available if available > discharge else discharge
            if middle[t]:
                # Rule 3 in the middle hours: what the expensive hours, rule 9 and the target leave.
                available = (energy - middle_stop[t]) * eta_d / dt
                available = available if available > 0.0 else 0.0
                available = available if available < deliverable[t] else deliverable[t]
                discharge = available if available > discharge else discharge
            if discharges_for_room[t]:
                # Rule 9: room for what pays to store later, refilled by it.
                available = (energy - room_stop[t]) * eta_d / dt
                available = available if available > 0.0 else 0.0
                available = available if available < deliverable[t] else deliverable[t]
                discharge = available if available > discharge else discharge
            if energy > above_band:
                above = (energy - e_max) * eta_d / dt
                # Beyond the load, into the export room PV leaves, while exporting costs less than
                # the violation it ends (a site without load would otherwise stay above all day).
                export_room = max(0.0, export_bound[t] - surplus[t]) if export_beats_violating[t] else 0.0
                discharge = max(discharge, min(deficit[t] + export_room, max_dis, above))
            over_cap = deficit[t] - discharge - import_cap
            if over_cap > _EPS:
                # Everything above rule 4's floor may go to the cap, the discharge above included.
                available = max(0.0, (energy - holding_floor[t]) * eta_d / dt)
                discharge = max(discharge, min(deficit[t], max_dis, discharge + over_cap, available))

        energy = energy + (eta_c * charge - discharge / eta_d) * dt
        charges.append(charge)
        discharges.append(discharge)
        energies.append(energy)

    # The grid takes the rest: the builtins max and min again, as np.where (np.maximum may differ
    # in the sign of a zero).
    charge, discharge = np.fromiter(charges, float, T), np.fromiter(discharges, float, T)
    grid = day.net_load_kw + charge - discharge
    grid_import = np.where(grid < 0.0, 0.0, grid)
    spill = np.where(-grid < 0.0, 0.0, -grid)
    export_bound = day.export_bound_kw
    grid_export = np.where(day.export_beats_curtailing, np.where(export_bound < spill, export_bound, spill), 0.0)
    curtail = spill - grid_export
    return Schedule(
        pv_set=problem.pv_kw - curtail,
        curtail=curtail,
        charge=charge,
        discharge=discharge,
        grid_import=grid_import,
        grid_export=grid_export,
        energy=np.fromiter(energies, float, T),
    )
