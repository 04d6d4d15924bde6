"""Asset checks of `dispatch_schedule`: hard constraints (blocking) and fallbacks (warning).

The checks run before the plans are stored: the op judging them is the one that hands the asset's
value to its IO manager, and it does so only when no hard check fails.

A run may carry many partitions; each check then judges all of them at once and names the
failing site-days in its metadata.
"""

from collections import defaultdict
from collections.abc import Mapping

import dagster as dg

from dispatch_pipeline.core.feasibility import CHECKS, Breach, find_breaches
from dispatch_pipeline.core.provenance import stands_for
from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.core.solve import Outcome, assemble_result
from dispatch_pipeline.defs.common import shorten
from dispatch_pipeline.defs.dispatch.metadata import schedule_metadata
from dispatch_pipeline.defs.dispatch.plans import SolvedDay
from dispatch_pipeline.defs.dispatch.retries import plans_to_keep
from dispatch_pipeline.defs.ingestion.coverage import INCOMPLETE_PARTITIONS_KEY
from dispatch_pipeline.defs.partition_metadata import record
from dispatch_pipeline.defs.partitions import parse_site_day
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.storage import read_runs

# Blocking: a plan failing one of these must never reach a site, nor the reports downstream.
NAMED_HARD_CHECKS = {
    "power_balance": "Supply equals demand in every interval (PV + discharge + import = load + charge + export).",
    "physical_soc": "Stored energy stays within 0 and the battery's capacity.",
    "export_cap": "Grid export never exceeds the hard export cap.",
    "no_simultaneous_charge_discharge": "The battery never charges and discharges in the same interval.",
    "no_simultaneous_import_export": "The site never imports and exports in the same interval.",
}
OTHER_HARD_CHECK = "other_hard_constraints"
OTHER_BREACHES = tuple(name for name in CHECKS if name not in NAMED_HARD_CHECKS)
FALLBACK_CHECK = "milp_planned"
ASSET_KEY = "dispatch_schedule"
DISPATCH_IO_MANAGER_KEY = "dispatch_run_io_manager"

HARD_CHECKS = (*NAMED_HARD_CHECKS, OTHER_HARD_CHECK)


def check_specs() -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(name, asset=ASSET_KEY, blocking=True, description=description)
        for name, description in NAMED_HARD_CHECKS.items()
    ]
    specs.append(
        dg.AssetCheckSpec(
            OTHER_HARD_CHECK,
            asset=ASSET_KEY,
            blocking=True,
            description="The remaining hard constraints: " + ", ".join(OTHER_BREACHES) + ".",
        )
    )
    specs.append(
        dg.AssetCheckSpec(
            FALLBACK_CHECK,
            asset=ASSET_KEY,
            description=(
                "Warns when a site-day was planned by the rule-based fallback (not when the run's "
                "dispatch/strategy tag asked for the rule-based schedule: see rule_based_by_strategy)."
            ),
        )
    )
    return specs


def _hard_result(name: str, breaches: dict[str, list[Breach]], checked: int) -> dg.AssetCheckResult:
    failing = sorted(breaches)
    examples = {key: [str(b) for b in breaches[key][:3]] for key in failing[:10]}
    return dg.AssetCheckResult(
        asset_key=ASSET_KEY,
        check_name=name,
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "partitions_checked": checked,
            "partitions_failing": len(failing),
            "breaches": dg.MetadataValue.json(examples),
        },
        description=(
            f"{len(failing)} of {checked} site-day(s) breach {name}" if failing
            else f"all {checked} site-day(s) of the run pass"
        ),
    )


