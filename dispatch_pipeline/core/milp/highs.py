"""Solve the Pyomo model with HiGHS, adding integrality only where it can change the optimum.

The binaries `b` and `g` only forbid charging while discharging and importing while exporting.
Any solution of a relaxation in which no interval does either is feasible for the MILP, and so
optimal for it. So: solve the LP relaxation; where an interval charges and discharges (or imports
and exports) at once, make just that interval's binary integral and solve again. If conflicts
remain, the binaries interact, and one last round makes all of them integral. Most days need no
integer round at all, and most of the rest a MIP with a handful of binaries instead of 2T. The
answer is the MILP optimum (to the MIP gap), not a heuristic.

Finally the binaries are fixed and the LP is solved once more: that gives the exact schedule and
the duals of the balance rows (the marginal cost of load).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import pyomo.environ as pyo
from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.milp.model import build_model, discharge_column_unit
from dispatch_pipeline.core.milp.solution import (
    MilpFailure,
    MilpSolution,
    MilpTimeout,
    search_deadline,
)
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import Schedule

CONFLICT_KW = 1e-6
LARGEST_UNSCALED_COST = 2.0**20  # about 1e6

# The last optimal LP basis per site and matrix shape, in this process. Consecutive days of a site
# share their structure and look alike, so starting the simplex there takes about a seventh of the
# iterations of a cold start. The optimum is the same; only the path to it is shorter. Keyed by
# site too because a solver service interleaves the days of many sites; bounded because it lives
# as long as the service.
_last_basis: OrderedDict[tuple[str, int, int], highspy.HighsBasis] = OrderedDict()
BASIS_CACHE_SIZE = 1024
_FLOW_COLUMNS = ("pv_set", "curtail", "ch", "dis", "imp", "exp", "E", "b", "g")
# How a run ends when its time limit or the MIP interrupt stops it.
STOPPED = (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kInterrupt)


@dataclass
class _Compiled:
    """The Pyomo model in matrix form, with the column indices of each variable family."""

    lp: highspy.HighsLp
    offset: float
    columns: dict[str, np.ndarray]
    balance_rows: np.ndarray
    import_bound_rows: np.ndarray
    import_bound_lower: np.ndarray
    import_bound_upper: np.ndarray
    export_bound_rows: np.ndarray
    export_bound_lower: np.ndarray
    export_bound_upper: np.ndarray


def compile_model(model: pyo.ConcreteModel) -> _Compiled:
    form = LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)
    position = {id(var): i for i, var in enumerate(form.columns)}
    # A variable whose every coefficient is zero (a 0 kW rating, say) is left out of the matrix:
    # it is free and irrelevant, and -1 marks it.
    columns = {
        name: np.fromiter((position.get(id(v), -1) for v in getattr(model, name).values()), dtype=np.int32)
        for name in _FLOW_COLUMNS
    }
    inf = highspy.kHighsInf
    lower = np.array([-inf if v.lb is None else v.lb for v in form.columns], dtype=float)
    upper = np.array([inf if v.ub is None else v.ub for v in form.columns], dtype=float)
    sense = np.fromiter((row.bound_type for row in form.rows), dtype=np.int8, count=len(form.rows))
    rhs = np.asarray(form.rhs, dtype=float)
    row_lower = np.where(sense == 1, -inf, rhs)
    row_upper = np.where(sense == -1, inf, rhs)
    def rows_of(component: Any) -> np.ndarray:
        return np.array(
            [i for i, row in enumerate(form.rows) if row.constraint.parent_component() is component],
            dtype=np.int32,
        )

    matrix = form.A.tocsc()
    lp = highspy.HighsLp()
    lp.num_col_ = matrix.shape[1]
    lp.num_row_ = matrix.shape[0]
    lp.col_cost_ = form.c.toarray().ravel()
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_ = row_lower
    lp.row_upper_ = row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data
    offset = float(form.c_offset[0]) if len(form.c_offset) else 0.0
    import_rows = rows_of(model.grid_import)
    export_rows = rows_of(model.grid_export)
    return _Compiled(
        lp, offset, columns, rows_of(model.balance),
        import_rows, row_lower[import_rows], row_upper[import_rows],
        export_rows, row_lower[export_rows], row_upper[export_rows],
    )


def _new_highs(mip_rel_gap: float) -> highspy.Highs:
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("mip_rel_gap", mip_rel_gap)
    # Workers already run one solve per core; HiGHS's own threads would only contend with them.
    highs.setOptionValue("threads", 1)
    return highs


def _scale_objective(highs: highspy.Highs, lp: highspy.HighsLp) -> None:
    """Scale a model's costs into the range HiGHS's simplex copes with, by a power of two (exact,
    and undone in every value HiGHS reports).

    From costs of about 1e7 on (a buy price of -1e8 per kWh, within the contract's ±1e9), its
    simplex ends in "Solve error" and the day would fall back to the rule-based schedule.
    """
    largest = float(np.max(np.abs(lp.col_cost_), initial=0.0))
    if largest > LARGEST_UNSCALED_COST:
        highs.setOptionValue("user_objective_scale", -math.ceil(math.log2(largest / LARGEST_UNSCALED_COST)))


def _run(highs: highspy.Highs, deadline: float) -> highspy.HighsModelStatus:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MilpTimeout("time limit reached before the MILP could be solved")
    # HiGHS measures time_limit against the object's run time summed over every run() so far,
    # not from this call: the relaxation and earlier rounds have used part of it already.
    highs.setOptionValue("time_limit", highs.getRunTime() + remaining)
    highs.run()
    return highs.getModelStatus()


def _failed(status: highspy.HighsModelStatus) -> bool:
    """Neither an optimum nor a stop at the time limit: a numerical failure worth one retry."""
    return status not in STOPPED and status != highspy.HighsModelStatus.kOptimal


def _require_lp_optimum(highs: highspy.Highs, status: highspy.HighsModelStatus, what: str) -> None:
    if status in STOPPED:
        raise MilpTimeout(f"the time limit passed while HiGHS solved {what}")
    if status != highspy.HighsModelStatus.kOptimal:
        raise MilpFailure(f"HiGHS failed on {what} ({highs.modelStatusToString(status)})")


def _interrupt_mip_at(highs: highspy.Highs, deadline: float) -> None:
    """Stop the MIP search at `deadline` (time.monotonic()), keeping its incumbent.

    HiGHS's own time_limit alone lets a hard MIP run on to about twice its limit (seen with HiGHS
    1.16 on a 288-interval day: limits of 0.86 s and 2.93 s ended after 1.83 s and 5.95 s), past
    the moment the caller kills the worker, and the incumbent is lost with it.
    """
    highs.cbMipInterrupt += mip_interrupter(deadline)


def mip_interrupter(deadline: float, clock: Callable[[], float] = time.monotonic) -> Callable[[Any], None]:
    """A MIP interrupt callback that stops the search in time to keep its incumbent.

    HiGHS asks it a few dozen times a second, but not while a heuristic, a restart or a long node
    LP runs: on hard days gaps of 1-2 s between calls were seen at any point of the search. So
    once there is an incumbent to keep, it stops the search as soon as the next call could come
    after `deadline`, judged by the longest gap seen so far.
    """
    previous_call: float | None = None
    longest_gap = 0.0

    def stop_when_due(event: Any) -> None:
        nonlocal previous_call, longest_gap
        now = clock()
        if previous_call is not None:
            longest_gap = max(longest_gap, now - previous_call)
        previous_call = now
        has_incumbent = math.isfinite(event.data_out.mip_primal_bound)
        if now > deadline or (has_incumbent and now + longest_gap > deadline):
            event.interrupt()

    return stop_when_due


def relative_gap(objective: float, bound: float) -> float:
    """|objective - bound| / |objective|, as MIP solvers report it: 0 when both are 0, infinite
    when only the objective is."""
    if objective == bound:
        return 0.0
    return abs(objective - bound) / abs(objective) if objective != 0 else math.inf


def _values(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.where(index >= 0, x[index], 0.0)


def _conflicts(x: np.ndarray, cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    both_battery = np.minimum(_values(x, cols["ch"]), _values(x, cols["dis"])) > CONFLICT_KW
    both_grid = np.minimum(_values(x, cols["imp"]), _values(x, cols["exp"])) > CONFLICT_KW
    return np.flatnonzero(both_battery), np.flatnonzero(both_grid)


def _binaries_from_flows(x: np.ndarray, cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Binaries consistent with a conflict-free solution (ties go to whichever flow is larger)."""
    charge_allowed = (_values(x, cols["ch"]) >= _values(x, cols["dis"])).astype(float)
    import_allowed = (_values(x, cols["imp"]) >= _values(x, cols["exp"])).astype(float)
    return charge_allowed, import_allowed


