"""`dispatch_schedule`: the day's battery schedule, as a graph of build, solve, fall back, merge."""

import dagster as dg

from dispatch_pipeline.defs.column_schemas import DISPATCH_SCHEDULE
from dispatch_pipeline.defs.common import BACKFILL_POLICY, OWNERS
from dispatch_pipeline.defs.dispatch.checks import check_dispatch_schedule, check_specs
from dispatch_pipeline.defs.dispatch.ops import (
    build_dispatch_problem,
    merge_schedules,
    rule_based_schedule,
    solve_milp_schedule,
)
from dispatch_pipeline.defs.partitions import LOCAL_DATE_NOTE, site_day_partitions


@dg.graph_asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name="dispatch",
    kinds={"highs", "postgres"},
    owners=OWNERS,
    check_specs=check_specs(),
    metadata={"stored_in": "dispatch_runs, dispatch_schedule, dispatch_explanations, dispatch_kpis", **DISPATCH_SCHEDULE},
    description=(
        "The site's battery and grid schedule for its local day, one row per quarter-hour: the "
        "MILP's plan, or the rule-based fallback when the MILP times out or fails. Every "
        "materialisation adds a dispatch run (runs are never overwritten)."
        + LOCAL_DATE_NOTE
    ),
)
def dispatch_schedule(site_forecast, site_tariff):
    planned = build_dispatch_problem(site_forecast, site_tariff)
    solved, failed = solve_milp_schedule(planned)
    # A list fan-in: a branch that yielded nothing simply drops out of the list.
    plans = merge_schedules([solved, rule_based_schedule(failed)])
    checked = check_dispatch_schedule(plans)._asdict()
    # Graph outputs of inline checks are named "<asset>_<check>".
    result = checked.pop("result")
    return {"result": result, **{f"dispatch_schedule_{name}": out for name, out in checked.items()}}
