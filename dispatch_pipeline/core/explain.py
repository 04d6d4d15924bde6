"""Per-interval explanations an operator can read: what the plan does, why, and what bound it."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress

import numpy as np

from dispatch_pipeline.core.fallback import price_quartiles
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import BINDING_NAMES, Schedule
from dispatch_pipeline.core.tariffs import DEFAULT_CURRENCY

_ON = 1e-4  # kW below which a flow counts as off
_SOC_TOL = 1e-6  # of capacity: a solver's tolerance, not a breach of the band
_AT = 1e-4  # relative distance at which a quantity counts as at its bound


@dataclass(frozen=True)
class Explanation:
    reason_code: str
    reason: str
    binding: list[str]
    marginal_cost_per_kwh: float | None


def _at_least(value: np.ndarray | float, bound: np.ndarray | float, unit: float = 1.0) -> np.ndarray:
    return value >= bound - _AT * np.maximum(unit, np.abs(bound))


def _at_most(value: np.ndarray | float, bound: np.ndarray | float, unit: float = 1.0) -> np.ndarray:
    return value <= bound + _AT * np.maximum(unit, np.abs(bound))


def _energy_unit(problem: DispatchProblem) -> float:
    """The scale below which stored energies count as equal: 1 kWh, or the battery's capacity
    when smaller (for a 0.1 Wh battery, 1e-4 kWh is its whole band)."""
    return min(1.0, problem.capacity_kwh)


def battery_on(problem: DispatchProblem) -> float:
    """kW below which the battery counts as idle: _ON, or less for a battery so small that _ON
    would move a tenth of a per cent of it in an interval."""
    return min(_ON, max(1e-9, 1e-3 * problem.capacity_kwh / problem.dt))


def binding_constraints(problem: DispatchProblem, schedule: Schedule, export_bound: np.ndarray) -> list[list[str]]:
    """Per interval, the constraints at their bound, in BINDING_NAMES order.

    Compared on whole-day arrays, not interval by interval: the export bound is itself a day-long
    array, and rebuilding it for every interval was a quarter of the time explaining a day took.
    """
    s, bess = schedule, problem.bess
    curtailed = s.curtail > _ON
    cap = problem.import_cap_kw
    last = np.arange(problem.intervals) == problem.intervals - 1
    unit, on = _energy_unit(problem), battery_on(problem)
    at_bound = np.column_stack(
        [
            _at_most(s.energy, problem.energy_min_kwh, unit),
            _at_least(s.energy, problem.energy_max_kwh, unit),
            (s.charge > on) & _at_least(s.charge, bess.max_charge_kw),
            (s.discharge > on) & _at_least(s.discharge, bess.max_discharge_kw),
            (s.grid_import > _ON) & (_at_least(s.grid_import, cap) if cap is not None else False),
            # X_t is PV plus full discharge where no cap is set: exporting all of it binds no limit.
            ((s.grid_export > _ON) & (export_bound < problem.pv_kw + bess.max_discharge_kw - _ON)
             & _at_least(s.grid_export, export_bound))
            | (curtailed & (export_bound <= _ON)),
            last & _at_most(s.energy, problem.energy_final_kwh, unit),
            curtailed,
        ]
    )
    return [list(compress(BINDING_NAMES, row)) for row in at_bound.tolist()]


def _kw(value: float) -> str:
    """A power as the sentence shows it: one decimal, two significant digits below 0.05 kW (a
    0.02 kW flow is not "0.0 kW")."""
    return f"{value:.1f}" if value >= 0.05 else f"{value:.2g}"


def _pct(fraction: float, places: int = 0) -> str:
    """A state of charge as a percentage. A battery drained to its floor can hold -1e-18 of its
    capacity, within any tolerance, and that is "0%", not "-0%"."""
    text = f"{fraction:.{places}%}"
    return text[1:] if text.startswith("-") and not text.strip("-0.%") else text


def dearest_buy_after(buy: np.ndarray) -> np.ndarray:
    """For each interval, the highest buy price of the intervals after it (-inf after the last)."""
    suffix_max = np.maximum.accumulate(buy[::-1])[::-1]
    return np.append(suffix_max[1:], -np.inf)


def peak_held_after(problem: DispatchProblem, schedule: Schedule) -> np.ndarray:
    """For each interval, whether the battery discharges after it where the import would otherwise
    reach the day's peak: what "a later import peak" held down claims. A discharge at a lower
    import (a tie at the same price, the same energy used at any hour) holds no peak down."""
    s = schedule
    on = battery_on(problem)
    peak = float(s.grid_import.max()) if len(s.grid_import) else 0.0
    # A discharge in place of PV the plan curtails saves no import either (explain_interval).
    holds = (s.discharge > on) & (s.curtail < s.discharge - on) & (
        s.grid_import + s.discharge - s.grid_export >= peak - max(1e-3, 1e-3 * peak)
    )
    return np.append(np.logical_or.accumulate(holds[::-1])[::-1][1:], False)


def _amount(value: float) -> str:
    """A price as a tariff writes it: two decimals, up to four when it has them (0.55, 0.224).
    A price too small for four, as a market's -0.01 per MWh is per kWh, keeps two significant
    digits: -0.00001, not a "-0.00" the site would be paid to import at."""
    value += 0.0  # a price series rounded from -0.00004 holds -0.0: it is 0.00, not "-0.00"
    places = 4
    if 0 < abs(value) < 5e-5:
        places = 1 - int(np.floor(np.log10(abs(value))))
    whole, _, decimals = f"{value:.{places}f}".rstrip("0").partition(".")
    return f"{whole}.{decimals:0<2}"


def price_bands(buy: np.ndarray, expensive: np.ndarray, cheap: np.ndarray) -> list[str]:
    """How each interval's buy price ranks in its day, in words."""
    if not expensive.any() and not cheap.any():
        return ["the same all day"] * len(buy)  # every non-flat day has a top quartile
    # A band covering most of the day (22 hours at the peak rate) is no quartile of it.
    return np.select(
        [buy >= buy.max() - 1e-9, buy <= buy.min() + 1e-9, expensive, cheap],
        ["the day's highest price", "the day's lowest price", "the day's top quartile", "the day's bottom quartile"],
        "mid-range for the day",
    ).tolist()