def solve_fixed_binaries(
    problem: DispatchProblem,
    compiled: _Compiled,
    highs: highspy.Highs,
    charge_allowed: np.ndarray,
    import_allowed: np.ndarray,
    deadline: float,
) -> tuple[Schedule, float, np.ndarray]:
    """The LP with binaries fixed: exact flows, objective, and marginal cost of load per kWh."""
    cols = compiled.columns
    binaries = np.concatenate([cols["b"], cols["g"]])
    values = np.concatenate([charge_allowed, import_allowed])
    present = binaries >= 0
    binaries, values = binaries[present], values[present]
    highs.changeColsIntegrality(
        len(binaries), binaries, np.full(len(binaries), highspy.HighsVarType.kContinuous, dtype=np.uint8)
    )
    highs.changeColsBounds(len(binaries), binaries, values, values)
    # Where importing is allowed, exporting is not, and the balance with the charge rating already
    # holds the import to I_t (load plus full charging). The row is kept out: binding beside the
    # charge rating when grid charging runs at full rating, it made the balance row's dual (the
    # marginal cost of load) take the price of another interval.
    # From the model's own bounds each time: an earlier call with other binaries relaxed other rows.
    rows = compiled.import_bound_rows
    highs.changeRowsBounds(len(rows), rows, compiled.import_bound_lower, compiled.import_bound_upper)
    redundant = rows[import_allowed > 0.5]
    highs.changeRowsBounds(
        len(redundant), redundant, np.full(len(redundant), -highspy.kHighsInf), np.full(len(redundant), highspy.kHighsInf)
    )
    # Where exporting is allowed, its row goes back to the contract's X_t. The model's tighter
    # bound (PV plus the most the battery can deliver in the interval) cuts nothing the energy
    # rows do not, but it binds wherever a battery empties into the grid, and the balance row's
    # dual then came out at a tenth of the sell price that interval's export earns.
    export_upper = compiled.export_bound_upper.copy()
    exporting = import_allowed < 0.5
    export_upper[exporting] = problem.export_bound_kw[exporting]
    highs.changeRowsBounds(
        len(compiled.export_bound_rows), compiled.export_bound_rows, compiled.export_bound_lower, export_upper
    )
    status = _run(highs, deadline)
    if _failed(status):
        # The MIP's search state (or another day's basis) left behind must not decide the answer.
        highs.clearSolver()
        status = _run(highs, deadline)
    _require_lp_optimum(highs, status, "the LP with binaries fixed")
    answer = _fixed_answer(problem, compiled, highs)
    if _leaks_tolerance(problem, answer):
        answer = _polished(problem, compiled, highs, deadline, answer)
    return answer


