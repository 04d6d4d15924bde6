"""`stale_plan_sensor`: a day not yet begun is planned again once per forecast or price issue
stored after the one its plan read, and once per change of its site; days under way and plans of
the API or CLI are left alone."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.definitions import ASSETS
from dispatch_pipeline.defs.automation import replanning
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.automation.replanning import days_ahead, stale_plan_sensor
from dispatch_pipeline.defs.common import PLANNING_TAG
from dispatch_pipeline.defs.local_runs import run_site_day, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay, parse_site_day, run_partition_keys
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources
from dispatch_pipeline.demo import demo_forecast
from dispatch_pipeline.storage import (
    latest_run,
    save_forecast,
    save_price_series,
    save_runs,
    upsert_site,
)
from tests.pipeline.conftest import ISSUED_AT
from tests.storage.conftest import build_result

# 16:00 in Kuala Lumpur (UTC+8) on 2025-06-01: its tomorrow is a day no other test plans.
NOW = dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.UTC)
TODAY, TOMORROW = dt.date(2025, 6, 1), dt.date(2025, 6, 2)
NEWER = ISSUED_AT + dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def sensor_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replanning, "current_time", lambda: NOW)


@pytest.fixture
def evaluate(persistent_instance: dg.DagsterInstance, database_url: str):
    """Evaluate the sensor as the daemon does, on an instance with a ref (its partitioned requests
    are checked against the job's partitions): its requests as {partition key: request}, its new
    cursor and why it skipped, if it did."""
    storage = DispatchStorage(database_url=database_url)
    definitions = dg.Definitions(
        assets=ASSETS, jobs=[day_ahead_dispatch_job], sensors=[stale_plan_sensor],
        resources=pipeline_resources(storage=storage),
    )

    def evaluate_tick(cursor: str | None = None):
        # As a context manager: the context's own instance must be closed (see test_automation).
        with dg.build_sensor_context(
            instance=persistent_instance, instance_ref=persistent_instance.get_ref(), cursor=cursor,
            repository_def=definitions.get_repository_def(), resources={"storage": storage},
        ) as context:
            result = stale_plan_sensor.evaluate_tick(context)
        requested = {
            key: request
            for request in result.run_requests or []
            for key in (
                [request.partition_key] if request.partition_key
                else run_partition_keys(request.tags, persistent_instance)
            )
        }
        return requested, result.cursor, result.skip_message

    return evaluate_tick


def re_issue_the_morning(engine, site_id: str, date: dt.date) -> None:
    save_forecast(engine, site_id, demo_forecast("KL_MALL", date).iloc[:32], NEWER)


def test_a_plan_made_stale_by_a_newer_forecast_is_planned_again_once(job, instance, engine, make_site, evaluate):
    site = make_site("KL_MALL", (TOMORROW,))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success
    requested, cursor, _ = evaluate()
    assert day.key not in requested

    re_issue_the_morning(engine, site.site_id, TOMORROW)
    requested, cursor, _ = evaluate(cursor)
    request = requested[day.key]
    assert request.tags[PLANNING_TAG] == "replan"
    # Once per issue: the next evaluation leaves it to the run requested.
    again, _, skipped = evaluate(cursor)
    assert day.key not in again
    if not again:  # other tests' days may be stale too
        assert "a re-plan requested already" in skipped

    assert run_requested(job, instance, requested, request)
    stored = latest_run(engine, site.site_id, TOMORROW)
    assert stored.run.forecast_issued_at == NEWER
    # Planned from the newest issue, the day is no longer stale, cursor or not.
    assert day.key not in evaluate()[0]


def test_a_plan_whose_issue_is_loaded_again_with_other_values_is_planned_again_once_per_load(
    job, instance, engine, make_site, evaluate
):
    site = make_site("KL_MALL", (TOMORROW,))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success
    planned = latest_run(engine, site.site_id, TOMORROW).run
    assert planned.forecast_issued_at == ISSUED_AT and planned.forecast_stored_at is not None
    assert day.key not in evaluate()[0]

    # The issue the plan read, corrected in place: the same issue time, other values for the morning.
    corrected = demo_forecast("KL_MALL", TOMORROW).iloc[:32]
    save_forecast(engine, site.site_id, corrected.assign(load_kw=corrected["load_kw"] * 1.2), ISSUED_AT)
    requested, cursor, _ = evaluate()
    request = requested[day.key]
    assert request.tags[PLANNING_TAG] == "replan"
    assert day.key not in evaluate(cursor)[0]

    assert run_requested(job, instance, requested, request)
    replanned = latest_run(engine, site.site_id, TOMORROW).run
    assert replanned.forecast_issued_at == ISSUED_AT
    assert replanned.forecast_stored_at > planned.forecast_stored_at
    assert day.key not in evaluate(cursor)[0]

    # Corrected once more: a new state of the day's inputs, a new request (and run key).
    save_forecast(engine, site.site_id, corrected.assign(load_kw=corrected["load_kw"] * 1.3), ISSUED_AT)
    again, cursor, _ = evaluate(cursor)
    request = again[day.key]
    assert request.run_key != requested[day.key].run_key
    assert run_requested(job, instance, again, request)
    assert day.key not in evaluate()[0]


def run_requested(job, instance, requested: dict, request) -> bool:
    """Run `request` (one of the sensor's, shared by the days it plans) as the daemon would:
    whether its run succeeded."""
    days = [parse_site_day(key) for key, each in requested.items() if each is request]
    return run_site_days(job, instance, days, tags=request.tags).success


def with_battery(site: Site, **changes: float) -> Site:
    return site.model_copy(update={"bess": site.bess.model_copy(update=changes)})


def test_a_site_registered_again_with_other_values_is_planned_again_once_per_change(
    job, instance, engine, make_site, evaluate
):
    site = make_site("KL_MALL", (TOMORROW,))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success
    planned = latest_run(engine, site.site_id, TOMORROW).run
    # Imported again as it is (the same sites.yaml, every day from cron): nothing to re-plan.
    upsert_site(engine, site)
    assert day.key not in evaluate()[0]

    bigger = with_battery(site, capacity_kwh=site.bess.capacity_kwh * 2)
    upsert_site(engine, bigger)
    requested, cursor, _ = evaluate()
    request = requested[day.key]
    assert request.tags[PLANNING_TAG] == "replan"
    assert day.key not in evaluate(cursor)[0]

    # Changed again before the re-plan ran: a new request (and run key) for the latest values.
    upsert_site(engine, with_battery(bigger, max_charge_kw=bigger.bess.max_charge_kw / 2))
    again, cursor, _ = evaluate(cursor)
    request = again[day.key]
    assert request.run_key != requested[day.key].run_key
    assert day.key not in evaluate(cursor)[0]

    assert run_requested(job, instance, again, request)
    replanned = latest_run(engine, site.site_id, TOMORROW).run
    assert replanned.run_id != planned.run_id and replanned.forecast_issued_at == planned.forecast_issued_at
    # Planned after the change, the day is no longer stale, cursor or not.
    assert day.key not in evaluate()[0]


def test_a_plan_of_the_old_registration_stored_after_the_re_plan_is_planned_again(
    job, instance, engine, make_site, evaluate
):
    site = make_site("KL_MALL", (TOMORROW,))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success
    planned = latest_run(engine, site.site_id, TOMORROW).run
    upsert_site(engine, with_battery(site, capacity_kwh=site.bess.capacity_kwh * 2))
    requested, cursor, _ = evaluate()
    assert run_requested(job, instance, requested, requested[day.key])
    assert day.key not in evaluate(cursor)[0]

    # A run under way at the change, made with the old registration, stores its plan last: the
    # day's latest plan is stale again, its inputs as they were when the re-plan was requested.
    late = build_result(site.site_id, TOMORROW).model_copy(update={
        name: getattr(planned, name)
        for name in ("forecast_issued_at", "prices_issued_at", "forecast_stored_at", "prices_stored_at",
                     "site_updated_at")
    })
    save_runs(engine, [late], source="dagster")
    again, cursor, _ = evaluate(cursor)
    assert day.key in again
    assert again[day.key].run_key != requested[day.key].run_key
    assert day.key not in evaluate(cursor)[0]
    assert run_requested(job, instance, again, again[day.key])
    assert latest_run(engine, site.site_id, TOMORROW).run.run_id != late.run_id
    assert day.key not in evaluate()[0]


def test_a_reload_that_changes_no_value_of_the_day_leaves_its_plan_alone(job, instance, engine, make_site, evaluate):
    day_after = TOMORROW + dt.timedelta(days=1)
    site = make_site("KL_MALL", (TOMORROW, day_after))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success

    # The issue loaded again: the planned day as it is, the day after with other values.
    changed = demo_forecast("KL_MALL", day_after)
    both = pd.concat([demo_forecast("KL_MALL", TOMORROW), changed.assign(load_kw=changed["load_kw"] + 5.0)])
    save_forecast(engine, site.site_id, both.reset_index(drop=True), ISSUED_AT)

    assert day.key not in evaluate()[0]


def test_a_price_series_stored_after_a_plan_on_the_tariff_makes_it_stale_whenever_issued(
    job, instance, engine, make_site, evaluate
):
    site = make_site("KL_MALL", (TOMORROW,))
    day = SiteDay(site.site_id, TOMORROW)
    assert run_site_day(job, instance, day).success
    assert latest_run(engine, site.site_id, TOMORROW).run.prices_issued_at is None  # the ToU tariff
    local = site.local_day(TOMORROW, 15)
    prices = pd.DataFrame({"ts": local.timestamps(), "buy": 0.3, "sell": 0.1})
    # Published long before the plan was made, loaded after it: a plan made now reads it.
    save_price_series(engine, site.site_id, prices, ISSUED_AT)

    requested, _, _ = evaluate()
    assert day.key in requested
    assert run_site_days(job, instance, [day], tags=requested[day.key].tags).success
    assert latest_run(engine, site.site_id, TOMORROW).run.prices_issued_at == ISSUED_AT
    assert day.key not in evaluate()[0]


def test_days_under_way_and_plans_of_the_api_or_cli_are_left_alone(job, instance, engine, make_site, evaluate):
    begun = make_site("KL_MALL", (TODAY,))
    assert run_site_day(job, instance, SiteDay(begun.site_id, TODAY)).success
    re_issue_the_morning(engine, begun.site_id, TODAY)

    asked_for = make_site("KL_MALL", (TOMORROW,))
    assert run_site_day(job, instance, SiteDay(asked_for.site_id, TOMORROW)).success
    # Then planned through the CLI (`solve --store`) with the caller's own inputs: the latest plan.
    # It read the forecast issue the re-issue below supersedes: only its source keeps it as it is.
    by_hand = build_result(asked_for.site_id, TOMORROW).model_copy(update={"forecast_issued_at": ISSUED_AT})
    save_runs(engine, [by_hand], source="cli")
    re_issue_the_morning(engine, asked_for.site_id, TOMORROW)

    requested, _, _ = evaluate()
    assert SiteDay(begun.site_id, TODAY).key not in requested
    assert SiteDay(asked_for.site_id, TOMORROW).key not in requested


@pytest.mark.parametrize(
    ("timezone", "now", "expected"),
    [
        # 16:00 in Kuala Lumpur: tomorrow and the day after (the last date partition, UTC-based).
        ("Asia/Kuala_Lumpur", NOW, [TOMORROW, dt.date(2025, 6, 3)]),
        # 19:30 UTC is 09:30 on June 2 in Kiritimati (UTC+14): its tomorrow is the last partition.
        ("Pacific/Kiritimati", dt.datetime(2025, 6, 1, 19, 30, tzinfo=dt.UTC), [dt.date(2025, 6, 3)]),
        # 01:00 UTC on June 2 is 14:00 on June 1 in Pago Pago (UTC-11): three days ahead.
        ("Pacific/Pago_Pago", dt.datetime(2025, 6, 2, 1, 0, tzinfo=dt.UTC), [TOMORROW, dt.date(2025, 6, 3), dt.date(2025, 6, 4)]),
    ],
)
def test_days_ahead_run_from_the_sites_tomorrow_to_the_last_date_partition(timezone, now, expected):
    from dispatch_pipeline.defs.partitions import last_date_partition

    assert days_ahead(timezone, now, last_date_partition(now)) == expected