@dataclass(frozen=True)
class SpillStored:
    """What the plan stores where the grid would otherwise take the energy only at a loss or not
    at all: PV surplus at a negative sell price or beyond the export bound, and grid energy the site
    is paid to import. A discharge before it that such storing outgrows made room for it."""

    stored_kwh: np.ndarray  # per interval, what enters the battery in such storing
    paid: np.ndarray  # grid charging at a negative buy price
    negative_sell: np.ndarray  # storing PV surplus the grid would take at a negative sell price
    beyond_export: np.ndarray  # storing PV surplus beyond the export bound

    @classmethod
    def of(cls, problem: DispatchProblem, schedule: Schedule, export_bound: np.ndarray) -> SpillStored:
        s = schedule
        charging = s.charge > battery_on(problem)
        surplus = problem.pv_kw - problem.load_kw
        paid = charging & (s.grid_import > _ON) & (problem.buy < 0)
        from_surplus = charging & (surplus > _ON)
        negative_sell = from_surplus & (problem.sell < 0)
        beyond_export = from_surplus & (surplus > export_bound + _ON)
        stored = np.where(paid | negative_sell | beyond_export, s.charge, 0.0)
        return cls(stored * problem.bess.charge_efficiency * problem.dt, paid, negative_sell, beyond_export)

    def room_made(self, problem: DispatchProblem, schedule: Schedule, t: int, currency: str) -> str | None:
        """What a discharge at t makes room for: the storing after t that the battery, as full as
        it was before t, could not all have taken in; None if it could."""
        energy_before = schedule.energy[t - 1] if t else problem.energy_initial_kwh
        later = slice(t + 1, None)
        if float(self.stored_kwh[later].sum()) <= problem.energy_max_kwh - energy_before + 1e-6:
            return None
        what = []
        if self.negative_sell[later].any():
            lowest = float(problem.sell[later][self.negative_sell[later]].min())
            what.append(f"PV surplus the grid would take only at a negative price (sell down to {_amount(lowest)} {currency}/kWh)")
        if self.beyond_export[later].any():
            what.append("PV surplus beyond what the grid can take")
        if self.paid[later].any():
            lowest = float(problem.buy[later][self.paid[later]].min())
            what.append(f"grid energy the site is paid to import (buy down to {_amount(lowest)} {currency}/kWh)")
        return " and ".join(what) + " later today"


