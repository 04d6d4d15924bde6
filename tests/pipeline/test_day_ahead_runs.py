"""A day-ahead tick end to end: sites due together share a run, a site with missing data fails
alone, and every other site's plan is stored."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.definitions import ASSETS
from dispatch_pipeline.defs.automation.day_ahead import day_ahead_dispatch_schedule
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.local_runs import build_local_job, run_requested
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import latest_run, open_database, save_forecast, upsert_site
from tests.pipeline.conftest import ISSUED_AT
from tests.postgres import scratch_database

TOMORROW = dt.date(2025, 3, 12)
TICK = dt.datetime(2025, 3, 11, 6, 0, tzinfo=dt.UTC)  # 14:00 in Kuala Lumpur


def evaluate_tick(resources, instance) -> list[dg.RunRequest]:
    definitions = dg.Definitions(
        assets=ASSETS, jobs=[day_ahead_dispatch_job], schedules=[day_ahead_dispatch_schedule], resources=resources
    )
    with dg.build_schedule_context(
        scheduled_execution_time=TICK,
        instance=instance,
        repository_def=definitions.get_repository_def(),
        resources={"storage": resources["storage"]},
    ) as context:
        return list(day_ahead_dispatch_schedule.evaluate_tick(context).run_requests or [])


@pytest.fixture
def own_pipeline(backend, tmp_path):
    """A database of this test's own: the tick plans every due site there, and the session
    database holds other tests' sites in the same timezone."""
    with scratch_database(backend, tmp_path, "dispatch_day_ahead_test") as url:
        resources = pipeline_resources(
            storage=DispatchStorage(database_url=url),
            solver=DispatchSolver(timeout_ms=5000),
            pickle_dir=str(tmp_path / "snapshots"),
        )
        yield open_database(url), resources, build_local_job(resources)


def test_a_tick_plans_ready_sites_in_one_run_and_isolates_missing_data(own_pipeline, instance, persistent_instance):
    engine, resources, job = own_pipeline

    def register(name: str, forecast: pd.DataFrame | None) -> Site:
        site = demo_site("KL_MALL").model_copy(update={"site_id": name})
        upsert_site(engine, site)
        if forecast is not None:
            save_forecast(engine, name, forecast, ISSUED_AT)
        return site

    complete = demo_forecast("KL_MALL", TOMORROW)
    first, second = register("DA_A", complete), register("DA_B", complete)
    incomplete = register("DA_C", complete.iloc[:-4])
    last = register("DA_D", complete)
    sites = [first, second, incomplete, last]
    for partitions_of in (instance, persistent_instance):
        # The schedule reads partitions from the daemon's instance; the runs execute on the test's.
        partitions_of.add_dynamic_partitions("sites", [site.site_id for site in sites])

    requests = evaluate_tick(resources, persistent_instance)

    planned = {request.run_key: request for request in requests}
    pair = f"{SiteDay(first.site_id, TOMORROW).key}..{SiteDay(second.site_id, TOMORROW).key}"
    assert set(planned) == {
        pair,
        SiteDay(incomplete.site_id, TOMORROW).key,
        SiteDay(last.site_id, TOMORROW).key,
    }
    assert planned[pair].partition_key is None  # a key range, in the run's tags

    results = {key: run_requested(job, instance, request) for key, request in planned.items()}
    assert results[pair].success
    assert results[SiteDay(last.site_id, TOMORROW).key].success
    assert not results[SiteDay(incomplete.site_id, TOMORROW).key].success
    for site in (first, second, last):
        stored = latest_run(engine, site.site_id, TOMORROW)
        assert stored is not None and stored.run.status == "ok"
    assert latest_run(engine, incomplete.site_id, TOMORROW) is None

    # Each partition of the shared run shows its own plan in the UI, not the run's summary.
    shown = {
        event.partition: event.materialization.metadata
        for event in results[pair].get_asset_materialization_events()
        if event.asset_key.to_user_string() == "dispatch_schedule"
    }
    assert set(shown) == {SiteDay(site.site_id, TOMORROW).key for site in (first, second)}
    for key, metadata in shown.items():
        site_id = key.split("|")[1]
        assert metadata["site_id"].value == site_id
        stored = latest_run(engine, site_id, TOMORROW)
        assert metadata["objective_value"].value == stored.run.objective_value
        assert metadata["plot"].value.startswith("![day](data:image/png;base64,")
        assert metadata["run/partitions"].value == 2


def test_a_site_whose_price_series_covers_part_of_tomorrow_is_not_ready(tmp_path):
    from dispatch_pipeline.defs.automation.day_ahead import ready_days
    from dispatch_pipeline.storage import save_price_series

    with scratch_database("sqlite", tmp_path) as url:
        engine = open_database(url)
        forecast = demo_forecast("BERLIN_DEPOT", TOMORROW)
        day = demo_site("BERLIN_DEPOT").local_day(TOMORROW)
        prices = pd.DataFrame({"ts": list(day.timestamps()), "buy": 0.2, "sell": 0.1})
        sites = {}
        for name, price_rows in (("PRICED", prices), ("HALF_PRICED", prices.iloc[:48]), ("TOU_ONLY", None)):
            sites[name] = demo_site("BERLIN_DEPOT").model_copy(update={"site_id": name})
            upsert_site(engine, sites[name])
            save_forecast(engine, name, forecast, ISSUED_AT)
            if price_rows is not None:
                save_price_series(engine, name, price_rows, ISSUED_AT)

        ready = ready_days(engine, sites, [(name, TOMORROW) for name in sites])
        # The day after, with no forecast stored: not ready, whatever the day before is.
        after = TOMORROW + dt.timedelta(days=1)
        ready_over_two_days = ready_days(engine, sites, [("PRICED", TOMORROW), ("PRICED", after)])

    assert ready == {("PRICED", TOMORROW), ("TOU_ONLY", TOMORROW)}
    assert ready_over_two_days == {("PRICED", TOMORROW)}
