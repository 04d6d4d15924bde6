"""The contract's MILP in Pyomo, term for term, with the big-M constants no larger than the
battery can use (the same feasible set, better numerics).

Constraints are written as explicit `LinearExpression`s rather than with operator overloading:
the model is identical, and building it takes about half the time, which matters when a whole
solve is budgeted at a few tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression

from dispatch_pipeline.core.problem import DispatchProblem

PER_INTERVAL_VARIABLES = (
    "pv_set",
    "curtail",
    "ch",
    "dis",
    "imp",
    "exp",
    "viol_imp",
    "viol_lo",
    "viol_hi",
)


# Less power than this, below every solver tolerance, is no power at all.
NEGLIGIBLE_KW = 1e-9


# Below this discharge efficiency the discharge column holds the power drawn from the cells.
DRAWN_COLUMN_BELOW = 1e-2


def discharge_column_unit(problem: DispatchProblem) -> float:
    """Delivered kW per unit of the `dis` column: 1, or the discharge efficiency when the column
    holds the kW drawn from the cells.

    With an efficiency of 1e-6 the energy row's coefficient dt / efficiency (2.5e5) turns
    HiGHS's tolerance on the delivered power into kWh of error in the stored energy, and its
    MIP called plans three times the optimum optimal. Drawn power keeps that coefficient at dt
    (the same model, exactly).
    """
    efficiency = problem.bess.discharge_efficiency
    return efficiency if efficiency < DRAWN_COLUMN_BELOW else 1.0


def _linear(coefs: list[float], variables: list) -> LinearExpression:
    return LinearExpression(linear_coefs=coefs, linear_vars=variables)


def build_model(problem: DispatchProblem) -> pyo.ConcreteModel:
    T = problem.intervals
    dt = problem.dt
    bess = problem.bess
    capacity = problem.capacity_kwh
    load = problem.load_kw.tolist()
    pv = problem.pv_kw.tolist()
    # The big-M of every on/off pair at the most the battery can physically move in an interval:
    # a full battery emptied, an empty one filled (0 <= E <= C, one direction per interval). Exact
    # for the contract's model, and with a rating of 1e9 kW beside a 100 kWh battery, M = 1e9
    # let HiGHS stop at a plan 40 % off the optimum and call it optimal.
    gain = bess.charge_efficiency * dt  # 0 when a valid but absurd efficiency (5e-324) underflows
    max_charge = min(bess.max_charge_kw, capacity / gain) if gain else bess.max_charge_kw
    max_discharge = min(bess.max_discharge_kw, capacity * bess.discharge_efficiency / dt)
    import_bound = (problem.load_kw + max_charge).tolist()  # I_t with the charging the battery can take
    export_bound = np.minimum(problem.export_bound_kw, problem.pv_kw + max_discharge).tolist()

    m = pyo.ConcreteModel(name=f"dispatch_{problem.site_id}_{problem.day.date}")
    m.T = pyo.RangeSet(0, T - 1)
    for name in PER_INTERVAL_VARIABLES:
        m.add_component(name, pyo.Var(m.T, domain=pyo.NonNegativeReals, dense=True))
    m.E = pyo.Var(m.T, bounds=(0.0, capacity), dense=True, doc="stored energy, kWh")
    m.b = pyo.Var(m.T, domain=pyo.Binary, dense=True, doc="1 = charging allowed")
    m.g = pyo.Var(m.T, domain=pyo.Binary, dense=True, doc="1 = importing allowed")
    m.peak = pyo.Var(domain=pyo.NonNegativeReals)
    m.viol_end = pyo.Var(domain=pyo.NonNegativeReals)

    pv_set, curtail, ch, dis, imp, exp, viol_imp, viol_lo, viol_hi, E, b, g = (
        list(getattr(m, name).values())
        for name in (*PER_INTERVAL_VARIABLES, "E", "b", "g")
    )

    unit = discharge_column_unit(problem)
    m.balance = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, unit, 1, -1, -1], [pv_set[t], dis[t], imp[t], ch[t], exp[t]]) == load[t]
    )
    m.pv = pyo.Constraint(m.T, rule=lambda _, t: _linear([1, 1], [pv_set[t], curtail[t]]) == pv[t])

    drain = dt / bess.discharge_efficiency * unit
    if max_discharge < NEGLIGIBLE_KW:
        # A discharge efficiency of 1e-16: at most 1e-14 kW of power, through a coefficient below
        # what HiGHS keeps in a matrix (1e-9). Such a battery delivers nothing.
        for flow in dis:
            flow.fix(0.0)
        drain = 0.0

    def energy(_, t):
        if t == 0:
            return _linear([1, -gain, drain], [E[0], ch[0], dis[0]]) == problem.energy_initial_kwh
        return _linear([1, -1, -gain, drain], [E[t], E[t - 1], ch[t], dis[t]]) == 0

    m.energy = pyo.Constraint(m.T, rule=energy)
    m.soc_min = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, 1], [E[t], viol_lo[t]]) >= problem.energy_min_kwh
    )
    m.soc_max = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, -1], [E[t], viol_hi[t]]) <= problem.energy_max_kwh
    )
    m.terminal = pyo.Constraint(
        expr=_linear([1, 1], [E[T - 1], m.viol_end]) >= problem.energy_final_kwh
    )

    m.charge_rating = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, -max_charge], [ch[t], b[t]]) <= 0
    )
    m.discharge_rating = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, max_discharge / unit], [dis[t], b[t]]) <= max_discharge / unit
    )
    m.grid_import = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, -import_bound[t]], [imp[t], g[t]]) <= 0
    )
    m.grid_export = pyo.Constraint(
        m.T, rule=lambda _, t: _linear([1, export_bound[t]], [exp[t], g[t]]) <= export_bound[t]
    )
    import_cap = problem.import_cap_kw
    if import_cap is not None:
        m.import_cap = pyo.Constraint(
            m.T, rule=lambda _, t: _linear([1, -1], [imp[t], viol_imp[t]]) <= import_cap
        )
    m.peak_import = pyo.Constraint(m.T, rule=lambda _, t: _linear([1, -1], [imp[t], m.peak]) <= 0)

    w = problem.weights
    buy = problem.buy.tolist()
    sell = problem.sell.tolist()
    cycle = bess.cycle_cost_per_kwh
    coefs = (
        [w.cost * buy[t] * dt for t in range(T)]
        + [-w.cost * sell[t] * dt for t in range(T)]
        + [w.cost * cycle * dt * unit] * T
        + [w.curtail * dt] * T
        + [w.violation * dt] * T
        + [w.violation] * (2 * T)
        + [w.cost * problem.demand_charge_per_kw, w.violation]
    )
    variables = [*imp, *exp, *dis, *curtail, *viol_imp, *viol_lo, *viol_hi, m.peak, m.viol_end]
    m.objective = pyo.Objective(expr=_linear(coefs, variables), sense=pyo.minimize)
    return m
