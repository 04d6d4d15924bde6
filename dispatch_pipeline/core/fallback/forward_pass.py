"""The forward pass of the rules over the day's intervals, at one threshold of rule 3 (or none)."""

from __future__ import annotations

import math

import numpy as np

from dispatch_pipeline.core.fallback.charging import charging_in_time, charging_levels
from dispatch_pipeline.core.fallback.day import Day
from dispatch_pipeline.core.fallback.levels import levels_needed, sum_after
from dispatch_pipeline.core.fallback.prices import charging_hours
from dispatch_pipeline.core.fallback.tolerance import EPS
from dispatch_pipeline.core.result import Schedule


def forward_pass(day: Day, threshold: float | None) -> Schedule:
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
    needed_peak_safe = levels_needed(gains, planned, *day.target_band, day.price_first)[day.price_rows, day.hours]
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
        need_after = sum_after(need)
    # And what the middle hours will draw, in the hours of rule 5 where storing pays against the
    # cheapest of them. Rule 3's middle floor: the level the expensive hours' draws, rule 9's, the
    # threshold's and rule 4's and the end-of-day target need, refilled only in those hours (under
    # the threshold, where there is one) and by PV surplus whose export price pays against them.
    charging = charging_hours(
        buy, day.storing, peak_safe, min(e_max - e_min, float(need.sum() + day.middle_need_kwh)), day.storing_by_price
    )
    charging = charging_in_time(day, charging, peak_safe, need)
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
    store_level = np.minimum(max(e_max, e_final), day.store_priced + sum_after(planned))

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
        day.below_room, charging_levels(day, charging_up, peak_safe, need, max(e_min, e_final), need_after, planned)
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
        middle_stop = np.where(charging_up & (next_charging_price >= buy - EPS), np.inf, middle_stop)
    room_stop = np.maximum(floor, day.below_room)

    # On plain floats, as Day keeps the per-interval values that do not depend on the threshold;
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
    below_band, above_band = e_min - EPS, e_max + EPS
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
        if shortfall > EPS:
            wanted = charge_kw(shortfall)
            wanted = wanted if wanted < room else room
            wanted = peak_safe_headroom[t] if peak_safe_headroom[t] < wanted else wanted
            charge = wanted if wanted > charge else charge
        shortfall = needed_at_cap[t] - energy
        if shortfall > EPS:
            wanted = charge_kw(shortfall)
            wanted = wanted if wanted < room else room
            wanted = headroom_at_cap[t] if headroom_at_cap[t] < wanted else wanted
            charge = wanted if wanted > charge else charge

        discharge = 0.0
        if charge <= EPS:
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
            if over_cap > EPS:
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
