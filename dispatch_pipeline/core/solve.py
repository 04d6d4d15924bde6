"""solve_dispatch: one site-day in, the contract's result out. Never without a plan."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dispatch_pipeline.core.evaluate import compute_kpis, objective_value
from dispatch_pipeline.core.explain import explain
from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.milp import (
    MilpFailure,
    MilpSolution,
    MilpTimeout,
    SolverUnavailable,
    check_solver,
    require_cbc,
    require_highs,
)
from dispatch_pipeline.core.problem import DispatchProblem, build_problem
from dispatch_pipeline.core.request import DispatchRequest, RequestError, field_problems
from dispatch_pipeline.core.result import (
    NO_STORED_INPUTS,
    DispatchResult,
    InputIssues,
    Point,
    Schedule,
)
from dispatch_pipeline.core.runner import SolverPool, default_runner
from dispatch_pipeline.core.tariffs import DEFAULT_CURRENCY

# Past timeout_ms the caller waits this long for a result already on its way (the fixed-binary LP
# after a MIP, the pipe), then kills the worker. Fallback and explanation follow within a few ms,
# which keeps the contract's bound of timeout_ms + 0.5 s.
KILL_GRACE_S = 0.25


@dataclass(frozen=True)
class Outcome:
    """Which schedule was chosen and how: the part of a result that is not arithmetic on it."""

    schedule: Schedule
    status: str
    solver: str
    fallback_reason: str | None
    milp: MilpSolution | None


class SolveClock:
    """A solve's milliseconds, from when a worker takes the problem (`mark`, the `on_start` hook
    of a pool): starting a worker, or waiting for a busy one, is not solve time."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def mark(self) -> None:
        self._started = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000


def missing_solver(solver: str) -> str | None:
    """Why `solver` cannot run on this machine (CBC is an optional install; HiGHS, which every
    MILP plan needs, may be missing too), or None.

    A missing solver is one of the contract's reasons to fall back: the site still gets a plan.
    """
    try:
        if solver == "cbc":
            require_cbc()
        require_highs(solver)
    except SolverUnavailable as exc:
        return str(exc).removeprefix("solver: ")
    return None


def rule_based_outcome(problem: DispatchProblem) -> Outcome:
    """The rule-based schedule where the MILP was not asked for (use_milp false)."""
    return Outcome(rule_based_schedule(problem), "ok", "rule_based", None, None)


def fallback_outcome(problem: DispatchProblem, reason: str) -> Outcome:
    """The rule-based schedule standing in for a MILP that failed for `reason`."""
    return Outcome(rule_based_schedule(problem), "fallback", "fallback_rule", reason, None)


def attempt_milp(
    problem: DispatchProblem,
    solver: str = "highs",
    runner: SolverPool | None = None,
    on_start: Callable[[], None] | None = None,
) -> Outcome | str:
    """The MILP step under its hard timeout: the chosen outcome, or why it must fall back.

    A time limit hit with an incumbent keeps the incumbent only when it beats the rule-based
    schedule, as the contract's outcome table says. `on_start` is called when a worker takes the
    problem: the timeout runs from then, not while a worker starts or is busy with another.
    """
    check_solver(solver)
    if (missing := missing_solver(solver)) is not None:
        return f"solver missing: {missing}"
    runner = runner or default_runner()
    try:
        milp = runner.solve(problem, solver, problem.timeout_ms / 1000, KILL_GRACE_S, on_start)
    except MilpTimeout as exc:
        return f"timeout: {exc}"
    except MilpFailure as exc:
        return f"solver failed: {exc}"
    # The solver's own tolerances are relative to its scaled model: with extreme parameters (a
    # discharge efficiency of 1e-6 multiplies a -5e-9 kW discharge into 90 % of a small battery)
    # its answer can break the model as the plan is judged. Such a plan must not reach a site.
    breaches = find_breaches(problem, milp.schedule)
    if breaches:
        more = f" (and {len(breaches) - 1} more)" if len(breaches) > 1 else ""
        return f"solver failed: its schedule breaks the model: {breaches[0]}{more}"
    # The MILP's plan never costs more than the rules', judged as the plan is (not by the
    # solver's objective): a time limit's incumbent, a 10 Wh battery at the edge of the solver's
    # tolerances, weights nine orders apart that sink the energy costs below HiGHS's dual
    # tolerance, a battery whose discharge the model had to fix at zero. The worker costed the
    # rules' schedule beside its plan; it is built here only when nothing did.
    milp_cost = objective_value(problem, milp.schedule)
    rules_cost = milp.rules_objective
    if rules_cost is None:
        rules_cost = objective_value(problem, rule_based_schedule(problem))
    if rules_cost < milp_cost - 1e-9 * max(1.0, abs(milp_cost)):
        if milp.termination == "time_limit":
            return "timeout: the MILP's best schedule at the time limit was worse than the rule-based one"
        return (
            f"solver failed: its schedule costs {milp_cost:.6g}, more than the rule-based one's "
            f"{rules_cost:.6g}, as the plan is judged"
        )
    return Outcome(milp.schedule, "ok", "milp", None, milp)


