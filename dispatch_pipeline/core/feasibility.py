"""Check a schedule against every hard constraint of the model.

Used on every MILP answer before it becomes the plan (one that fails falls back to the rules), by
the pipeline's blocking asset checks and by the tests on every schedule they see: a plan that fails
here must never reach a site.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

# Solvers stop at feasibility tolerances around 1e-7 relative; a kW-scale plan is judged at 1e-5.
TOLERANCE = 1e-5
# The most a plan's state of charge may stray outside [0, 1], as a fraction of capacity.
SOC_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Breach:
    check: str
    interval: int
    detail: str
    local_start: str = ""  # "10:00", the interval's start on the site's clock

    def __str__(self) -> str:
        at = f"{self.local_start} (interval {self.interval})" if self.local_start else f"interval {self.interval}"
        return f"{self.check} at {at}: {self.detail}"


ENERGY_CHECKS = ("energy_dynamics", "physical_soc")
CHECKS = (
    "power_balance",
    "pv_split",
    "nonnegative_flows",
    "energy_dynamics",
    "physical_soc",
    "charge_rating",
    "discharge_rating",
    "export_cap",
    "import_bound",
    "no_simultaneous_charge_discharge",
    "no_simultaneous_import_export",
)


def find_breaches(problem: DispatchProblem, schedule: Schedule) -> list[Breach]:
    s = schedule
    bess = problem.bess
    previous = np.concatenate([[problem.energy_initial_kwh], s.energy[:-1]])
    expected_energy = previous + (bess.charge_efficiency * s.charge - s.discharge / bess.discharge_efficiency) * problem.dt
    flows = np.stack([s.pv_set, s.curtail, s.charge, s.discharge, s.grid_import, s.grid_export])

    residuals = {
        "power_balance": np.abs(s.pv_set + s.discharge + s.grid_import - problem.load_kw - s.charge - s.grid_export),
        "pv_split": np.abs(s.pv_set + s.curtail - problem.pv_kw),
        "nonnegative_flows": np.maximum(-flows.min(axis=0), 0.0),
        "energy_dynamics": np.abs(s.energy - expected_energy),
        "physical_soc": np.maximum(np.maximum(-s.energy, s.energy - problem.capacity_kwh), 0.0),
        "charge_rating": np.maximum(s.charge - bess.max_charge_kw, 0.0),
        "discharge_rating": np.maximum(s.discharge - bess.max_discharge_kw, 0.0),
        "export_cap": np.maximum(s.grid_export - problem.export_bound_kw, 0.0),
        "import_bound": np.maximum(s.grid_import - problem.import_bound_kw, 0.0),
        "no_simultaneous_charge_discharge": np.minimum(s.charge, s.discharge),
        "no_simultaneous_import_export": np.minimum(s.grid_import, s.grid_export),
    }
    scales = _scales(problem, flows)
    breaches = []
    for check in CHECKS:
        # Not `> tolerance`: a NaN compares false both ways, and a schedule holding one is no plan.
        bad = np.flatnonzero(~(residuals[check] <= TOLERANCE * scales[check]))
        unit = "kWh" if check in ENERGY_CHECKS else "kW"
        breaches.extend(
            Breach(check, int(t), _off_by(residuals[check][t], unit), _local_start(problem, int(t))) for t in bad
        )
    return breaches


def _local_start(problem: DispatchProblem, t: int) -> str:
    start = problem.day.start_utc + dt.timedelta(minutes=problem.day.resolution_minutes * t)
    return start.astimezone(ZoneInfo(problem.day.timezone)).strftime("%H:%M")


def _scales(problem: DispatchProblem, flows: np.ndarray) -> dict[str, np.ndarray | float]:
    """What each residual is relative to: the quantities of its own constraint, at least 1.

    One scale for every check (the day's largest load or PV) let a site with a large load pass a
    battery that breaks its own, small, rating or energy balance.
    """
    bess = problem.bess
    # Per interval: the largest term of the power balance, the flows included (fmax: a NaN flow is
    # a breach of its own, and must not make every other check of its interval fail too).
    power = np.fmax.reduce([np.ones(problem.intervals), *flows, problem.load_kw, problem.pv_kw])
    # The interval's own charge and discharge: scaled by the ratings instead, a battery rated at
    # 1e9 kW could charge and discharge 10 MW at once and pass.
    battery_power = np.fmax.reduce([np.ones(problem.intervals), flows[2], flows[3]])
    energy = max(1.0, problem.capacity_kwh)
    return {
        "power_balance": power,
        "pv_split": power,
        "nonnegative_flows": power,
        "energy_dynamics": energy,
        # In kWh as well, but never more than SOC_TOLERANCE of the battery: below 10 Wh, 1e-5 kWh
        # is a sizeable part of it, and a solver paid to import stored it past full (SOC 8.5 in a
        # battery of 1e-9 kWh, passed as physical).
        "physical_soc": min(energy, SOC_TOLERANCE / TOLERANCE * problem.capacity_kwh),
        "charge_rating": max(1.0, bess.max_charge_kw),
        "discharge_rating": max(1.0, bess.max_discharge_kw),
        "export_cap": np.maximum(1.0, problem.export_bound_kw),
        "import_bound": np.maximum(1.0, problem.import_bound_kw),
        "no_simultaneous_charge_discharge": battery_power,
        "no_simultaneous_import_export": power,
    }


def _off_by(residual: float, unit: str) -> str:
    return f"off by {residual:.6g} {unit}" if np.isfinite(residual) else "not a number"