def explain_interval(
    problem: DispatchProblem,
    schedule: Schedule,
    t: int,
    expensive: np.ndarray,
    bands: list[str],
    export_bound: np.ndarray,
    dearest_after: np.ndarray,
    currency: str,
    spill_stored: SpillStored,
    optimal: bool = True,
    peak_held_later: np.ndarray | None = None,
) -> tuple[str, str]:
    """`optimal`: the schedule is the MILP's, so what it leaves undone did not pay; a rule-based
    schedule's choices are its rules', and no claim about the demand charge is made for them."""
    s = schedule
    buy, sell = problem.buy[t], problem.sell[t]
    soc = s.energy[t] / problem.capacity_kwh
    soc_before = (s.energy[t - 1] if t else problem.energy_initial_kwh) / problem.capacity_kwh
    load, pv = problem.load_kw[t] + 0.0, problem.pv_kw[t] + 0.0  # -0.0 kW in a series is "0.0 kW"
    surplus = pv - load
    band = bands[t]
    price = f"buy {_amount(buy)} {currency}/kWh, {band}"
    ch, dis, imp, exp, cur = s.charge[t], s.discharge[t], s.grid_import[t], s.grid_export[t], s.curtail[t]
    last = t == problem.intervals - 1
    target = problem.bess.terminal_soc
    # The dearest buy price at which the battery discharges later today (-inf if it does not):
    # what stored energy is worth later, if anything.
    dearest_later = float(dearest_after[t])
    dearer_later = dearest_later > buy + 1e-9
    # Whether stored energy is drawn on later today: what "worth more later" and "a later peak"
    # claim. Energy never drawn on again is held for the end-of-day target.
    drawn_later = dearest_later > -np.inf
    # Whether a later discharge holds the day's import peak down: what "a later import peak" claims.
    peak_later = peak_held_later is not None and bool(peak_held_later[t])
    cap = problem.import_cap_kw
    over_cap = f"; importing {_kw(imp)} kW, {_kw(imp - cap)} kW over the {cap:.1f} kW import limit" if (
        cap is not None and imp > cap + 1e-3
    ) else ""
    bess = problem.bess

    on = battery_on(problem)
    if ch > on:
        if soc_before < bess.soc_min - _SOC_TOL:
            return "recover_soc_min", (
                f"Charging {_kw(ch)} kW to bring the battery back up to its minimum "
                f"(SOC {_pct(soc_before, 1)} < soc_min {bess.soc_min:.1%}){over_cap}"
                # PV beyond what the battery takes is exported: the grid flow is named either way.
                + (f"; exporting {_kw(exp)} kW" if exp > _ON else "")
            )
        if surplus >= ch - _ON and imp <= _ON:
            tail = f"; exporting {_kw(exp)} kW" if exp > _ON else ""
            return "charge_pv_surplus", (
                f"Charging {_kw(ch)} kW from PV surplus ({pv:.1f} kW PV vs {load:.1f} kW load){tail}, SOC {_pct(soc)}"
            )
        # Charging partly from PV surplus: the grid's share is what the price sentence is about.
        # The PV the plan uses, not the forecast: PV curtailed charges nothing.
        from_pv = min(ch, max(s.pv_set[t] - load, 0.0))
        charging = (
            f"Charging {_kw(ch)} kW, {_kw(ch - from_pv)} kW of it from the grid,"
            if from_pv > _ON else f"Charging {_kw(ch)} kW from the grid"
        )
        if buy < 0:
            return "charge_negative_price", f"{charging.rstrip(',')}: the site is paid to import ({price}){over_cap}"
        if last or (not drawn_later and soc <= target + 0.01):
            short = f", ending the day at {_pct(soc)}" if last and soc < target - 0.005 else ""
            return "charge_terminal_soc", (
                f"{charging} toward the end-of-day target of SOC {target:.0%}{short} ({price}){over_cap}"
            )
        if dearer_later:
            return "charge_grid_cheap", (
                f"{charging} while energy is cheaper than later today "
                f"(up to {_amount(dearest_later)} {currency}/kWh; {price}), SOC {_pct(soc)}{over_cap}"
            )
        if problem.demand_charge_per_kw > 0 and peak_later:
            return "charge_grid_peak_shaving", (
                f"{charging} to hold a later import peak down "
                f"(demand charge {_amount(problem.demand_charge_per_kw)} {currency}/kW; {price}), SOC {_pct(soc)}{over_cap}"
            )
        return "charge_grid", f"{charging.rstrip(',')} ({price}), SOC {_pct(soc)}{over_cap}"
    if dis > on:
        if cap is not None and imp >= cap - 1e-3 and load - pv > cap + 1e-3:
            if imp > cap + 1e-3:
                return "discharge_import_cap", (
                    f"Discharging {_kw(dis)} kW toward the {cap:.1f} kW grid import limit; importing "
                    f"{_kw(imp)} kW, still {_kw(imp - cap)} kW over it"
                )
            return "discharge_import_cap", (
                f"Discharging {_kw(dis)} kW to keep the grid import at its {cap:.1f} kW limit"
            )
        if soc_before > bess.soc_max + _SOC_TOL:
            return "discharge_above_soc_max", (
                f"Discharging {_kw(dis)} kW to bring the battery back down to its maximum "
                f"(SOC {_pct(soc_before, 1)} > soc_max {bess.soc_max:.1%})"
                + (f"; exporting {_kw(exp)} kW (sell {_amount(sell)} {currency}/kWh)" if exp > _ON else "")
            )
        if exp > _ON:
            return "discharge_export", (
                f"Discharging {_kw(dis)} kW and exporting {_kw(exp)} kW (sell {_amount(sell)} {currency}/kWh)"
            )
        # Where the plan curtails at least as much PV as the battery delivers, that PV could have
        # served the same load: the discharge saves no import, at the peak price or at the day's
        # peak import, and only empties the battery.
        saves_import = cur < dis - on
        if expensive[t] and saves_import:
            # Most of a day at its dearer rate (a Sunday: standard all day, off-peak at night)
            # is no peak an operator would name as one.
            when = "during the peak tariff" if expensive.mean() <= 0.5 else "at the day's dearer rate"
            return "discharge_peak", f"Discharging {_kw(dis)} kW {when} ({price})"
        peak = float(s.grid_import.max())
        if problem.demand_charge_per_kw > 0 and saves_import and imp >= peak - max(1e-3, 1e-3 * peak):
            return "discharge_peak_shaving", (
                f"Discharging {_kw(dis)} kW to hold the day's peak import down to {peak:.1f} kW "
                f"(demand charge {_amount(problem.demand_charge_per_kw)} {currency}/kW; {price})"
            )
        room_for = spill_stored.room_made(problem, s, t, currency)
        if room_for is not None:
            return "discharge_make_room", (
                f"Discharging {_kw(dis)} kW to cover load ({price}), making room in the battery for {room_for}, "
                f"SOC {_pct(soc)}"
            )
        return "discharge_load", f"Discharging {_kw(dis)} kW to cover load ({price}), SOC {_pct(soc)}"
    if cur > _ON:
        return "curtail", f"Curtailing {_kw(cur)} kW of PV: {_why_not_export(problem, schedule, t, export_bound[t], currency)} and {_why_not_store(problem, soc)}"
    if exp > _ON:
        return "export_surplus", (
            f"Exporting {_kw(exp)} kW of PV surplus (sell {_amount(sell)} {currency}/kWh"
            f"{_why_pay_to_export(problem, sell)}); battery idle at SOC {_pct(soc)}"
        )
    if imp > _ON:
        if bess.max_discharge_kw <= _ON or problem.capacity_kwh <= 0:
            battery = "the battery cannot discharge"
        elif _at_most(s.energy[t], problem.energy_min_kwh, _energy_unit(problem)):
            battery = f"battery idle at its minimum, SOC {_pct(soc)}"
        elif dearer_later:
            battery = (
                f"battery idle at SOC {_pct(soc)}, its energy is worth more later today "
                f"(up to {_amount(dearest_later)} {currency}/kWh)"
            )
        elif problem.demand_charge_per_kw > 0 and peak_later:
            battery = f"battery idle at SOC {_pct(soc)}, kept to hold a later import peak down"
        elif not drawn_later and _at_most(s.energy[t], problem.energy_final_kwh, _energy_unit(problem)):
            # Energy discharged later today is not kept for the target, however low the battery.
            battery = f"battery idle at SOC {_pct(soc)}, kept for the end-of-day target of {target:.0%}"
        elif buy < 0:
            battery = f"battery idle at SOC {_pct(soc)}: discharging would only cut an import the site is paid for"
        elif buy <= bess.cycle_cost_per_kwh and (optimal or not _at_billed_peak(problem, s, imp)):
            # Energy above the target and never drawn on later has no use but this import (and,
            # at the day's peak import, the demand charge, which the MILP found not worth it
            # either: the peak is flat over intervals the battery cannot all cover).
            battery = (
                f"battery idle at SOC {_pct(soc)}: discharging would save no more on the import it "
                f"replaces{', the peak demand charge included,' if _at_billed_peak(problem, s, imp) else ''} than it costs in "
                f"battery wear ({_amount(bess.cycle_cost_per_kwh)} {currency}/kWh)"
            )
        elif drawn_later and optimal:
            # A tie: a later interval saves as much per kWh (the same price, or the same penalty
            # over the import limit), and the plan may use the energy in either.
            battery = f"battery idle at SOC {_pct(soc)}, its energy used later today, where it saves as much"
        elif drawn_later:
            battery = (
                f"battery idle at SOC {_pct(soc)}, its energy kept for later today "
                f"(discharged at up to {_amount(dearest_later)} {currency}/kWh)"
            )
        else:
            battery = f"battery idle at SOC {_pct(soc)}"
        over = f"; {_kw(imp - cap)} kW over the {cap:.1f} kW import limit" if cap is not None and imp > cap + 1e-3 else ""
        return "import_idle", f"Importing {_kw(imp)} kW for the load ({price}){over}; {battery}"
    return "idle", f"PV covers the load ({pv:.1f} kW PV, {load:.1f} kW load); battery idle at SOC {_pct(soc)}"