def choose_schedule(
    problem: DispatchProblem,
    solver: str = "highs",
    runner: SolverPool | None = None,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """Run the MILP under the hard timeout; hand over to the rule-based schedule when it fails."""
    if not problem.use_milp:
        return rule_based_outcome(problem)
    attempt = attempt_milp(problem, solver, runner, on_start)
    return fallback_outcome(problem, attempt) if isinstance(attempt, str) else attempt


def assemble_result(
    problem: DispatchProblem,
    outcome: Outcome,
    solve_ms: float,
    milp_solver: str | None,
    currency: str = DEFAULT_CURRENCY,
    issues: InputIssues = NO_STORED_INPUTS,
) -> DispatchResult:
    schedule = outcome.schedule
    marginal = outcome.milp.marginal_cost_per_kwh if outcome.milp else None
    explanations = explain(problem, schedule, marginal, currency)
    soc = schedule.soc(problem.capacity_kwh)
    timestamps = problem.day.iso_timestamps()
    # + 0.0 turns a -0.0 (a min() of -0.0 and 0.0 in the rules) into the 0.0 it means.
    columns = zip(
        timestamps,
        (schedule.pv_set + 0.0).tolist(),
        (schedule.charge + 0.0).tolist(),
        (schedule.discharge + 0.0).tolist(),
        (schedule.grid_import + 0.0).tolist(),
        (schedule.grid_export + 0.0).tolist(),
        (schedule.curtail + 0.0).tolist(),
        (soc + 0.0).tolist(),
        explanations,
        strict=True,
    )
    points = [
        Point.model_construct(
            ts=ts,
            pv_set_kw=pv_set,
            batt_ch_kw=ch,
            batt_dis_kw=dis,
            grid_imp_kw=imp,
            grid_exp_kw=exp,
            curtail_kw=cur,
            soc=s,
            reason=e.reason,
            reason_code=e.reason_code,
            binding=e.binding,
            marginal_cost_per_kwh=e.marginal_cost_per_kwh,
        )
        for ts, pv_set, ch, dis, imp, exp, cur, s, e in columns
    ]
    milp = outcome.milp
    return DispatchResult(
        run_id=uuid.uuid4(),
        site_id=problem.site_id,
        date=problem.day.date,
        timezone=problem.day.timezone,
        resolution_minutes=problem.day.resolution_minutes,
        status=outcome.status,
        solver=outcome.solver,
        fallback_used=outcome.status == "fallback",
        fallback_reason=outcome.fallback_reason,
        milp_solver=milp_solver,
        # HiGHS reports an infinite gap when a time-limited search has no finite bound: unknown.
        mip_gap=None if milp is None or not np.isfinite(milp.mip_gap) else milp.mip_gap,
        objective_value=objective_value(problem, schedule),
        kpis=compute_kpis(problem, schedule),
        solve_ms=solve_ms,
        timeout_ms=problem.timeout_ms,
        objective_config=problem.weights,
        forecast_issued_at=issues.forecast,
        prices_issued_at=issues.prices,
        forecast_stored_at=issues.forecast_stored,
        prices_stored_at=issues.prices_stored,
        site_updated_at=issues.site_updated,
        points=points,
    )


def solve_problem(
    problem: DispatchProblem,
    *,
    solver: str = "highs",
    runner: SolverPool | None = None,
    currency: str = DEFAULT_CURRENCY,
    issues: InputIssues = NO_STORED_INPUTS,
) -> DispatchResult:
    """Plan a built problem; `issues` says when the stored series it was built from were issued
    (and its site's registration changed)."""
    clock = SolveClock()
    outcome = choose_schedule(problem, solver, runner, on_start=clock.mark)
    solve_ms = clock.elapsed_ms()
    return assemble_result(problem, outcome, solve_ms, solver if problem.use_milp else None, currency, issues)


def with_overrides(
    request: DispatchRequest | dict, *, timeout_ms: int | None = None, use_milp: bool | None = None
) -> DispatchRequest | dict:
    """The request with a caller's `timeout_ms` and `use_milp` in place of its own (None: keep)."""
    overrides: dict[str, Any] = {}
    if timeout_ms is not None:
        overrides["timeout_ms"] = timeout_ms
    if use_milp is not None:
        overrides["use_milp"] = use_milp
    if not overrides:
        return request
    raw = request.model_dump() if isinstance(request, DispatchRequest) else request
    if not isinstance(raw, dict):
        return request  # not a request at all: validation says so
    # An override replaces the request's value, it does not excuse it: a request that says
    # `"timeout_ms": "fast"` is refused with or without a flag.
    replaced = [key for key in overrides if key in raw]
    problems = field_problems({key: raw[key] for key in replaced})
    if problems:
        raise RequestError(problems)
    # Validated with the rest when the problem is built: a bad override is named like the
    # request's own values.
    return {**raw, **overrides}


def solve_dispatch(
    request: DispatchRequest | dict,
    *,
    solver: str = "highs",
    timeout_ms: int | None = None,
    use_milp: bool | None = None,
    runner: SolverPool | None = None,
    currency: str = DEFAULT_CURRENCY,
    pv_kw: list[float] | np.ndarray | None = None,
    default_timezone: str | None = None,
) -> DispatchResult:
    """Plan one site-day.

    `request` follows the dispatch contract (a dict or a DispatchRequest); `timeout_ms` and
    `use_milp` override the request's own values. Raises RequestError for bad input and
    SolverUnavailable for a solver name it does not know; every failure of the MILP (a solver
    that is not installed included) ends in the rule-based schedule, with `fallback_reason`
    saying why.
    """
    request = with_overrides(request, timeout_ms=timeout_ms, use_milp=use_milp)
    problem = build_problem(request, pv_kw=pv_kw, default_timezone=default_timezone)
    return solve_problem(problem, solver=solver, runner=runner, currency=currency)