def _fixed_answer(
    problem: DispatchProblem, compiled: _Compiled, highs: highspy.Highs
) -> tuple[Schedule, float, np.ndarray]:
    """The schedule, objective and marginal cost of load of the LP HiGHS has just solved."""
    solution = highs.getSolution()
    x = np.asarray(solution.col_value)
    duals = np.asarray(solution.row_dual)[compiled.balance_rows]
    objective = highs.getInfo().objective_function_value + compiled.offset
    cost_weight = problem.weights.cost or 1.0
    marginal = duals / (problem.dt * cost_weight)
    return _schedule(x, compiled.columns, discharge_column_unit(problem)), objective, marginal


def _leaks_tolerance(problem: DispatchProblem, answer: tuple[Schedule, float, np.ndarray]) -> bool:
    """Whether the schedule, judged as a plan is (objective_value), costs more than HiGHS's own
    objective said: its answer used the feasibility tolerance.

    HiGHS holds every row and bound to within an absolute 1e-7. On a day whose powers are of that
    size (loads of 1e-7 kW) its optimum can serve the load with a charge of -1e-7 kW and move the
    stored energy by a few 1e-8 kWh with no flow at all; the schedule clips the negative flows to
    0 and keeps that energy. In a zero-width band (soc_min == soc_max) every such kWh is soft
    violation at the `violation` weight, which the solver never paid (its slack rows held within
    the tolerance too): the plan was judged dearer than the rule-based one and fell back with a
    false "solver failed".
    """
    schedule, objective, _ = answer
    judged = objective_value(problem, schedule)
    return judged > objective + 1e-9 * max(1.0, abs(objective))


# HiGHS's smallest feasibility tolerances: a hundredth of a millionth of a watt.
POLISH_TOLERANCE = 1e-10