@dg.op(
    description=(
        "Check every chosen schedule against the hard constraints and report fallbacks; only when "
        "every hard check passes are the plans explained, measured and handed to storage."
    ),
    out={
        "result": dg.Out(dict, io_manager_key=DISPATCH_IO_MANAGER_KEY),
        **{name: dg.Out() for name in (*HARD_CHECKS, FALLBACK_CHECK)},
    },
)
def check_dispatch_schedule(
    context: dg.AssetExecutionContext,
    solver: DispatchSolver,
    storage: DispatchStorage,
    plans: dict[str, SolvedDay],
):
    # A retry keeps what an earlier attempt stored; the kept plans were judged against this
    # attempt's problems as they were read back (stands_for), so they count as checked.
    kept = _kept_from_earlier_attempts(context, storage, plans)
    fresh = {key: plan for key, plan in plans.items() if key not in kept}
    by_check: dict[str, dict[str, list[Breach]]] = defaultdict(lambda: defaultdict(list))
    for key, plan in fresh.items():
        for breach in find_breaches(plan.planned.problem, plan.outcome.schedule):
            name = breach.check if breach.check in NAMED_HARD_CHECKS else OTHER_HARD_CHECK
            by_check[name][key].append(breach)
    hard_results = [_hard_result(name, by_check[name], len(plans)) for name in HARD_CHECKS]
    unusable = sorted({key for name in HARD_CHECKS for key in by_check[name]})
    if unusable:
        # Failed evaluations are recorded first; the plans never reach the IO manager, so a plan
        # that breaks a hard constraint is neither stored nor read by anything downstream.
        yield from hard_results
        yield _fallback_result({key: kept.get(key, plan.outcome) for key, plan in plans.items()})
        raise dg.Failure(
            description=(
                f"{len(unusable)} of {len(plans)} site-day(s) break a hard constraint; nothing was "
                f"stored: {shorten(unusable)}"
            ),
            metadata={
                "failing_checks": [r.check_name for r in hard_results if not r.passed],
                # The recovery sensor plans the run's other site-days without these.
                INCOMPLETE_PARTITIONS_KEY: dg.MetadataValue.json(unusable),
            },
        )
    results = {key: kept[key] if key in kept else assemble(plan, solver.solver) for key, plan in plans.items()}
    metadata = record(context, *schedule_metadata(plans, results), asset_key=ASSET_KEY)
    # Output first: each evaluation then refers to the materialisation it judged.
    yield dg.Output(results, "result", metadata=metadata)
    yield from hard_results
    yield _fallback_result(results)


def _kept_from_earlier_attempts(
    context: dg.AssetExecutionContext, storage: DispatchStorage, plans: Mapping[str, SolvedDay]
) -> dict[str, DispatchResult]:
    """The plans an earlier attempt of this run stored before failing (see retries.py), which
    the IO manager does not store again, provided they may stand for the plans of this attempt's
    inputs (core.provenance.stands_for): a retry that read its forecast afresh (the daemon's,
    executing every step) may have found a newer issue, and a plan of the old one must not stand
    beside inputs it does not fit."""
    engine = storage.engine()
    committed = plans_to_keep(context.get_step_execution_context(), engine, [parse_site_day(key) for key in plans])
    if not committed:
        return {}
    stored = read_runs(engine, list(committed.values()))
    kept, replanned = {}, []
    for day, run_id in committed.items():
        result = stored[run_id].to_result()
        plan = plans[day.key]
        if stands_for(plan.planned.problem, result, plan.outcome.schedule):
            kept[day.key] = result
        else:
            replanned.append(day.key)
    if kept:
        context.log.warning(
            f"{len(kept)} of {len(plans)} site-day(s) were planned and stored by an earlier attempt of this "
            f"run that failed afterwards: those plans are kept, not stored again ({shorten(sorted(kept))})"
        )
    if replanned:
        context.log.warning(
            f"{len(replanned)} site-day(s) stored by an earlier attempt of this run no longer fit the inputs "
            f"this attempt read (a forecast or price issued since, or a plan made now costs less): planned "
            f"again and stored ({shorten(sorted(replanned))})"
        )
    return kept


def assemble(plan: SolvedDay, milp_solver: str) -> DispatchResult:
    """The stored result of a checked plan: schedule, explanations, KPIs, how it was made."""
    problem = plan.planned.problem
    return assemble_result(
        problem,
        plan.outcome,
        plan.solve_ms,
        milp_solver if problem.use_milp else None,
        plan.planned.currency,
        plan.planned.issues,
    )


def _fallback_result(outcomes: Mapping[str, Outcome | DispatchResult]) -> dg.AssetCheckResult:
    fallbacks = {key: outcome.fallback_reason for key, outcome in outcomes.items() if outcome.status == "fallback"}
    return dg.AssetCheckResult(
        asset_key=ASSET_KEY,
        check_name=FALLBACK_CHECK,
        passed=not fallbacks,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(fallbacks)} of {len(outcomes)} site-day(s) planned by the rule-based fallback: "
            f"{shorten(sorted(fallbacks))}" if fallbacks
            else f"none of the run's {len(outcomes)} site-day(s) fell back"
        ),
        metadata={
            "partitions_checked": len(outcomes),
            "fallbacks": len(fallbacks),
            "fallback_reasons": dg.MetadataValue.json(dict(sorted(fallbacks.items())[:20])),
            # Passing on a run that never asked for the MILP says nothing of the MILP.
            "rule_based_by_strategy": sum(outcome.solver == "rule_based" for outcome in outcomes.values()),
        },
    )
