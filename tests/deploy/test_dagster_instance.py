"""The Dagster instance of dagster_home/dagster.yaml on PostgreSQL: its storage keeps connections
open, so a backfill run stores thousands of events without opening a connection for each."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
import yaml
from sqlalchemy import event
from sqlalchemy.pool import Pool

from dispatch_pipeline.dagster_instance import PooledPostgresStorage
from dispatch_pipeline.defs.local_runs import build_local_job, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay, site_day_partitions
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import open_database, save_forecast, upsert_site
from tests.deploy.conftest import repo_dagster_home
from tests.postgres import scratch_database

pytestmark = pytest.mark.postgres

DATES = [dt.date(2025, 3, 1) + dt.timedelta(days=n) for n in range(4)]
ASSETS = ("site_forecast", "site_tariff", "dispatch_schedule", "dispatch_explanations", "dispatch_kpis")


@contextmanager
def _repo_instance(tmp_path: Path, **storage_config: object) -> Iterator[tuple[dg.DagsterInstance, str]]:
    """The repository's dagster.yaml (with `storage_config` added to its storage's config) on a
    scratch Dagster database, and a scratch app database."""
    with scratch_database("postgresql", tmp_path, "dispatch_instance_dagster") as dagster_url, \
            scratch_database("postgresql", tmp_path, "dispatch_instance_app") as app_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = {
            **repo_dagster_home(home, dagster_url.rsplit("/", 1)[1]),
            # As .env.example, Compose and Helm set it: a step's materialisations are stored together.
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
        }
        if storage_config:
            config = yaml.safe_load((home / "dagster.yaml").read_text())
            config["storage"]["custom"]["config"].update(storage_config)
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        with mock.patch.dict("os.environ", env), dg.DagsterInstance.get() as instance:
            yield instance, app_url


@pytest.fixture
def repo_instance(tmp_path: Path) -> Iterator[tuple[dg.DagsterInstance, str]]:
    with _repo_instance(tmp_path) as instance_and_url:
        yield instance_and_url


def _job(instance: dg.DagsterInstance, app_url: str) -> dg.JobDefinition:
    return build_local_job(
        pipeline_resources(storage=DispatchStorage(database_url=app_url), solver=DispatchSolver(timeout_ms=5000),
                           pickle_dir=str(Path(instance.storage_directory()) / "snapshots"))
    )


def test_the_instance_storage_keeps_connections_across_a_ranged_run(repo_instance):
    instance, app_url = repo_instance
    assert isinstance(instance.get_ref().storage, PooledPostgresStorage)

    engine = open_database(app_url)
    site = demo_site("KL_MALL").model_copy(update={"site_id": "POOLED"})
    upsert_site(engine, site)
    for date in DATES:
        save_forecast(engine, site.site_id, demo_forecast("KL_MALL", date), dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    instance.add_dynamic_partitions("sites", [site.site_id])
    job = _job(instance, app_url)

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
    # Each step's materialisations were stored in one batch: every event's partition tags are
    # stored under that event's own id.
    records = instance.fetch_materializations(dg.AssetKey("dispatch_schedule"), limit=100).records
    assert sorted(record.partition_key for record in records) == sorted(keys)
    for record in records:
        (tags,) = instance.get_event_tags_for_asset(dg.AssetKey("dispatch_schedule"), filter_event_id=record.storage_id)
        assert f"{tags['dagster/partition/date']}|{tags['dagster/partition/site']}" == record.partition_key
    run_events = instance.all_logs(result.run_id)
    # Each storage engine keeps its connection: a few for the whole run, where dagster-postgres
    # alone opens more than two per event stored (314 for this run).
    assert len(run_events) > 40
    assert len(opened) <= 10, f"{len(opened)} connections opened for {len(run_events)} events"


def test_failed_small_runs_mark_their_partitions_failed_and_large_runs_plan_in_one_event(tmp_path):
    """Runs of more partitions than `planned_event_subsets_above` (2 here) record one planned
    event per asset; smaller ones one per partition, so their partitions show as failed."""
    with _repo_instance(tmp_path, planned_event_subsets_above=2) as (instance, app_url):
        upsert_site(open_database(app_url), demo_site("KL_MALL").model_copy(update={"site_id": "UNPLANNABLE"}))
        instance.add_dynamic_partitions("sites", ["UNPLANNABLE"])  # no forecasts: every run fails
        job, quiet = _job(instance, app_url), {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        single, pair, triple = [[SiteDay("UNPLANNABLE", date) for date in dates]
                                for dates in (DATES[:1], DATES[1:3], DATES[1:4])]
        runs = [run_site_days(job, instance, [days[0], days[-1]], run_config=quiet) for days in (single, pair, triple)]
        assert not any(run.success for run in runs)

        keys = [day.key for day in (*single, *triple)]
        asset = dg.AssetKey("dispatch_schedule")
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            status = instance.get_status_by_partition(asset, keys, site_day_partitions)
        failed = {key for key, value in status.items() if value == dg.AssetPartitionStatus.FAILED}
        # The triple's last day was planned only by the triple, in one event: not marked.
        assert failed == {day.key for day in (*single, *pair)}

        def planned(run: dg.ExecuteInProcessResult) -> list[str | None]:
            events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
            return [e.dagster_event.event_specific_data.partition for e in events if e.dagster_event.asset_key == asset]

        assert [planned(run) for run in runs] == [[day.key for day in single], [day.key for day in pair], [None]]


def test_a_disposed_instance_closes_the_connections_its_storage_kept(tmp_path):
    """A code server builds an instance for each sensor and schedule evaluation and disposes it:
    connections left open until garbage collection piled up on an idle stack."""
    from psycopg import sql

    from tests.postgres import postgres_admin

    def connections_to(database: str) -> int:
        with postgres_admin() as admin:
            query = sql.SQL("SELECT count(*) FROM pg_stat_activity WHERE datname = {}").format(sql.Literal(database))
            return admin.execute(query).fetchone()[0]

    with _repo_instance(tmp_path) as (instance, _):
        database = instance.get_ref().storage.postgres_url.rsplit("/", 1)[1].split("?")[0]
        instance.get_runs(limit=1)
        instance.get_asset_keys()
        instance.all_instigator_state()
        kept = connections_to(database)
        assert kept >= 3, kept  # one per storage engine, kept between calls
        instance.dispose()
        # A closed connection's server process exits a moment after its client has gone.
        deadline = time.monotonic() + 10
        while connections_to(database) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connections_to(database) == 0