def _polished(
    problem: DispatchProblem,
    compiled: _Compiled,
    highs: highspy.Highs,
    deadline: float,
    answer: tuple[Schedule, float, np.ndarray],
) -> tuple[Schedule, float, np.ndarray]:
    """The LP with binaries fixed solved again from its optimal basis at HiGHS's tightest
    tolerances, without presolve (whose postsolve holds values to the default tolerance only);
    `answer` when that fails or judges no cheaper. The same LP, solved more exactly: a few
    iterations from the basis in hand."""
    names = ("primal_feasibility_tolerance", "dual_feasibility_tolerance", "presolve")
    saved = {name: highs.getOptionValue(name)[1] for name in names}
    try:
        highs.setOptionValue("primal_feasibility_tolerance", POLISH_TOLERANCE)
        highs.setOptionValue("dual_feasibility_tolerance", POLISH_TOLERANCE)
        highs.setOptionValue("presolve", "off")
        try:
            status = _run(highs, deadline)
        except MilpTimeout:
            return answer
        if status != highspy.HighsModelStatus.kOptimal:
            return answer
        polished = _fixed_answer(problem, compiled, highs)
    finally:
        for name, value in saved.items():
            highs.setOptionValue(name, value)
    if objective_value(problem, polished[0]) < objective_value(problem, answer[0]):
        return polished
    return answer


FixedPlan = tuple[Schedule, float, np.ndarray]  # solve_fixed_binaries' answer


def no_dearer_than_the_rules(
    problem: DispatchProblem, compiled: _Compiled, highs: highspy.Highs, plan: FixedPlan, deadline: float
) -> tuple[FixedPlan, float]:
    """`plan` (solve_fixed_binaries' answer), or the LP over the rule-based schedule's binaries
    when that is cheaper; and the rule-based schedule's objective, which the caller compares the
    plan with as it is judged.

    A MIP solver stops within its relative gap of the bound; on a day whose objective is mostly
    unavoidable penalties, that slack can be more than the rule-based schedule saves. The rules'
    plan is feasible with its own binaries fixed, so that LP costs at most what the rules do.

    Plans are compared by the solver's objective or as they are judged (objective_value),
    whichever is higher: one that leans on HiGHS's feasibility tolerance (loads of 1e-7 kW in a
    zero-width band) reports less than it costs, and the rules' binaries are then the way to an
    honest plan.
    """
    objective = _dearest_reading(problem, plan)
    rules = rule_based_schedule(problem)
    rules_objective = objective_value(problem, rules)
    if not rules_objective < objective - 1e-9 * max(1.0, abs(objective)):
        return plan, rules_objective
    # Whichever flow the rules use is allowed, however small: a discharge of a millionth of a kW
    # (a discharge efficiency of 1e-6 makes such flows worth having) must stay possible.
    charge_allowed = (rules.charge >= rules.discharge).astype(float)
    import_allowed = (rules.grid_import >= rules.grid_export).astype(float)
    try:
        # By the deadline itself: the plan in hand must not be lost to the worker's kill.
        candidate = solve_fixed_binaries(problem, compiled, highs, charge_allowed, import_allowed, deadline)
    except (MilpTimeout, MilpFailure):
        return plan, rules_objective
    # The reported gap is measured from the plan returned, against the search's bound (solve_with_highs).
    cheaper = _dearest_reading(problem, candidate) < objective
    return (candidate if cheaper else plan), rules_objective


def plan_from_binaries(
    problem: DispatchProblem,
    compiled: _Compiled,
    highs: highspy.Highs,
    charge_allowed: np.ndarray,
    import_allowed: np.ndarray,
    deadline: float,
) -> tuple[FixedPlan, float]:
    """The plan of a MIP's binaries, HiGHS's or CBC's: the LP with them fixed, or the LP over the
    rule-based schedule's when that is cheaper; and the rules' objective (no_dearer_than_the_rules)."""
    # The fixed-binary LP is small and warm (milliseconds); give it a moment past the deadline
    # rather than lose an incumbent the MIP already paid for. The MIP stopped MIP_FINISH_RESERVE_S
    # early, and the caller kills the worker KILL_GRACE_S (0.25 s) after the deadline: 0.15 s fits.
    fixed = solve_fixed_binaries(
        problem, compiled, highs, charge_allowed, import_allowed, max(deadline, time.monotonic() + 0.15)
    )
    return no_dearer_than_the_rules(problem, compiled, highs, fixed, deadline)


def _dearest_reading(problem: DispatchProblem, plan: FixedPlan) -> float:
    """A plan's cost: the solver's objective, or the schedule as it is judged when that is more."""
    return max(plan[1], objective_value(problem, plan[0]))


def _schedule(x: np.ndarray, cols: dict[str, np.ndarray], discharge_unit: float) -> Schedule:
    def flow(name: str) -> np.ndarray:
        # Solver tolerances leave values like -1e-12 on nonnegative flows; they are zero.
        return np.maximum(_values(x, cols[name]), 0.0)

    return Schedule(
        pv_set=flow("pv_set"),
        curtail=flow("curtail"),
        charge=flow("ch"),
        discharge=flow("dis") * discharge_unit,
        grid_import=flow("imp"),
        grid_export=flow("exp"),
        energy=flow("E"),
    )


