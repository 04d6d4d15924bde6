"""A ranged run failing on a few incomplete site-days: the recovery sensor plans all the others."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from sqlalchemy import delete, update

from dispatch_pipeline.defs.automation.recovery import (
    RECOVERS_TAG,
    incomplete_partitions,
    partition_recovery_sensor,
    recovery_requests,
    unbroken_ranges,
)
from dispatch_pipeline.defs.local_runs import run_requested, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay, partition_range_tags
from dispatch_pipeline.demo import demo_forecast
from dispatch_pipeline.storage import latest_run, save_forecast
from dispatch_pipeline.storage.tables import sites
from tests.pipeline.conftest import ISSUED_AT
from tests.pipeline.test_pipeline_runs import failure_message

FIRST = dt.date(2025, 5, 5)
DATES = [FIRST + dt.timedelta(days=n) for n in range(6)]
GAPS = {DATES[2], DATES[5]}  # one inside the range, one at its end


def failure_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=partition_recovery_sensor.name, dagster_instance=instance, dagster_run=run,
        dagster_event=failure,
    ).for_run_failure()


def test_a_failed_range_is_replanned_without_its_incomplete_days(job, instance, engine, make_site):
    site = make_site("BERLIN_DEPOT")
    for date in DATES:
        forecast = demo_forecast("BERLIN_DEPOT", date)
        save_forecast(engine, site.site_id, forecast.iloc[:-3] if date in GAPS else forecast, ISSUED_AT)
    days = [SiteDay(site.site_id, date) for date in DATES]
    failed = run_site_days(job, instance, days, tags={"dagster/backfill": "bf1"})
    assert not failed.success
    assert all(latest_run(engine, site.site_id, date) is None for date in DATES)  # whole or nothing

    requests = partition_recovery_sensor(failure_context(instance, failed))
    # Two unbroken ranges of complete days: 05-05..05-06 and 05-08..05-09.
    assert [dict(r.tags).get("dagster/asset_partition_range_start") for r in requests] == [
        days[0].key, days[3].key,
    ]
    assert [dict(r.tags).get("dagster/asset_partition_range_end") for r in requests] == [
        days[1].key, days[4].key,
    ]
    for request in requests:
        assert request.tags[RECOVERS_TAG] == failed.run_id
        assert request.tags["dispatch/site"] == site.site_id
        assert request.tags["dispatch/backfill"] == "bf1" and "dagster/backfill" not in request.tags
        assert run_requested(job, instance, request).success
    planned = {date for date in DATES if latest_run(engine, site.site_id, date) is not None}
    assert planned == set(DATES) - GAPS


def test_a_plan_only_range_with_days_never_ingested_is_replanned_without_them(job, instance, engine, make_site):
    site = make_site("BERLIN_DEPOT", DATES[:3])
    days = [SiteDay(site.site_id, date) for date in DATES[:3]]
    assert run_site_days(job, instance, days[:1]).success  # only the first day ingested
    planning = [dg.AssetKey(name) for name in ("dispatch_schedule", "dispatch_explanations", "dispatch_kpis")]
    failed = job.execute_in_process(
        instance=instance, asset_selection=planning, tags=partition_range_tags(days), raise_on_error=False
    )
    assert not failed.success
    assert f"site {site.site_id} on {DATES[1]}, site {site.site_id} on {DATES[2]} (never materialised)" in (
        failure_message(failed)
    )

    [request] = partition_recovery_sensor(failure_context(instance, failed))
    assert request.partition_key == days[0].key
    assert set(request.asset_selection) == set(planning)
    assert run_requested(job, instance, request).success
    assert latest_run(engine, site.site_id, DATES[0]).run.dagster_run_id != failed.run_id
    assert latest_run(engine, site.site_id, DATES[1]) is None


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("removed", "not in the sites table"),
        ("invalid", "is not a valid site (pv_kwp"),
        ("config-not-an-object", "is not a valid site (config: expected a JSON object, got 'edited by hand')"),
    ],
)
def test_a_site_that_cannot_be_planned_fails_only_its_own_days(job, instance, engine, make_site, fault, words):
    """A run over several sites (a day-ahead block, a backfill of a few dates across the fleet)
    in which one site was removed from the sites table, or its stored row no longer validates."""
    first, broken, last = (make_site("KL_MALL", (DATES[0],)) for _ in range(3))
    row = sites.c.site_id == broken.site_id
    with engine.begin() as connection:
        if fault == "removed":
            connection.execute(delete(sites).where(row))
        elif fault == "invalid":
            connection.execute(update(sites).where(row).values(pv_kwp=-1.0))
        else:
            connection.execute(update(sites).where(row).values(config="edited by hand"))
    days = [SiteDay(site.site_id, DATES[0]) for site in (first, broken, last)]

    failed = run_site_days(job, instance, days)

    assert not failed.success
    message = failure_message(failed)
    assert f"1 site-day(s) cannot be planned: site {broken.site_id} on {DATES[0]}: " in message
    assert words in message and first.site_id not in message and last.site_id not in message
    requests = partition_recovery_sensor(failure_context(instance, failed))
    assert [request.partition_key for request in requests] == [days[0].key, days[2].key]
    assert all(run_requested(job, instance, request).success for request in requests)
    assert [latest_run(engine, site.site_id, DATES[0]) is not None for site in (first, broken, last)] == [True, False, True]


def test_a_day_whose_plan_breaks_a_hard_constraint_is_split_off_and_the_others_stored(
    job, instance, engine, make_site, monkeypatch
):
    from dispatch_pipeline.defs.dispatch import ops

    site = make_site("KL_MALL", DATES[:4])
    bad = SiteDay(site.site_id, DATES[1])
    real_attempt = ops.attempt_milp

    def breaking_on_one_day(problem, solver, runner, on_start=None):
        outcome = real_attempt(problem, solver, runner, on_start)
        if problem.day.date == bad.date:
            outcome.schedule.grid_import = outcome.schedule.grid_import + 10.0
        return outcome

    monkeypatch.setattr(ops, "attempt_milp", breaking_on_one_day)
    days = [SiteDay(site.site_id, date) for date in DATES[:4]]
    failed = run_site_days(job, instance, days)
    assert not failed.success
    assert f"1 of 4 site-day(s) break a hard constraint; nothing was stored: {bad.key}" in failure_message(failed)
    assert all(latest_run(engine, site.site_id, date) is None for date in DATES[:4])

    requests = partition_recovery_sensor(failure_context(instance, failed))

    assert [(dict(r.tags)["dagster/asset_partition_range_start"], dict(r.tags)["dagster/asset_partition_range_end"])
            for r in requests if r.partition_key is None] == [(days[2].key, days[3].key)]
    assert [r.partition_key for r in requests if r.partition_key is not None] == [days[0].key]
    assert all(run_requested(job, instance, request).success for request in requests)
    stored = {date for date in DATES[:4] if latest_run(engine, site.site_id, date) is not None}
    assert stored == set(DATES[:4]) - {bad.date}


def test_runs_that_cannot_or_need_not_be_split_are_left_alone(job, instance, engine, make_site, capfd):
    site = make_site("KL_MALL")
    save_forecast(engine, site.site_id, demo_forecast("KL_MALL", DATES[0]).iloc[:-1], ISSUED_AT)
    single = run_site_days(job, instance, [SiteDay(site.site_id, DATES[0])])
    assert not single.success
    capfd.readouterr()
    assert partition_recovery_sensor(failure_context(instance, single)) is None
    assert f"run {single.run_id}: a run of one site-day" in capfd.readouterr().err

    for date in DATES[1:3]:
        save_forecast(engine, site.site_id, demo_forecast("KL_MALL", date), ISSUED_AT)
    days = [SiteDay(site.site_id, date) for date in DATES[:3]]
    recovering = run_site_days(job, instance, days, tags={RECOVERS_TAG: "an-earlier-run"})
    assert not recovering.success
    capfd.readouterr()
    assert partition_recovery_sensor(failure_context(instance, recovering)) is None
    assert "itself a recovery run of an-earlier-run" in capfd.readouterr().err


def test_one_tick_passes_the_runs_it_leaves_alone_and_splits_the_next(job, instance, engine, make_site):
    """Dagster ends a run status sensor's tick at the sensor's first result: failed runs with
    nothing to split must not return one, or each would hold the next split back a tick."""
    context = dg.build_sensor_context(instance=instance)
    list(partition_recovery_sensor.evaluate_tick(context).run_requests or [])  # sets the cursor
    assert context.cursor

    lone = [make_site("KL_MALL") for _ in range(3)]
    for each in lone:  # one-site-day runs failing on an incomplete forecast: nothing to split
        save_forecast(engine, each.site_id, demo_forecast("KL_MALL", DATES[0]).iloc[:-1], ISSUED_AT)
        assert not run_site_days(job, instance, [SiteDay(each.site_id, DATES[0])]).success
    site = make_site("KL_MALL", DATES[:2])
    save_forecast(engine, site.site_id, demo_forecast("KL_MALL", DATES[2]).iloc[:-1], ISSUED_AT)
    ranged = run_site_days(job, instance, [SiteDay(site.site_id, date) for date in DATES[:3]])
    assert not ranged.success

    tick = partition_recovery_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=context.cursor)
    )
    [request] = tick.run_requests
    assert request.tags[RECOVERS_TAG] == ranged.run_id
    assert request.tags["dagster/asset_partition_range_end"] == SiteDay(site.site_id, DATES[1]).key


def test_step_failures_without_incomplete_inputs_name_no_partitions():
    assert incomplete_partitions([]) == set()
    assert recovery_requests(dg.DagsterRun(job_name="j", tags={}), {"2025-05-05|S"}, None) == []


def test_unbroken_ranges_split_at_gaps_and_sites():
    days = [SiteDay("A", DATES[0]), SiteDay("A", DATES[1]), SiteDay("A", DATES[3]), SiteDay("B", DATES[4])]
    assert unbroken_ranges(days) == [days[:2], [days[2]], [days[3]]]


def test_retries_of_a_failed_run_request_the_same_runs(instance):
    keys = [SiteDay("S", date).key for date in DATES[:4]]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    first = dg.DagsterRun(job_name="j", run_id="first-attempt", tags=tags)
    retry = dg.DagsterRun(
        job_name="j", run_id="second-attempt", tags=tags, root_run_id="first-attempt", parent_run_id="first-attempt"
    )
    instance.add_dynamic_partitions("sites", ["S"])
    requests = [recovery_requests(run, {keys[1]}, instance) for run in (first, retry)]
    assert [[r.run_key for r in each] for each in requests] == [
        [f"first-attempt:{keys[0]}", f"first-attempt:{keys[2]}..{keys[3]}"]
    ] * 2
    assert {r.tags[RECOVERS_TAG] for each in requests for r in each} == {"first-attempt"}


def test_recovery_runs_plan_with_the_failed_runs_strategy(instance):
    keys = [SiteDay("STRAT", date).key for date in DATES[:3]]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1],
            "dispatch/strategy": "rule_based"}
    instance.add_dynamic_partitions("sites", ["STRAT"])
    run = dg.DagsterRun(job_name="j", run_id="rule-based-backfill-run", tags=tags)
    requests = recovery_requests(run, {keys[1]}, instance)
    assert len(requests) == 2
    assert all(r.tags["dispatch/strategy"] == "rule_based" for r in requests)


def test_a_failed_block_of_sites_is_replanned_in_blocks_of_neighbours(instance):
    """A day-ahead run of five neighbouring sites, one without a complete forecast: two runs of
    two sites each, not four runs of one."""
    sites = [f"NB_{letter}" for letter in "ABCDE"]
    instance.add_dynamic_partitions("sites", sites)
    days = [SiteDay(site_id, DATES[0]) for site_id in sites]
    tags = {"dagster/asset_partition_range_start": days[0].key, "dagster/asset_partition_range_end": days[-1].key,
            "dispatch/planning": "day_ahead", "dispatch/date": DATES[0].isoformat()}
    run = dg.DagsterRun(job_name="day_ahead_dispatch_job", run_id="block-run", tags=tags)

    requests = recovery_requests(run, {days[2].key}, instance)

    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in requests] == [(days[0].key, days[1].key), (days[3].key, days[4].key)]
    assert all(r.tags["dispatch/sites"] == "2" and "dispatch/site" not in r.tags for r in requests)
    # Found by the tags operators filter a day's runs by, as the failed run was.
    assert all(r.tags["dispatch/date"] == DATES[0].isoformat() for r in requests)
    assert all(r.tags["dispatch/planning"] == "day_ahead" and "dispatch/tick" not in r.tags for r in requests)


@pytest.mark.parametrize("data_arrives", [True, False], ids=["retry-plans-all", "last-attempt-split"])
def test_a_run_the_daemon_will_retry_is_left_to_its_retry(
    job, instance, engine, make_site, database_url, snapshots_dir, data_arrives
):
    # Split at once, the recovery runs and a retry that finds the missing forecast arrived would
    # both store the same days (side by side, neither sees the other's plans before storing).
    from dispatch_pipeline.storage import list_runs
    from tests.pipeline.retried_job import pipeline_job, reexecute

    dates, gap = DATES[:4], DATES[2]
    site = make_site("BERLIN_DEPOT")
    for date in dates:
        if date != gap:
            save_forecast(engine, site.site_id, demo_forecast("BERLIN_DEPOT", date), ISSUED_AT)
    days = [SiteDay(site.site_id, date) for date in dates]
    failed = pipeline_job(database_url, str(snapshots_dir)).execute_in_process(
        instance=instance, tags=partition_range_tags(days), raise_on_error=False
    )
    assert not failed.success
    instance.add_run_tags(failed.run_id, {"dagster/will_retry": "true"})  # as run_retries does
    assert partition_recovery_sensor(failure_context(instance, failed)) is None

    if data_arrives:
        save_forecast(engine, site.site_id, demo_forecast("BERLIN_DEPOT", gap), ISSUED_AT)
    retried = reexecute(instance, failed.run_id, database_url, str(snapshots_dir), from_failure=True,
                        tags={"dagster/retry_number": "1"})
    assert retried.success == data_arrives
    if not data_arrives:
        instance.add_run_tags(retried.run_id, {"dagster/will_retry": "false"})  # the last attempt
        requests = partition_recovery_sensor(failure_context(instance, retried))
        assert [request.tags[RECOVERS_TAG] for request in requests] == [failed.run_id, failed.run_id]
        assert all(run_requested(job, instance, request).success for request in requests)

    stored = [len(list_runs(engine, site.site_id, date)) for date in dates]
    assert stored == ([1, 1, 1, 1] if data_arrives else [1, 1, 0, 1])


@pytest.mark.parametrize("decision", ["true", None], ids=["tagged-after-the-failure", "never-tagged"])
def test_with_run_retries_on_a_run_is_split_only_once_the_daemon_decided_not_to_retry_it(
    job, instance, engine, make_site, monkeypatch, capfd, decision
):
    """Dagster stores a run's failure first and tags `dagster/will_retry` after it: a tick that
    reads the run in between must not split a run the daemon then retries."""
    from dispatch_pipeline.defs.automation import recovery

    site = make_site("BERLIN_DEPOT")
    for date in DATES[:3]:
        forecast = demo_forecast("BERLIN_DEPOT", date)
        save_forecast(engine, site.site_id, forecast.iloc[:-3] if date == DATES[2] else forecast, ISSUED_AT)
    failed = run_site_days(job, instance, [SiteDay(site.site_id, date) for date in DATES[:3]])
    assert not failed.success
    # On from here: with it on during the run, Dagster would have tagged the run already.
    monkeypatch.setattr(dg.DagsterInstance, "run_retries_enabled", property(lambda self: True))
    monkeypatch.setattr(recovery, "RETRY_DECISION_WAIT_SECONDS", 0.5)
    context = failure_context(instance, failed)  # the run as read before the tag
    assert "dagster/will_retry" not in context.dagster_run.tags
    if decision is not None:
        instance.add_run_tags(failed.run_id, {"dagster/will_retry": decision})
    capfd.readouterr()

    assert partition_recovery_sensor(context) is None
    logged = capfd.readouterr().err
    if decision is None:
        assert "whether the daemon retries it is not recorded (dagster/will_retry missing after 0.5 s)" in logged
    else:
        assert "the daemon retries it (dagster/will_retry)" in logged
    assert all(latest_run(engine, site.site_id, date) is None for date in DATES[:3])

    instance.add_run_tags(failed.run_id, {"dagster/will_retry": "false"})  # the last attempt
    [request] = partition_recovery_sensor(failure_context(instance, failed))
    assert request.tags["dagster/asset_partition_range_start"] == SiteDay(site.site_id, DATES[0]).key
    assert request.tags["dagster/asset_partition_range_end"] == SiteDay(site.site_id, DATES[1]).key
