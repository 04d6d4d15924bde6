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
from dispatch_pipeline.defs.common import BACKFILL_POLICY, OWNERS
from dispatch_pipeline.defs.dispatch.views import decisions_table, kpis_record
from dispatch_pipeline.defs.partitions import site_day_partitions

VIEW_IO_MANAGER_KEY = "dispatch_view_io_manager"
REPORT_KPIS = ("total_cost", "baseline_cost", "savings_vs_baseline", "self_sufficiency",
               "pv_utilization", "equivalent_full_cycles", "peak_grid_import_kw", "violation_kwh")


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key=VIEW_IO_MANAGER_KEY,
    group_name="dispatch",
    kinds={"pandas", "postgres"},
    owners=OWNERS,
    metadata={"stored_in": "dispatch_explanations"},
    description=(
        "Why the battery and grid do what they do in each quarter-hour of the latest plan: a "
        "reason code, a sentence an operator understands, the constraints at their bound and, "
        "for MILP plans, the marginal cost of energy."
    ),
)
def dispatch_explanations(dispatch_schedule: dict[str, DispatchResult]) -> dg.MaterializeResult:
    codes = Counter(point.reason_code for result in dispatch_schedule.values() for point in result.points)
    metadata: dict[str, Any] = {
        "partitions": len(dispatch_schedule),
        "reason_codes": dg.MetadataValue.json(dict(codes.most_common())),
    }
    if len(dispatch_schedule) == 1:
        result = next(iter(dispatch_schedule.values()))
        metadata["dispatch_run_id"] = str(result.run_id)
        metadata["decisions"] = dg.MetadataValue.md(decisions_table(result))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key=VIEW_IO_MANAGER_KEY,
    group_name="dispatch",
    kinds={"pandas", "postgres"},
    owners=OWNERS,
    metadata={"stored_in": "dispatch_kpis"},
    description=(
        "The latest plan's KPIs per site-day: cost, the no-battery baseline and the savings, "
        "self-sufficiency, PV utilisation, battery cycles, peaks and constraint violations."
    ),
)
def dispatch_kpis(dispatch_schedule: dict[str, DispatchResult]) -> dg.MaterializeResult:
    results = list(dispatch_schedule.values())
    metadata: dict[str, Any] = {"partitions": len(results)}
    if len(results) == 1:
        record = kpis_record(results[0])
        metadata["dispatch_run_id"] = record["run_id"]
        metadata.update({name: dg.MetadataValue.float(float(record[name])) for name in REPORT_KPIS})
    elif results:
        # Savings are in each site's own currency: averaged per site, never across sites.
        savings: dict[str, list[float]] = {}
        for result in results:
            savings.setdefault(result.site_id, []).append(result.kpis.savings_vs_baseline)
        if len(savings) == 1:
            metadata["savings_vs_baseline_mean"] = dg.MetadataValue.float(statistics.fmean(*savings.values()))
        else:
            metadata["savings_vs_baseline_mean_by_site"] = dg.MetadataValue.json(
                {site_id: round(statistics.fmean(values), 4) for site_id, values in sorted(savings.items())}
            )
        metadata["violation_kwh_total"] = dg.MetadataValue.float(
            float(sum(result.kpis.violation_kwh for result in results))
        )
        metadata["fallbacks"] = sum(result.status == "fallback" for result in results)
    return dg.MaterializeResult(metadata=metadata)
