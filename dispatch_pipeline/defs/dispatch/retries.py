"""Plans an earlier attempt of a run committed before it died: kept, not stored a second time.

A run killed after its plans were committed but before Dagster recorded the step's success (a
lost worker, the run monitor's time limit) is retried: `run_retries` re-executes it from the
failure, or a step retry policy runs the step again in the same run. The retry plans again, from
the same input snapshots; storing those plans would put each site-day in the database twice, and
every query over the runs of a backfill would count it twice. So a retry keeps the committed
plans, provided that nothing replaced them since, that no run in between took its inputs afresh,
and that they still fit the inputs the retry read (core.provenance.stands_for, asked in
checks.py: a retry executing every step reads the forecast again, and may find a newer issue).
The daemon's retry of a run that failed after this step succeeded (in the explanations or KPIs)
keeps the plans too, even when it executes every step. Anything else that plans a partition
again (a new run, a re-execution of all steps started by hand, a re-execution by hand of a run
whose step succeeded) adds a run, as always.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import dagster as dg
from sqlalchemy import Engine

from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.storage import latest_run_ids

# Set by the daemon on the runs it starts to retry a failed one (run_retries in dagster.yaml).
RETRY_NUMBER_TAG = "dagster/retry_number"

# The steps that take a plan's inputs; a run that executes them may plan from other inputs than
# the run it re-executes.
INPUT_STEPS = ("site_forecast", "site_tariff")


def earlier_attempts(step: dg.StepExecutionContext) -> list[str]:
    """Ids of the Dagster runs whose attempt at this step planned from this attempt's inputs
    and may have stored its plans: this run, when the step is being retried in it, and the runs
    this one re-executes, back to the nearest that took its inputs afresh, or whose step
    succeeded where the run that next attempted the step after it was not the daemon's retry.

    A daemon's retry finishes its failed run, also when the step succeeded there and a later
    one failed (its explanations or KPIs); a re-execution started by hand plans anew. Which of
    the two attempts the step is decided by the nearest run below in the chain that executed
    it: a run that did not (a re-execution from a later failed step) passes plans on unchanged.
    """
    instance, step_key = step.instance, step.step.key
    attempts = [step.run_id] if step.previous_attempt_count else []
    run = step.dagster_run
    finishing = RETRY_NUMBER_TAG in run.tags  # whether the nearest attempt below is the daemon's retry
    while run.parent_run_id is not None and not _takes_inputs(run):
        parent = instance.get_run_by_id(run.parent_run_id)
        if parent is None or (not finishing and _succeeded(instance, parent.run_id, step_key)):
            break
        attempts.append(parent.run_id)
        if _started(instance, parent.run_id, step_key):
            finishing = RETRY_NUMBER_TAG in parent.tags
        run = parent
    return attempts


def plans_to_keep(step: dg.StepExecutionContext, engine: Engine, days: Sequence[SiteDay]) -> dict[SiteDay, uuid.UUID]:
    """The dispatch runs earlier attempts of this step stored for `days` that are still the
    latest of their site-day (a plan stored since by another run is not brought back)."""
    attempts = earlier_attempts(step)
    if not attempts:
        return {}
    stored = latest_run_ids(engine, days, dagster_run_ids=attempts)
    latest = latest_run_ids(engine, list(stored)) if stored else {}
    return {day: run_id for day, run_id in stored.items() if latest.get(day) == run_id}


def _takes_inputs(run: dg.DagsterRun) -> bool:
    """Whether the run may plan from other inputs than the run it re-executes. The daemon's
    automatic retries finish their failed run, whichever steps they execute (the Helm chart's
    execute all: their pods do not share the snapshot files)."""
    if RETRY_NUMBER_TAG in run.tags:
        return False
    if run.step_keys_to_execute is not None:  # a re-execution of some steps (from the failure)
        return any(key in run.step_keys_to_execute for key in INPUT_STEPS)
    if run.asset_selection is not None:
        return any(dg.AssetKey(key) in run.asset_selection for key in INPUT_STEPS)
    return True


def _succeeded(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    return _has_event(instance, run_id, step_key, dg.DagsterEventType.STEP_SUCCESS)


def _started(instance: dg.DagsterInstance, run_id: str, step_key: str) -> bool:
    return _has_event(instance, run_id, step_key, dg.DagsterEventType.STEP_START)


def _has_event(instance: dg.DagsterInstance, run_id: str, step_key: str, kind: dg.DagsterEventType) -> bool:
    records = instance.get_records_for_run(run_id, of_type=kind).records
    return any(record.event_log_entry.step_key == step_key for record in records)
