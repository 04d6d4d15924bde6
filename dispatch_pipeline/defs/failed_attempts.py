"""Plans an earlier attempt of a step committed before it died: kept, not stored a second time.

A run killed after its dispatch runs were committed but before Dagster recorded the step's
success (a lost pod, the run monitor's time limit) is retried: `run_retries` re-executes it from
the failure, or a step retry policy runs the step again in the same run. Re-planning then is
harmless; storing the plans again is not, since every query over the runs of a backfill would
count those site-days twice. A deliberate re-materialisation (a new run, or a re-execution of a
run whose step succeeded) still adds runs, as always.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.stats import StepEventStatus


def failed_attempts(context: dg.OutputContext) -> list[str]:
    """Ids of the Dagster runs whose attempt at this output's step may have stored plans and then
    failed: this run, when the step is being retried in it, and the runs this one re-executes,
    back to the nearest whose step succeeded."""
    step = context.step_context
    attempts = [step.run_id] if step.previous_attempt_count else []
    parent_id = step.dagster_run.parent_run_id
    while parent_id is not None:
        parent = step.instance.get_run_by_id(parent_id)
        if parent is None:  # deleted from the instance: nothing further back can be traced
            break
        stats = step.instance.get_run_step_stats(parent_id, step_keys=[context.step_key])
        if any(stat.status == StepEventStatus.SUCCESS for stat in stats):
            break
        attempts.append(parent_id)
        parent_id = parent.parent_run_id
    return attempts
