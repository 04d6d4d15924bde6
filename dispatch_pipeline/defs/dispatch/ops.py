"""The ops of the `dispatch_schedule` graph: build, solve (MILP), fall back, merge.

Each op handles every partition of its run: one in a day-ahead run, a whole chunk in a backfill.
Values are dicts keyed by partition key.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import RequestError
from dispatch_pipeline.core.result import InputIssues
from dispatch_pipeline.core.site import Site, site_request
from dispatch_pipeline.core.solve import (
    Outcome,
    SolveClock,
    attempt_milp,
    fallback_outcome,
    rule_based_outcome,
)
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES, run_strategy, shorten
from dispatch_pipeline.defs.dispatch.plans import FailedDay, PlannedDay, SolvedDay
from dispatch_pipeline.defs.ingestion.coverage import fail_partitions
from dispatch_pipeline.defs.ingestion.tariff import DEMAND_CHARGE, ISSUED_AT, site_registration
from dispatch_pipeline.defs.partitions import SiteDay, context_site_days
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.site_lookup import registered_sites, unplannable_days
from dispatch_pipeline.storage.forecasts import latest_issue, latest_write


@dg.op(description="Turn each site-day's forecast, prices and site settings into a validated problem.")
def build_dispatch_problem(
    context: dg.OpExecutionContext,
    storage: DispatchStorage,
    solver: DispatchSolver,
    site_forecast: dict[str, pd.DataFrame],
    site_tariff: dict[str, pd.DataFrame],
) -> dict[str, PlannedDay]:
    days = context_site_days(context)
    use_milp = run_strategy(context.run.tags) == "milp"
    sites, unusable, updated_at = registered_sites(storage.engine(), (day.site_id for day in days))
    planned: dict[str, PlannedDay] = {}
    # Per partition, so that the recovery sensor plans a run's other days.
    problems = unplannable_days(days, sites, unusable)
    for day in days:
        if day.key in problems:
            continue
        site = sites[day.site_id]
        forecast, prices = site_forecast[day.key], site_tariff[day.key]
        stale = _inputs_for_another_day(day, site, {"site_forecast": forecast, "site_tariff": prices})
        if stale:
            problems[day.key] = stale
            continue
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
                use_milp=use_milp,
                tariff={DEMAND_CHARGE: float(prices[DEMAND_CHARGE].iat[0])},
            )
            problem = build_problem(request)
        except (RequestError, ValueError) as exc:
            # The contract: bad input fails the step naming field and value, and writes nothing.
            problems[day.key] = f"{day}: invalid dispatch input: {exc}"
            continue
        issues = InputIssues(
            forecast=latest_issue(forecast),
            prices=latest_issue(prices),
            # None from a snapshot of an earlier release: staleness then counts from the run's creation.
            forecast_stored=latest_write(forecast),
            prices_stored=latest_write(prices),
            # The prices and demand charge are those of the registration site_tariff read, the
            # battery, limits and weights this step's: the older of the two, so that a change
            # after either read makes the plan stale. A snapshot of an earlier release kept none.
            site_updated=min(
                read for read in (site_registration(prices), updated_at[day.site_id]) if read is not None
            ),
        )
        planned[day.key] = PlannedDay(day, problem, site.currency, issues)
    fail_partitions(problems)
    return planned


def _inputs_for_another_day(day: SiteDay, site: Site, inputs: dict[str, pd.DataFrame]) -> str | None:
    """Why stored inputs do not cover the site's local day as it is now, or None.

    A run that only re-plans takes the forecast and prices its partition last ingested. If the
    site's timezone has changed since, their values belong to other hours: planning with them
    would silently shift the day.
    """
    for column, what in ((DEMAND_CHARGE, "the tariff's demand charge"), (ISSUED_AT, "the issue times of its prices")):
        if column not in inputs["site_tariff"]:
            return (
                f"{day}: site_tariff was materialised by an earlier release, without {what}: "
                "materialise site_tariff again"
            )
    local = site.local_day(day.date, RESOLUTION_MINUTES)
    for name, frame in inputs.items():
        ts = frame["ts"]
        if len(ts) != local.intervals or ts.iat[0] != local.start_utc:
            return (
                f"{day}: {name} was ingested for {len(ts)} intervals from {ts.iat[0].isoformat()}, but the "
                f"site's local day in {site.timezone} has {local.intervals} from {local.start_utc.isoformat()} "
                "(did its timezone change?): materialise site_forecast and site_tariff again"
            )
    return None


def _attempt(planned: PlannedDay, solver: DispatchSolver) -> SolvedDay | FailedDay:
    clock = SolveClock()
    problem = planned.problem
    if not problem.use_milp:
        attempt: Outcome | str = rule_based_outcome(problem)
    else:
        try:
            attempt = attempt_milp(problem, solver.solver, solver.runner, on_start=clock.mark)
        except Exception as exc:  # the contract: any solver failure ends in the fallback
            attempt = f"solver failed: {type(exc).__name__}: {exc}"
    elapsed_ms = clock.elapsed_ms()
    if isinstance(attempt, str):
        return FailedDay(planned, attempt, elapsed_ms)
    return SolvedDay(planned, attempt, elapsed_ms)


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
    uses_milp = any(day.problem.use_milp for day in planned.values())
    if not uses_milp:
        # The run's strategy is rule_based: no solver workers were started for it.
        days = {key: _attempt(day, solver) for key, day in planned.items()}
        context.log.info(f"the run's strategy is rule_based: {len(days)} site-day(s) planned without the MILP")
    else:
        # One thread per warm worker: each solve runs in its worker's process, so the GIL only
        # serialises the cheap parts (pickling the problem and the answer).
        with ThreadPoolExecutor(max_workers=solver.runner.size, thread_name_prefix="milp") as pool:
            days = dict(zip(planned, pool.map(lambda day: _attempt(day, solver), planned.values()), strict=True))
    solved = {key: day for key, day in days.items() if isinstance(day, SolvedDay)}
    failed = {key: day for key, day in days.items() if isinstance(day, FailedDay)}
    for day in failed.values():
        context.log.warning(f"{day.planned.day}: falling back ({day.reason})")
    if uses_milp:
        context.log.info(f"MILP planned {len(solved)} of {len(days)} site-day(s) on {solver.placement}")
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


@dg.op(description="Join both branches into one plan per site-day, in partition order.")
def merge_schedules(context: dg.OpExecutionContext, schedules: list[dict[str, SolvedDay]]) -> dict[str, SolvedDay]:
    plans: dict[str, SolvedDay] = {}
    for branch in schedules:
        plans.update(branch)
    days = context_site_days(context)
    missing = [str(day) for day in days if day.key not in plans]
    if missing:
        raise dg.Failure(f"no schedule was produced for {shorten(missing)}")
    # Partition order, so that stored runs come in a stable order.
    return {day.key: plans[day.key] for day in days}
