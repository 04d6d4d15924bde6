"""`dispatch_explanations` and `dispatch_kpis`: what the latest stored plan means, per site-day.

Their rows are written with the plan, in the transaction that stores it (DispatchRunIOManager), so
these assets produce no value to store: they record the materialisation and describe it, and a
load (a downstream asset, `load_asset_value`) reads the rows back through
DispatchRunViewIOManager. Building frames here only to discard them cost 1.5 % of a backfill run.
"""

import statistics
from collections import Counter
from typing import Any

import dagster as dg

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.column_schemas import DISPATCH_EXPLANATIONS, DISPATCH_KPIS
from dispatch_pipeline.defs.common import BACKFILL_POLICY, OWNERS
from dispatch_pipeline.defs.dispatch.metadata import kpi_metadata
from dispatch_pipeline.defs.dispatch.views import decisions_table
from dispatch_pipeline.defs.partition_metadata import detailed, record, run_metadata
from dispatch_pipeline.defs.partitions import LOCAL_DATE_NOTE, site_day_partitions
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import stored_timezones_and_currencies

VIEW_IO_MANAGER_KEY = "dispatch_view_io_manager"


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key=VIEW_IO_MANAGER_KEY,
    group_name="dispatch",
    kinds={"pandas", "postgres"},
    owners=OWNERS,
    metadata={"stored_in": "dispatch_explanations", **DISPATCH_EXPLANATIONS},
    description=(
        "Why the battery and grid do what they do in each quarter-hour of the latest plan: a "
        "reason code, a sentence an operator understands, the constraints at their bound and, "
        "for MILP plans, the marginal cost of energy."
        + LOCAL_DATE_NOTE
    ),
)
def dispatch_explanations(
    context: dg.AssetExecutionContext, dispatch_schedule: dict[str, DispatchResult]
) -> dg.MaterializeResult:
    codes = {key: Counter(point.reason_code for point in result.points) for key, result in dispatch_schedule.items()}
    shared = run_metadata({
        "partitions": len(dispatch_schedule),
        "reason_codes": dg.MetadataValue.json(dict(sum(codes.values(), Counter()).most_common())),
    })
    per_partition = {
        key: {
            "dispatch_run_id": str(result.run_id),
            "reason_codes": dg.MetadataValue.json(dict(codes[key].most_common())),
            "decisions": dg.MetadataValue.md(decisions_table(result)),
        }
        for key, result in dispatch_schedule.items()
    } if detailed(len(dispatch_schedule)) else {}
    return dg.MaterializeResult(metadata=record(context, shared, per_partition))


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key=VIEW_IO_MANAGER_KEY,
    group_name="dispatch",
    kinds={"pandas", "postgres"},
    owners=OWNERS,
    metadata={"stored_in": "dispatch_kpis", **DISPATCH_KPIS},
    description=(
        "The latest plan's KPIs per site-day: cost, the no-battery baseline and the savings, "
        "self-sufficiency, PV utilisation, battery cycles, peaks and constraint violations."
        + LOCAL_DATE_NOTE
    ),
)
def dispatch_kpis(
    context: dg.AssetExecutionContext, storage: DispatchStorage, dispatch_schedule: dict[str, DispatchResult]
) -> dg.MaterializeResult:
    results = list(dispatch_schedule.values())
    shared: dict[str, Any] = {"partitions": len(results)}
    # Savings are in each site's own currency: averaged per site, never across sites.
    savings: dict[str, list[float]] = {}
    for result in results:
        savings.setdefault(result.site_id, []).append(result.kpis.savings_vs_baseline)
    if len(savings) == 1:
        shared["savings_vs_baseline_mean"] = dg.MetadataValue.float(round(statistics.fmean(*savings.values()), 4))
    elif savings:
        shared["savings_vs_baseline_mean_by_site"] = dg.MetadataValue.json(
            {site_id: round(statistics.fmean(values), 4) for site_id, values in sorted(savings.items())}
        )
    shared["violation_kwh_total"] = dg.MetadataValue.float(round(sum(r.kpis.violation_kwh for r in results), 4))
    shared["fallbacks"] = sum(result.status == "fallback" for result in results)
    per_partition: dict[str, dict[str, Any]] = {}
    if detailed(len(results)):
        stored = stored_timezones_and_currencies(storage.engine(), sorted({result.site_id for result in results}))
        per_partition = {
            key: {"dispatch_run_id": str(result.run_id), **kpi_metadata(result, _currency(stored, result.site_id))}
            for key, result in dispatch_schedule.items()
        }
    return dg.MaterializeResult(metadata=record(context, run_metadata(shared), per_partition))


def _currency(stored: dict[str, tuple[str, str]], site_id: str) -> str:
    return stored[site_id][1] if site_id in stored else "unknown (the site is no longer registered)"