def _at_billed_peak(problem: DispatchProblem, s: Schedule, imp: float) -> bool:
    # Asked only of the few idle intervals it words: the day's peak is not worth finding for all.
    return problem.demand_charge_per_kw > 0 and imp >= float(s.grid_import.max()) - 1e-3


def _why_not_export(problem: DispatchProblem, s: Schedule, t: int, bound: float, currency: str) -> str:
    exp, imp, buy, sell = s.grid_export[t], s.grid_import[t], problem.buy[t], problem.sell[t]
    if exp > _ON and _at_least(exp, bound):
        return f"export is at its {bound:.1f} kW limit"
    if bound <= _ON:
        return "no export is allowed (0 kW limit)"
    if imp > _ON and buy < 0:
        return f"the site is paid to import instead (buy {_amount(buy)} {currency}/kWh)"
    if sell < 0:
        return f"exporting would cost more (sell {_amount(sell)} {currency}/kWh)"
    if sell == 0:
        return f"exporting would earn nothing (sell 0.00 {currency}/kWh)"
    return f"exporting {exp:.1f} kW of its {bound:.1f} kW limit (sell {_amount(sell)} {currency}/kWh)"


def _why_pay_to_export(problem: DispatchProblem, sell: float) -> str:
    """Why a plan pays to export rather than curtail: the objective weighs a curtailed kWh at
    `weights.curtail`, more than the price paid per exported kWh."""
    weights = problem.weights
    if sell >= 0 or not weights.cost * -sell < weights.curtail:
        return ""
    # The weight beside the price it is compared with: per unit of currency, as the price is
    # (a `cost` weight of 0.5 makes a curtail weight of 0.2 worth 0.40 a kWh, more than a -0.30
    # sell price). With `cost` 0 money is not weighed at all: the weight is in objective units.
    weighed = weights.curtail / weights.cost if weights.cost > 0 else weights.curtail
    return f": paying it costs less than curtailing, which the plan weighs at {_amount(weighed)} per kWh"


