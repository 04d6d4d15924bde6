"""The job the day-ahead schedule starts: every asset of a site-day, in one process."""

from __future__ import annotations

import os

import dagster as dg

DAY_AHEAD_JOB_NAME = "day_ahead_dispatch_job"

# Forecast, tariff, plan, checks and reports of one site-day take well under a second of work;
# the in-process executor saves the ~1 s per step a process per step would cost.
# How the daemon retries a failed run: from the failed step (the default), which loads the steps
# before it from the failed run's files; where runs do not share a disk (Kubernetes: a pod each),
# ALL_STEPS, set through DISPATCH_RETRY_STRATEGY in the Helm values.
RETRY_STRATEGY = os.environ.get("DISPATCH_RETRY_STRATEGY", "FROM_FAILURE")
if RETRY_STRATEGY not in ("FROM_FAILURE", "ALL_STEPS"):
    raise ValueError(f"DISPATCH_RETRY_STRATEGY: expected FROM_FAILURE or ALL_STEPS, got {RETRY_STRATEGY!r}")

day_ahead_dispatch_job = dg.define_asset_job(
    DAY_AHEAD_JOB_NAME,
    selection=dg.AssetSelection.groups("ingestion", "dispatch"),
    executor_def=dg.in_process_executor,
    description="Forecast, prices, schedule, checks, explanations and KPIs of site-days.",
    # The run monitor's cap (as run_monitoring.max_runtime_seconds) on these runs whatever an
    # instance sets: a hung run would keep its site's concurrency slot.
    tags={"dagster/retry_strategy": RETRY_STRATEGY, "dagster/max_runtime": "3600"},
)
