"""Cost, violations and KPIs of any schedule, MILP or rule-based, measured the same way."""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Kpis, Schedule


def violations(problem: DispatchProblem, schedule: Schedule) -> dict[str, np.ndarray | float]:
    """The soft-constraint slacks the schedule implies, as the model defines them."""
    cap = problem.import_cap_kw
    energy = schedule.energy
    return {
        "viol_imp": np.zeros_like(energy) if cap is None else np.maximum(schedule.grid_import - cap, 0.0),
        "viol_lo": np.maximum(problem.energy_min_kwh - energy, 0.0),
        "viol_hi": np.maximum(energy - problem.energy_max_kwh, 0.0),
        "viol_end": max(problem.energy_final_kwh - float(energy[-1]), 0.0),
    }


def violation_kwh(problem: DispatchProblem, schedule: Schedule) -> float:
    v = violations(problem, schedule)
    return float(
        v["viol_imp"].sum() * problem.dt + v["viol_lo"].sum() + v["viol_hi"].sum() + v["viol_end"]
    )


def energy_cost(problem: DispatchProblem, grid_import: np.ndarray, grid_export: np.ndarray) -> tuple[float, float, float]:
    """(total, import cost, export revenue): the contract's total_cost for these grid flows."""
    dt = problem.dt
    import_cost = float(problem.buy @ grid_import) * dt
    export_revenue = float(problem.sell @ grid_export) * dt
    peak = float(grid_import.max(initial=0.0))
    return import_cost - export_revenue + problem.demand_charge_per_kw * peak, import_cost, export_revenue


def objective_value(problem: DispatchProblem, schedule: Schedule) -> float:
    w = problem.weights
    dt = problem.dt
    total_cost, _, _ = energy_cost(problem, schedule.grid_import, schedule.grid_export)
    cycling = problem.bess.cycle_cost_per_kwh * float(schedule.discharge.sum()) * dt
    return (
        w.cost * (total_cost + cycling)
        + w.curtail * float(schedule.curtail.sum()) * dt
        + w.violation * violation_kwh(problem, schedule)
    )


def baseline_cost(problem: DispatchProblem) -> float:
    """The same day with no battery: PV serves load, surplus exported up to the cap while sell >= 0."""
    net = problem.load_kw - problem.pv_kw
    grid_import = np.maximum(net, 0.0)
    cap = problem.limits.export_cap_kw
    surplus = np.maximum(-net, 0.0)
    exportable = surplus if cap is None else np.minimum(surplus, cap)
    grid_export = np.where(problem.sell >= 0, exportable, 0.0)
    return energy_cost(problem, grid_import, grid_export)[0]


def compute_kpis(problem: DispatchProblem, schedule: Schedule) -> Kpis:
    dt = problem.dt
    capacity = problem.capacity_kwh
    soc = schedule.soc(capacity)
    total_cost, import_cost, export_revenue = energy_cost(problem, schedule.grid_import, schedule.grid_export)
    total_import = float(schedule.grid_import.sum()) * dt
    total_load = float(problem.load_kw.sum()) * dt
    total_pv = float(problem.pv_kw.sum()) * dt
    total_curtail = float(schedule.curtail.sum()) * dt
    baseline = baseline_cost(problem)
    return Kpis(
        total_cost=total_cost,
        import_cost=import_cost,
        export_revenue=export_revenue,
        total_import_kwh=total_import,
        total_export_kwh=float(schedule.grid_export.sum()) * dt,
        total_curtail_kwh=total_curtail,
        peak_grid_import_kw=float(schedule.grid_import.max(initial=0.0)),
        peak_grid_export_kw=float(schedule.grid_export.max(initial=0.0)),
        avg_soc=float(soc.mean()),
        min_soc=float(soc.min()),
        max_soc=float(soc.max()),
        final_soc=float(soc[-1]),
        equivalent_full_cycles=float(schedule.discharge.sum()) * dt / capacity,
        self_sufficiency=1.0 if total_load <= 0 else min(1.0, max(0.0, 1.0 - total_import / total_load)),
        pv_utilization=1.0 if total_pv <= 0 else 1.0 - total_curtail / total_pv,
        violation_kwh=violation_kwh(problem, schedule),
        baseline_cost=baseline,
        savings_vs_baseline=baseline - total_cost,
    )
