"""The job the day-ahead schedule starts: every asset of a site-day, in one process."""

from __future__ import annotations

import dagster as dg

DAY_AHEAD_JOB_NAME = "day_ahead_dispatch_job"

# Forecast, tariff, plan, checks and reports of one site-day take well under a second of work;
# the in-process executor saves the ~1 s per step a process per step would cost.
day_ahead_dispatch_job = dg.define_asset_job(
    DAY_AHEAD_JOB_NAME,
    selection=dg.AssetSelection.groups("ingestion", "dispatch"),
    executor_def=dg.in_process_executor,
    description="Forecast, prices, schedule, checks, explanations and KPIs of site-days.",
)