def solve_with_highs(
    problem: DispatchProblem, deadline: float, mip_rel_gap: float = 1e-4
) -> MilpSolution:
    model = build_model(problem)
    compiled = compile_model(model)
    cols = compiled.columns
    highs = _new_highs(mip_rel_gap)
    mip_stop = search_deadline(deadline)
    _interrupt_mip_at(highs, mip_stop)
    highs.passModel(compiled.lp)
    _scale_objective(highs, compiled.lp)
    basis_key = (problem.site_id, compiled.lp.num_col_, compiled.lp.num_row_)
    warm = basis_key in _last_basis
    if warm:
        highs.setBasis(_last_basis[basis_key])
    status = _run(highs, deadline)
    if warm and _failed(status):
        # Another day's basis must never decide a request's outcome: start cold, as the first
        # request of the site would.
        highs.clearSolver()
        status = _run(highs, deadline)
    _require_lp_optimum(highs, status, "the LP relaxation")
    # No plan costs less than the relaxation: a bound on how far a time-limited plan may be off
    # even when the MIP search stops before it has one of its own.
    relaxation_bound = highs.getInfo().objective_function_value + compiled.offset
    _last_basis[basis_key] = highs.getBasis()
    _last_basis.move_to_end(basis_key)
    if len(_last_basis) > BASIS_CACHE_SIZE:
        _last_basis.popitem(last=False)
    x = np.asarray(highs.getSolution().col_value)

    integral = np.zeros(problem.intervals * 2, dtype=bool)  # b then g
    rounds = 0
    termination = "optimal"
    mip_gap = 0.0
    search_bound = -math.inf  # the time-limited search's own bound, when it has one
    while True:
        battery_conflicts, grid_conflicts = _conflicts(x, cols)
        newly = np.concatenate([battery_conflicts, grid_conflicts + problem.intervals])
        newly = newly[~integral[newly]]
        if len(newly) == 0 or termination == "time_limit":
            break
        # Conflicts that move elsewhere once the first ones are forbidden, or that cover much of
        # the day, mean the binaries interact: then one MIP with all of them beats many rounds.
        if rounds >= 1 or len(newly) > problem.intervals // 4:
            newly = np.flatnonzero(~integral)
        integral[newly] = True
        binary_cols = np.concatenate([cols["b"], cols["g"]])[newly]
        binary_cols = binary_cols[binary_cols >= 0]
        highs.changeColsIntegrality(
            len(binary_cols),
            binary_cols,
            np.full(len(binary_cols), highspy.HighsVarType.kInteger, dtype=np.uint8),
        )
        rounds += 1
        status = _run(highs, mip_stop)
        if _failed(status):
            # Seen with a battery of 1e-6 kWh beside loads of hundreds of kW: HiGHS's MIP presolve
            # ends in "Solve error" on a model it solves without it.
            highs.setOptionValue("presolve", "off")
            highs.clearSolver()
            status = _run(highs, mip_stop)
        info = highs.getInfo()
        stopped = status in STOPPED
        if status == highspy.HighsModelStatus.kOptimal:
            mip_gap = max(mip_gap, float(info.mip_gap))
        elif stopped and info.primal_solution_status == 2:
            termination = "time_limit"
            search_bound = float(info.mip_dual_bound) + compiled.offset
        elif stopped:
            raise MilpTimeout("the MILP time limit passed without a feasible schedule")
        else:
            raise MilpFailure(f"HiGHS failed on the MILP ({highs.modelStatusToString(status)})")
        x = np.asarray(highs.getSolution().col_value)

    charge_allowed, import_allowed = _binaries_from_flows(x, cols)
    (schedule, objective, marginal), rules_objective = plan_from_binaries(
        problem, compiled, highs, charge_allowed, import_allowed, deadline
    )
    if termination == "time_limit":
        # Relative to the plan's objective, not to the incumbent's that HiGHS's own mip_gap is
        # measured from: the LP over the incumbent's binaries, or over the rules', can cost less.
        mip_gap = min(relative_gap(objective, search_bound), relative_gap(objective, relaxation_bound))
    return MilpSolution(
        schedule=schedule,
        objective_value=objective,
        mip_gap=mip_gap,
        termination=termination,
        marginal_cost_per_kwh=marginal,
        integer_rounds=rounds,
        rules_objective=rules_objective,
    )
