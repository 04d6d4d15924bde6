"""The ops of the `dispatch_schedule` graph: build, solve (MILP), fall back, merge.

Each op handles every partition of its run: one in a day-ahead run, a whole chunk in a backfill.
Values are dicts keyed by partition key.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from dispatch_pipeline.core.fallback import rule_based_schedule as rule_based
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import RequestError
from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.core.site import site_request
from dispatch_pipeline.core.solve import Outcome, assemble_result, attempt_milp, fallback_outcome
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES
from dispatch_pipeline.defs.dispatch.metadata import schedule_metadata
from dispatch_pipeline.defs.dispatch.plans import FailedDay, PlannedDay, SolvedDay
from dispatch_pipeline.defs.partitions import context_site_days
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.site_lookup import registered_sites

DISPATCH_IO_MANAGER_KEY = "dispatch_run_io_manager"


@dg.op(description="Turn each site-day's forecast, prices and site settings into a validated problem.")
def build_dispatch_problem(
    context: dg.OpExecutionContext,
    storage: DispatchStorage,
    solver: DispatchSolver,
    site_forecast: dict[str, pd.DataFrame],
    site_tariff: dict[str, pd.DataFrame],
) -> dict[str, PlannedDay]:
    days = context_site_days(context)
    sites = registered_sites(storage.engine(), (day.site_id for day in days))
    planned: dict[str, PlannedDay] = {}
    problems: list[str] = []
    for day in days:
        site = sites[day.site_id]
        forecast, prices = site_forecast[day.key], site_tariff[day.key]
        try:
            request = site_request(
                site,
                day.date,
                forecast["load_kw"].to_numpy(),
                forecast["pv_kw"].to_numpy(),
                prices["buy"].to_numpy(),
                prices["sell"].to_numpy(),
                resolution_minutes=RESOLUTION_MINUTES,
                timeout_ms=solver.timeout_ms,
            )
            problem = build_problem(request)
        except (RequestError, ValueError) as exc:
            # The contract: bad input fails the step naming field and value, and writes nothing.
            problems.append(f"{day}: {exc}")
            continue
        planned[day.key] = PlannedDay(day, problem, site.currency)
    if problems:
        raise dg.Failure(
            description="invalid dispatch input: " + "; ".join(problems[:5]),
            metadata={"invalid": dg.MetadataValue.json(problems[:50])},
        )
    return planned


def _attempt(planned: PlannedDay, solver: DispatchSolver) -> tuple[Outcome | str, float]:
    started = time.perf_counter()
    problem = planned.problem
    if not problem.use_milp:
        attempt: Outcome | str = Outcome(rule_based(problem), "ok", "rule_based", None, None)
    else:
        try:
            attempt = attempt_milp(problem, solver.solver, solver.runner)
        except Exception as exc:  # the contract: any solver failure ends in the fallback
            attempt = f"solver failed: {type(exc).__name__}: {exc}"
    return attempt, (time.perf_counter() - started) * 1000


@dg.op(
    description=(
        "Solve every site-day's MILP under its hard timeout, in parallel on the solver's warm "
        "workers. `solved` carries the days the MILP planned, `failed` those that must fall back."
    ),
    out={
        "solved": dg.Out(dict, is_required=False, description="Days the MILP planned."),
        "failed": dg.Out(dict, is_required=False, description="Days left to the fallback, with why."),
    },
)
def solve_milp_schedule(
    context: dg.OpExecutionContext, solver: DispatchSolver, planned: dict[str, PlannedDay]
):
    runner = solver.runner
    keys = list(planned)
    # One thread per warm worker: each thread's solve runs in its own process, so the GIL only
    # serialises the cheap parts (pickling, bookkeeping).
    with ThreadPoolExecutor(max_workers=runner.size, thread_name_prefix="milp") as pool:
        attempts = list(pool.map(lambda key: _attempt(planned[key], solver), keys))
    solved: dict[str, SolvedDay] = {}
    failed: dict[str, FailedDay] = {}
    for key, (attempt, elapsed_ms) in zip(keys, attempts, strict=True):
        if isinstance(attempt, str):
            failed[key] = FailedDay(planned[key], attempt, elapsed_ms)
            context.log.warning(f"{planned[key].day}: falling back ({attempt})")
        else:
            solved[key] = SolvedDay(planned[key], attempt, elapsed_ms)
    context.log.info(f"MILP planned {len(solved)} of {len(keys)} site-day(s)")
    if solved:
        yield dg.Output(solved, "solved")
    if failed:
        yield dg.Output(failed, "failed")


@dg.op(description="Plan the days the MILP could not with the rule-based schedule, saying why.")
def rule_based_schedule(failed: dict[str, FailedDay]) -> dict[str, SolvedDay]:
    fallen_back = {}
    for key, day in failed.items():
        started = time.perf_counter()
        outcome = fallback_outcome(day.planned.problem, day.reason)
        elapsed_ms = day.solve_ms + (time.perf_counter() - started) * 1000
        fallen_back[key] = SolvedDay(day.planned, outcome, elapsed_ms)
    return fallen_back


@dg.op(
    description=(
        "Join both branches into one result per site-day (schedule, explanations, KPIs) and "
        "store them; `plans` feeds the asset checks."
    ),
    out={
        "result": dg.Out(dict, io_manager_key=DISPATCH_IO_MANAGER_KEY),
        "plans": dg.Out(dict, description="The chosen schedules with their problems, for checks."),
    },
)
def merge_schedules(
    context: dg.OpExecutionContext, solver: DispatchSolver, schedules: list[dict[str, SolvedDay]]
):
    plans: dict[str, SolvedDay] = {}
    for branch in schedules:
        plans.update(branch)
    days = context_site_days(context)
    missing = [str(day) for day in days if day.key not in plans]
    if missing:
        raise dg.Failure(f"no schedule was produced for {', '.join(missing[:5])}")
    results: dict[str, DispatchResult] = {}
    for day in days:  # partition order, so that stored runs come in a stable order
        plan = plans[day.key]
        problem = plan.planned.problem
        results[day.key] = assemble_result(
            problem,
            plan.outcome,
            plan.solve_ms,
            solver.solver if problem.use_milp else None,
            plan.planned.currency,
        )
    yield dg.Output(results, "result", metadata=schedule_metadata(plans, results))
    yield dg.Output(plans, "plans")
