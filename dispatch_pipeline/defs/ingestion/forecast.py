"""`site_forecast`: the site-day's load and PV forecast, most recent issue per interval."""

import dagster as dg
import pandas as pd

from dispatch_pipeline.defs.column_schemas import SITE_FORECAST
from dispatch_pipeline.defs.common import BACKFILL_POLICY, OWNERS, RESOLUTION_MINUTES
from dispatch_pipeline.defs.ingestion.coverage import fail_partitions
from dispatch_pipeline.defs.ingestion.day_slices import load_step_slices
from dispatch_pipeline.defs.partition_metadata import frames_metadata
from dispatch_pipeline.defs.partitions import LOCAL_DATE_NOTE, site_day_partitions
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import load_forecast
from dispatch_pipeline.storage.forecasts import FORECAST_COLUMNS


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key="site_day_io_manager",
    group_name="ingestion",
    kinds={"sql", "pandas"},
    owners=OWNERS,
    metadata={"source_table": "forecasts", "resolution_minutes": RESOLUTION_MINUTES, **SITE_FORECAST},
    description=(
        "Load and PV forecast (kW) for every quarter-hour of the site's local day, from the "
        "`forecasts` table: per interval the most recently issued value. A day with any "
        "interval missing fails, naming the site, the date and the missing intervals."
        + LOCAL_DATE_NOTE
    ),
)
def site_forecast(
    context: dg.AssetExecutionContext, storage: DispatchStorage
) -> dg.Output[dict[str, pd.DataFrame]]:
    # The site's local day only: a plan made from this snapshot after its timezone changed is
    # refused (build_dispatch_problem), so its registration is recorded by the steps whose values
    # come from it.
    step = load_step_slices(context, storage, load_forecast, FORECAST_COLUMNS)
    frames: dict[str, pd.DataFrame] = {}
    for day, stored in step.slices.items():
        reason = stored.unusable_reason("forecast", day.site_id)
        if reason:
            step.problems[day.key] = reason
        else:
            frames[day.key] = stored.rows
    fail_partitions(step.problems)
    return dg.Output(frames, metadata=frames_metadata(context, frames, lambda _key, frame: _day_metadata(frame)))


def _day_metadata(frame: pd.DataFrame) -> dict[str, object]:
    dt_hours = RESOLUTION_MINUTES / 60
    return {
        "intervals": len(frame),
        "load_kwh": round(float(frame["load_kw"].sum() * dt_hours), 3),
        "pv_kwh": round(float(frame["pv_kw"].sum() * dt_hours), 3),
        "peak_load_kw": round(float(frame["load_kw"].max()), 3),
        "latest_issue": dg.MetadataValue.timestamp(frame["issued_at"].max().to_pydatetime()),
    }