def _why_not_store(problem: DispatchProblem, soc: float) -> str:
    if problem.bess.max_charge_kw <= _ON or problem.capacity_kwh <= 0:
        return "the battery cannot charge"
    if soc >= problem.bess.soc_max - 1e-6:
        return f"the battery is full (SOC {_pct(soc)})"
    return f"storing it would not pay back before the day ends (SOC {_pct(soc)})"


def explain(
    problem: DispatchProblem,
    schedule: Schedule,
    marginal_cost_per_kwh: np.ndarray | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> list[Explanation]:
    expensive, cheap = price_quartiles(problem.buy)
    bands = price_bands(problem.buy, expensive, cheap)
    # Day-long arrays, built once per day rather than once per interval that reads them.
    export_bound = problem.export_bound_kw
    # The prices energy is used at: a dearer hour in which the battery stays idle is no reason.
    dearest_after = dearest_buy_after(np.where(schedule.discharge > battery_on(problem), problem.buy, -np.inf))
    binding = binding_constraints(problem, schedule, export_bound)
    spill_stored = SpillStored.of(problem, schedule, export_bound)
    peak_later = peak_held_after(problem, schedule)
    explanations = []
    for t in range(problem.intervals):
        code, reason = explain_interval(
            problem, schedule, t, expensive, bands, export_bound, dearest_after, currency, spill_stored,
            optimal=marginal_cost_per_kwh is not None, peak_held_later=peak_later,
        )
        if code != "curtail" and schedule.curtail[t] > _ON:
            reason += f"; {_kw(schedule.curtail[t])} kW of PV curtailed"
        explanations.append(
            Explanation(
                reason_code=code,
                reason=reason,
                binding=binding[t],
                marginal_cost_per_kwh=None if marginal_cost_per_kwh is None else float(marginal_cost_per_kwh[t]),
            )
        )
    return explanations
