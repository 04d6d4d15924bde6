"""The rule-based schedule: what a site runs when the MILP cannot answer in time.

One forward pass over the day, a handful of rules an operator would write down:

1. A battery below soc_min is recharged as fast as its rating allows: every interval spent
   below the band counts as violation again, more than importing over the cap for it would.
2. PV surplus goes into the battery up to soc_max; the rest is exported up to the cap while
   exporting costs less than curtailing; only what neither can take is curtailed.
3. In the day's expensive hours (top quartile of the buy price) the battery covers the deficit
   when the import it replaces costs more than the battery's wear (cycle_cost_per_kwh), down to a
   floor that keeps the end-of-day target reachable by later recharging, net of what rule 4 will
   draw from it later. Energy the target needs back goes only where putting it back pays after
   round-trip losses and wear (rule 5's test): the floor counts only the later recharging, PV
   surplus at the export price it forgoes or the grid at its buy price, that is cheap enough; what
   the battery holds above the target costs only the wear. With a demand charge billed on the
   day's peak import, its energy goes to the expensive hours of highest import first, whatever
   the wear (this floor counts for what it covers beyond them): it holds their import at a
   threshold, the lowest at which the whole plan keeps every interval's import under it (found by
   bisection: the ratings, the SOC band, the efficiencies, the floor, rule 4's needs and the
   charging of rules 5 and 6 under the threshold all count), and covers more of an hour's
   deficit, where that beats the wear, only with what the later expensive hours' threshold and
   rule 4 will not need. Should even the peak the site would draw without a battery be more than
   the plan can hold, it covers the deficit chronologically, whatever the wear and the recharge.
4. The battery also discharges to hold imports under the import cap, down to the level the
   end-of-day target still needs: energy it cannot recharge later would only move the violation
   to the end of the day, larger by the discharge losses.
5. In cheap hours (bottom quartile; of its price bands, the cheapest that can store what the
   expensive hours need) it charges from the grid when that pays after round-trip
   losses against a later expensive hour, up to the energy those hours will need; with a demand
   charge, never above rule 3's threshold (without one, the peak the site would draw without a
   battery).
6. Near the end of the day it charges just in time to reach the terminal SOC target, counting
   the discharges rule 4 and rule 3's threshold will still make: under that threshold when a peak
   is billed and time allows, up to the import cap when it must.
7. A battery above soc_max (it started the day there) discharges into the site's load, and into
   the export room PV leaves while exporting costs less than staying above, until it is back
   within its band.
8. While the site is paid to import (a negative buy price), the battery charges from the grid
   as fast as rule 5's limits allow, in the most negative of those hours that can fill it: every
   kWh it draws then earns money, whether or not a later hour uses it. It leaves room for the PV
   surplus of the hours after it, which rule 2 stores first, so as not to spill it at a price.
   Not on a day with a demand charge: charging up to the peak guard would set the billed peak
   that rule 3's discharges are there to lower.

By construction it never charges and discharges, or imports and exports, in the same interval,
and it never leaves [0, capacity] or exceeds a rating or the hard export cap.
"""

from __future__ import annotations

import math

import numpy as np

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

_EPS = 1e-9


