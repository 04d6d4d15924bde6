"""The Dagster code location of dispatch-pipeline (`workspace.yaml` loads `defs` from here)."""

from __future__ import annotations

import dagster as dg

from dispatch_pipeline.defs.automation.day_ahead import day_ahead_dispatch_schedule
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.automation.recovery import partition_recovery_sensor
from dispatch_pipeline.defs.automation.replanning import stale_plan_sensor
from dispatch_pipeline.defs.automation.sensors import site_partitions_sensor
from dispatch_pipeline.defs.collector import relax_collection
from dispatch_pipeline.defs.dispatch.reports import dispatch_explanations, dispatch_kpis
from dispatch_pipeline.defs.dispatch.schedule import dispatch_schedule
from dispatch_pipeline.defs.ingestion.forecast import site_forecast
from dispatch_pipeline.defs.ingestion.tariff import site_tariff
from dispatch_pipeline.defs.resources_map import pipeline_resources

ASSETS = [site_forecast, site_tariff, dispatch_schedule, dispatch_explanations, dispatch_kpis]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[day_ahead_dispatch_job],
    schedules=[day_ahead_dispatch_schedule],
    sensors=[site_partitions_sensor, partition_recovery_sensor, stale_plan_sensor],
    resources=pipeline_resources(),
    # Asset backfills launched from the UI run every step of a chunk in one process as well.
    executor=dg.in_process_executor,
)

# Every process that loads the code location (run workers above all) runs batch work.
relax_collection()
