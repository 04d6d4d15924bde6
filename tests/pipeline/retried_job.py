"""Re-executing a pipeline run as the daemon's run retries do (`execute_job` needs a
reconstructable job: one a module can rebuild by name and arguments)."""

from __future__ import annotations

import dagster as dg

from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources

JOB_NAME = "retried_pipeline"  # the implicit asset job's reserved name cannot be reconstructed


def pipeline_job(database_url: str, snapshots_dir: str) -> dg.JobDefinition:
    from dispatch_pipeline.definitions import ASSETS

    definitions = dg.Definitions(
        assets=ASSETS,
        jobs=[dg.define_asset_job(JOB_NAME, executor_def=dg.in_process_executor)],
        resources=pipeline_resources(
            storage=DispatchStorage(database_url=database_url),
            solver=DispatchSolver(timeout_ms=5000),
            pickle_dir=snapshots_dir,
        ),
    )
    return definitions.resolve_job_def(JOB_NAME)


def reexecute(
    instance: dg.DagsterInstance,
    run_id: str,
    database_url: str,
    snapshots_dir: str,
    from_failure: bool,
    tags: dict[str, str] | None = None,
    step_selection: list[str] | None = None,
) -> dg.ExecuteJobResult:
    """What run_retries does (`from_failure`), or the UI's "re-execute all" (or the steps of
    `step_selection`); `tags` added (the daemon's retries carry dagster/retry_number)."""
    options = (
        dg.ReexecutionOptions.from_failure(run_id, instance) if from_failure
        else dg.ReexecutionOptions(parent_run_id=run_id, step_selection=step_selection or [])
    )
    job = dg.build_reconstructable_job(
        __name__, pipeline_job.__name__,
        reconstructable_kwargs={"database_url": database_url, "snapshots_dir": snapshots_dir},
    )
    # The daemon's retries carry the parent's tags (its partitions among them); execute_job does not.
    parent_tags = instance.get_run_by_id(run_id).tags
    return dg.execute_job(
        job,
        instance=instance,
        reexecution_options=options,
        tags={
            **{key: value for key, value in parent_tags.items() if "partition" in key or not key.startswith("dagster/")},
            **(tags or {}),
        },
        raise_on_error=False,
    )