def price_quartiles(buy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expensive, cheap) masks: top and bottom quartile of the day's buy price.

    Tariffs come in bands, and a band often straddles the 75th percentile. It counts as expensive
    only when that brings the expensive hours closer to a quarter of the day than leaving it out: with
    off-peak, shoulder and peak prices (0.20 / 0.35 / 0.55) the peak alone is the top quartile,
    not the shoulder that fills the rest of it; a peak covering a third of the day stays one
    when a short event above it is dearer still. The cheap end keeps every price at or below the
    25th percentile (rule 5 narrows it to the bands it needs: `charging_hours`). When
    one price fills a quartile (20 off-peak hours and 4 peak ones, say), the peak is what lies
    above it. A flat tariff has neither: there is nothing to shift energy between.
    """
    lowest, highest = float(buy.min()), float(buy.max())
    if highest - lowest <= _EPS:
        none = np.zeros(len(buy), dtype=bool)
        return none, none
    high, low = np.quantile(buy, 0.75), np.quantile(buy, 0.25)
    expensive = buy >= high - _EPS if high > lowest + _EPS else buy > lowest + _EPS
    above = buy > high + _EPS
    quarter = len(buy) / 4
    if above.any() and abs(int(above.sum()) - quarter) <= abs(int(expensive.sum()) - quarter):
        expensive = above
    cheap = buy <= low + _EPS if low < highest - _EPS else buy < highest - _EPS
    return expensive, cheap


def charging_hours(buy: np.ndarray, eligible: np.ndarray, stored_kwh: np.ndarray, need_kwh: float) -> np.ndarray:
    """Of the `eligible` intervals, those in the cheapest price bands that together can store
    `need_kwh` (`stored_kwh` per interval). A 5-hour super-off-peak that fills the battery leaves
    the off-peak around it out (charging there first would leave no room for the cheaper hours);
    a 1-hour one that cannot keeps it in. All of them when even they cannot store enough."""
    hours = np.flatnonzero(eligible)
    if len(hours) == 0:
        return eligible
    by_price = hours[np.argsort(buy[hours], kind="stable")]
    enough = int(np.searchsorted(np.cumsum(stored_kwh[by_price]), need_kwh - _EPS))
    threshold = buy[by_price[min(enough, len(by_price) - 1)]]
    return eligible & (buy <= threshold + _EPS)


def _sum_after(values: np.ndarray) -> np.ndarray:
    """For each t, the sum of values strictly after t."""
    return np.concatenate([np.cumsum(values[::-1])[::-1][1:], [0.0]])


def _level_needed(gain: np.ndarray, loss: np.ndarray, final: float, lowest: float, highest: float) -> np.ndarray:
    """For each t, the energy the battery needs at the end of t to end the day at `final`, when
    each later interval u can add at most gain[u] and will take loss[u] out.

    Worked backwards from the end of the day: an interval that takes energy out raises the level
    needed before it, one that can add energy lowers it, but never below `lowest` (the battery
    cannot give what it holds below it) nor above `highest` or `final`, whichever is higher (it
    cannot hold more: as full as it can be is the best it can do). A loss and a gain never fall in
    the same interval. Without losses this is `final` less what the later intervals can add.
    """
    if not loss.any():  # most days: the same, without a Python loop
        needed = np.maximum(lowest, final - _sum_after(gain))
        needed[-1] = final
        return needed
    needed = np.empty(len(gain))
    level, highest = final, max(highest, final)
    for t in range(len(gain) - 1, -1, -1):
        needed[t] = level
        level = min(highest, max(lowest, level + loss[t] - gain[t]))
    return needed


def rule_based_schedule(problem: DispatchProblem) -> Schedule:
    """The rules of the module docstring, over the whole day."""
    if problem.demand_charge_per_kw <= 0 or problem.weights.cost <= 0:
        return _schedule(problem, None)
    # Rule 3's threshold: the lowest import the plan holds every interval under. Not below the
    # import of the hours rule 3 does not discharge in (under the cap, rule 4 holds it), nor above
    # the peak the site would draw without a battery.
    deficit = np.maximum(problem.load_kw - problem.pv_kw, 0.0)
    highest = float(deficit.max(initial=0.0))
    import_cap = problem.import_cap_kw if problem.import_cap_kw is not None else np.inf
    expensive, _ = price_quartiles(problem.buy)
    lowest = min(float(deficit[~expensive].max(initial=0.0)), import_cap, highest)
    tolerance = 1e-5 * max(1.0, highest)

    def held(threshold: float) -> Schedule | None:
        schedule = _schedule(problem, threshold)
        return schedule if schedule.grid_import.max(initial=0.0) <= threshold + tolerance / 10 else None

    best = held(highest)
    if best is None:
        return _schedule(problem, None)
    at_lowest = held(lowest)
    if at_lowest is not None:
        return at_lowest
    low, high = lowest, highest
    while high - low > tolerance:
        middle = (low + high) / 2
        schedule = held(middle)
        if schedule is None:
            low = middle
        else:
            high, best = middle, schedule
    return best


def _schedule(problem: DispatchProblem, threshold: float | None) -> Schedule:
    """The forward pass of the rules; with a demand charge, rule 3 holds the expensive hours'
    import at `threshold` (None: covers their deficit chronologically, whatever the wear)."""
    T, dt = problem.intervals, problem.dt
    bess = problem.bess
    eta_c, eta_d = bess.charge_efficiency, bess.discharge_efficiency
    max_ch, max_dis = bess.max_charge_kw, bess.max_discharge_kw
    e_min, e_max, e_final = problem.energy_min_kwh, problem.energy_max_kwh, problem.energy_final_kwh
    load, pv, buy, sell = problem.load_kw, problem.pv_kw, problem.buy, problem.sell
    import_cap = problem.import_cap_kw if problem.import_cap_kw is not None else np.inf
    export_bound = problem.export_bound_kw
    w = problem.weights

    expensive, cheap = price_quartiles(buy)
    # Rule 3's hours: discharging there replaces import dearer than the wear it costs, or, with
    # a demand charge, may also lower the day's billed peak.
    discharging = expensive & ((buy > bess.cycle_cost_per_kwh) | (problem.demand_charge_per_kw > 0))
    # With a threshold, only the part of the deficit above it is there for the peak: the rest
    # of rule 3's discharges must beat the wear.
    arbitrage = discharging if threshold is None else expensive & (buy > bess.cycle_cost_per_kwh)
    deficit = np.maximum(load - pv, 0.0)
    surplus = np.maximum(pv - load, 0.0)

    # Energy the battery can still take in after t without breaking the import cap, in the hours
    # it would charge in (anything but expensive): how low it may go and still end on target.
    # Grid charging should not set the day's peak when that peak is billed: it then stays under
    # rule 3's threshold (or the peak the site would draw without a battery), unless the
    # end-of-day target needs more.
    charging_cap = import_cap
    if problem.demand_charge_per_kw > 0:
        charging_cap = min(import_cap, float(deficit.max(initial=0.0)) if threshold is None else threshold)

    def chargeable(cap: float) -> np.ndarray:
        return np.minimum(max_ch, np.maximum(cap - deficit, 0.0) + surplus) * eta_c * dt

    # Stored energy rule 4 will draw later to hold imports under the cap (an interval with load
    # above the cap has nothing to charge from). The levels below count it: what the later hours
    # can recharge does not bring the battery to its target if rule 4 spends part of it first.
    with np.errstate(divide="ignore", over="ignore"):
        forced = np.minimum(np.maximum(deficit - import_cap, 0.0), max_dis) * dt / eta_d
        # Rule 3's discharges to the threshold (kW), and with rule 4's what they draw (kWh).
        shave = np.zeros(T) if threshold is None else np.where(
            discharging, np.minimum(np.maximum(deficit - threshold, 0.0), max_dis), 0.0
        )
        planned = np.maximum(forced, shave * dt / eta_d)

    def level_needed(gain: np.ndarray) -> np.ndarray:
        return _level_needed(gain, forced, e_final, e_min, e_max)

    peak_safe = chargeable(charging_cap)
    # The energy the battery needs at the end of t to end the day on target, and to hold the cap
    # and the threshold on the way: charging as the peak guard (or the cap) allows in every later
    # hour, or only in the hours it would recharge in (the floor of rule 3).
    needed_peak_safe = _level_needed(peak_safe, planned, e_final, e_min, e_max)
    needed_at_cap = level_needed(chargeable(import_cap))
    # Rule 4's own floor: the level the target needs, charging at the cap in every later hour,
    # not counting rule 4's later discharges (where the energy is not there they do not happen;
    # each kWh it holds the cap with is worth the same whichever hour it is spent in).
    # Held back only where the shortfall at the end would cost more than the discharge saves: a
    # kWh delivered ends 1/eta_d kWh short, against the import violation, price and wear it spares.
    # A target below soc_min (a start there, left as the target) is no floor.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        holds_for_target = w.violation / eta_d > w.violation + w.cost * (buy - bess.cycle_cost_per_kwh)
    target_floor = _level_needed(chargeable(import_cap), np.zeros(T), e_final, e_min, e_max)
    holding_floor = np.where(holds_for_target, np.maximum(e_min, target_floor), e_min)
    floor_after = level_needed(np.where(expensive, 0.0, peak_safe))
    # What rule 3 keeps for the threshold of the expensive hours after t, beyond its floor.
    reserve_after = floor_after if threshold is None else _level_needed(
        np.where(expensive, 0.0, peak_safe), planned, e_final, e_min, e_max
    )

    # Stored energy the expensive hours after t will draw, and the priciest of them: grid
    # charging at t pays only against a dearer hour still to come.
    with np.errstate(over="ignore"):
        expensive_need = np.where(discharging, np.minimum(deficit, max_dis) * dt / eta_d, 0.0)
    need_after = _sum_after(expensive_need)
    dearest_after = np.concatenate(
        [np.maximum.accumulate(np.where(discharging, buy, -np.inf)[::-1])[::-1][1:], [-np.inf]]
    )
    round_trip = eta_c * eta_d
    export_beats_curtailing = w.cost * sell >= -w.curtail

    def pays_against(price: np.ndarray, value: np.ndarray | float) -> np.ndarray:
        # Efficiencies near 0 (valid, if absurd) make the cost of storing infinite: it never pays.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # NaN < x is False too
            return price / round_trip + bess.cycle_cost_per_kwh / eta_d < value

    pays_to_store = pays_against(buy, dearest_after)
    # Rule 3's arbitrage floor: energy the end-of-day target needs back is spent at t only where a
    # later hour it recharges in (anything but expensive) can put it back at a price that pays
    # against buy[t] after round-trip losses: PV surplus at the export price it forgoes (nothing,
    # where it would be curtailed), the grid at its buy price. Energy above what those hours bring
    # back (above the target, or refilled by surplus that pays) costs only the wear.
    arbitrage_floor = np.full(T, -np.inf)
    if threshold is not None or problem.demand_charge_per_kw <= 0:
        from_surplus = np.where(expensive, 0.0, np.minimum(surplus, max_ch) * eta_c * dt)
        from_grid = np.maximum(np.where(expensive, 0.0, peak_safe) - from_surplus, 0.0)
        surplus_price = np.where(export_beats_curtailing, sell, -np.inf)
        for price in np.unique(buy[arbitrage]):
            gain = (
                np.where(pays_against(surplus_price, price), from_surplus, 0.0)
                + np.where(pays_against(buy, price), from_grid, 0.0)
            )
            at_price = arbitrage & (buy == price)
            arbitrage_floor[at_price] = _level_needed(gain, planned, e_final, e_min, e_max)[at_price]
    charging = charging_hours(
        buy, cheap & pays_to_store, peak_safe, min(e_max - e_min, float(expensive_need.sum()))
    )
    # Rule 8's hours: drawing from the grid earns money (when cost counts at all), and the room
    # the PV surplus of the hours after t will take.
    paid = (buy < -_EPS) & (w.cost > 0) & (problem.demand_charge_per_kw == 0)
    paid_to_charge = charging_hours(buy, paid, peak_safe, e_max - e_min)
    surplus_room_after = _sum_after(np.minimum(surplus, max_ch) * eta_c * dt)
    export_beats_violating = export_beats_curtailing & (w.cost * -sell * eta_d < w.violation)

    # Charge power that moves an energy into the battery: with an efficiency so small that
    # eta_c * dt rounds to 0 (valid, if absurd), any power moves none.
    charge_gain = eta_c * dt

    def charge_kw(energy_kwh: float) -> float:
        return energy_kwh / charge_gain if charge_gain else math.copysign(math.inf, energy_kwh)

    # The pass runs once per interval, and up to twenty times a day with a demand charge: on plain
    # floats, a few times faster than on numpy scalars, with the same IEEE arithmetic.
    (surplus, deficit, charging, need_after, paid_to_charge, surplus_room_after, needed_peak_safe,
     needed_at_cap, floor_after, shave, arbitrage, reserve_after, export_bound, export_beats_violating,
     holding_floor, load, pv, export_beats_curtailing, arbitrage_floor) = (
        np.broadcast_to(values, (T,)).tolist() for values in (
            surplus, deficit, charging, need_after, paid_to_charge, surplus_room_after, needed_peak_safe,
            needed_at_cap, floor_after, shave, arbitrage, reserve_after, export_bound, export_beats_violating,
            holding_floor, load, pv, export_beats_curtailing, arbitrage_floor,
        )
    )
    columns = ("pv_set", "curtail", "charge", "discharge", "grid_import", "grid_export", "energy")
    rows: list[tuple[float, ...]] = []
    energy = float(problem.energy_initial_kwh)
    charging_cap, import_cap = float(charging_cap), float(import_cap)
    e_min, e_max, e_final, max_ch, max_dis = map(float, (e_min, e_max, e_final, max_ch, max_dis))
    for t in range(T):
        room = max(0.0, min(max_ch, charge_kw(e_max - energy)))
        peak_safe_headroom = surplus[t] + max(0.0, charging_cap - deficit[t])
        headroom_at_cap = surplus[t] + max(0.0, import_cap - deficit[t])
        charge = min(surplus[t], room)

        if energy < e_min - _EPS:
            charge = max(charge, min(room, charge_kw(e_min - energy)))
        if charging[t] and need_after[t] > 0:
            level = min(e_max, max(e_min, e_final) + need_after[t])
            wanted = max(0.0, charge_kw(level - energy))
            charge = max(charge, min(room, wanted, peak_safe_headroom))
        if paid_to_charge[t]:
            wanted = max(0.0, charge_kw(e_max - surplus_room_after[t] - energy))
            charge = max(charge, min(room, wanted, peak_safe_headroom))
        for needed, headroom in (
            (needed_peak_safe[t], peak_safe_headroom),
            (needed_at_cap[t], headroom_at_cap),
        ):
            shortfall = needed - energy
            if shortfall > _EPS:
                charge = max(charge, min(room, charge_kw(shortfall), headroom))

        discharge = 0.0
        if charge <= _EPS:
            charge = 0.0
            floor = max(e_min, floor_after[t])
            if shave[t] > 0:
                discharge = min(shave[t], max(0.0, (energy - floor) * eta_d / dt))
            if arbitrage[t] and deficit[t] > 0:
                available = max(0.0, (energy - max(floor, reserve_after[t], arbitrage_floor[t])) * eta_d / dt)
                discharge = max(discharge, min(deficit[t], max_dis, available))
            if energy > e_max + _EPS:
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

        grid = load[t] - pv[t] + charge - discharge
        grid_import = max(grid, 0.0)
        spill = max(-grid, 0.0)
        grid_export = min(spill, export_bound[t]) if export_beats_curtailing[t] else 0.0
        curtail = spill - grid_export
        energy = energy + (eta_c * charge - discharge / eta_d) * dt

        rows.append((pv[t] - curtail, curtail, charge, discharge, grid_import, grid_export, energy))
    by_column = np.ascontiguousarray(np.array(rows, dtype=float).reshape(T, len(columns)).T)
    return Schedule(**dict(zip(columns, by_column, strict=True)))
