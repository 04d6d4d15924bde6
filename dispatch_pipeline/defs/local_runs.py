"""Run the pipeline in this process: the demo, the benchmark and the tests.

The runs are ordinary Dagster runs of the given instance (they show in the UI when it is the
UI's instance); they just skip the daemon and the ~3 s start-up of a run process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from dispatch_pipeline.defs.common import SITE_TAG
from dispatch_pipeline.defs.partitions import SiteDay, partition_range_tags


def build_local_job(resources: Mapping[str, Any]) -> dg.JobDefinition:
    """The job of every pipeline asset, bound to `resources`, run by the in-process executor."""
    from dispatch_pipeline.definitions import ASSETS

    definitions = dg.Definitions(assets=ASSETS, resources=resources, executor=dg.in_process_executor)
    return definitions.resolve_implicit_global_asset_job_def()


def run_site_day(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    day: SiteDay,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """One partition, one run (what a day-ahead tick launches)."""
    return job.execute_in_process(
        instance=instance,
        partition_key=day.key,
        tags={SITE_TAG: day.site_id, **(tags or {})},
        run_config=run_config,
        raise_on_error=False,
    )


def run_site_days(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    days: Sequence[SiteDay],
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Many partitions in one run, as a backfill chunk does: `days` must form a site x date
    rectangle (contiguous dates; sites contiguous in the dynamic partition order)."""
    if len(days) == 1:
        return run_site_day(job, instance, days[0], tags, run_config)
    return job.execute_in_process(
        instance=instance,
        tags={**partition_range_tags(days), **(tags or {})},
        run_config=run_config,
        raise_on_error=False,
    )


def run_requested(
    job: dg.JobDefinition, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """What a schedule's RunRequest asks for (one partition, or a key range in its tags)."""
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=dict(request.tags),
        raise_on_error=False,
    )
