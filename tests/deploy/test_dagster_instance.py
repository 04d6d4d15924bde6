"""The Dagster instance of dagster_home/dagster.yaml on PostgreSQL: its storage keeps connections
open, so a backfill run stores thousands of events without opening a connection for each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from dispatch_pipeline.dagster_instance import PooledPostgresStorage
from dispatch_pipeline.defs.local_runs import build_local_job, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import close_engines, open_database, save_forecast, upsert_site
from tests.deploy.conftest import repo_dagster_home
from tests.postgres import scratch_database

pytestmark = pytest.mark.postgres

DATES = [dt.date(2025, 3, 1) + dt.timedelta(days=n) for n in range(4)]
ASSETS = ("site_forecast", "site_tariff", "dispatch_schedule", "dispatch_explanations", "dispatch_kpis")


@pytest.fixture
def repo_instance(tmp_path: Path) -> Iterator[tuple[dg.DagsterInstance, str]]:
    """The repository's dagster.yaml on a scratch Dagster database, and a scratch app database."""
    with scratch_database("postgresql", tmp_path, "dispatch_instance_dagster") as dagster_url, \
            scratch_database("postgresql", tmp_path, "dispatch_instance_app") as app_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = {
            **repo_dagster_home(home, dagster_url.rsplit("/", 1)[1]),
            # As .env.example, Compose and Helm set them: a step's materialisations are stored
            # together, and a run of many partitions plans them in one event per asset.
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
            "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
        }
        with mock.patch.dict("os.environ", env), dg.DagsterInstance.get() as instance:
            yield instance, app_url
        close_engines()


def test_the_instance_storage_keeps_connections_across_a_ranged_run(repo_instance):
    instance, app_url = repo_instance
    assert isinstance(instance.get_ref().storage, PooledPostgresStorage)

    engine = open_database(app_url)
    site = demo_site("KL_MALL").model_copy(update={"site_id": "POOLED"})
    upsert_site(engine, site)
    for date in DATES:
        save_forecast(engine, site.site_id, demo_forecast("KL_MALL", date), dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    instance.add_dynamic_partitions("sites", [site.site_id])
    job = build_local_job(
        pipeline_resources(storage=DispatchStorage(database_url=app_url), solver=DispatchSolver(timeout_ms=5000),
                           pickle_dir=str(Path(instance.storage_directory()) / "snapshots"))
    )

    opened: list[object] = []
    listener = lambda *_: opened.append(1)  # noqa: E731
    event.listen(Pool, "connect", listener)
    try:
        result = run_site_days(job, instance, [SiteDay(site.site_id, DATES[0]), SiteDay(site.site_id, DATES[-1])])
    finally:
        event.remove(Pool, "connect", listener)

    assert result.success
    keys = {SiteDay(site.site_id, date).key for date in DATES}
    for asset in ASSETS:
        stored = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert keys <= stored, asset
    run_events = instance.all_logs(result.run_id)
    # Each storage engine keeps its connection: a few for the whole run, where dagster-postgres
    # alone opens more than two per event stored (314 for this run).
    assert len(run_events) > 40
    assert len(opened) <= 10, f"{len(opened)} connections opened for {len(run_events)} events"
