"""Deployment smoke test: the real Dagster processes on PostgreSQL, driven through GraphQL.

Starts the code server, webserver and daemon against a copy of `dagster_home/dagster.yaml` on
scratch PostgreSQL databases (see conftest.py), launches one site x date partition of the
day-ahead job through the webserver's GraphQL API, waits for the daemon to dequeue it and the run
to succeed, reads the asset lineage and the partition's materialisations back through GraphQL,
checks the stored dispatch run, and shuts every process down, leaving none behind. Before that, an
asset backfill of three days of another site (`deploy/backfill.py`) runs through the daemon, as
one run that dagster.yaml's WarmRunLauncher forks.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING
from unittest import mock

import dagster as dg
import pytest
from sqlalchemy import select

from deploy.backfill import main as launch_backfill
from deploy.smoke import (
    JOB_NAME,
    PIPELINE_ASSETS,
    SITES_PARTITIONS_NAME,
    DagsterProcesses,
    wait_until,
)
from dispatch_pipeline.dagster_run_launcher import RUN_PID_TAG
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import open_database, save_forecast, upsert_site
from dispatch_pipeline.storage.tables import dispatch_runs

if TYPE_CHECKING:
    from tests.deploy.conftest import Databases

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SITE_ID = "KL_MALL"
DATE = dt.date(2025, 3, 11)
PARTITION_KEY = f"{DATE.isoformat()}|{SITE_ID}"  # dimensions sorted by name: date, then site
ISSUED_AT = dt.datetime(2025, 3, 10, 6, 0, tzinfo=dt.UTC)
RUN_TIMEOUT_S = 120.0
BACKFILL_SITE_ID = "BERLIN_DEPOT"
BACKFILL_DATES = [dt.date(2025, 3, 12) + dt.timedelta(days=n) for n in range(3)]


def seed_application_database(url: str) -> None:
    """Migrate the app database, register one demo site and its forecast for DATE."""
    engine = open_database(url)
    site = demo_site(SITE_ID)
    upsert_site(engine, site)
    save_forecast(engine, SITE_ID, demo_forecast(site, DATE), ISSUED_AT)


def test_a_backfill_through_the_daemon_runs_in_warm_forked_processes(
    dagster_stack: DagsterProcesses, smoke_databases: Databases, dagster_env: dict[str, str]
) -> None:
    graphql = dagster_stack.graphql
    assert graphql is not None
    engine = open_database(smoke_databases.app_url)
    site = demo_site(BACKFILL_SITE_ID)
    upsert_site(engine, site)
    for date in BACKFILL_DATES:
        save_forecast(engine, BACKFILL_SITE_ID, demo_forecast(site, date), ISSUED_AT)
    graphql.add_dynamic_partition(SITES_PARTITIONS_NAME, BACKFILL_SITE_ID)

    first, last = BACKFILL_DATES[0].isoformat(), BACKFILL_DATES[-1].isoformat()
    argv = ["--url", f"{graphql.base_url}/graphql", "--from", first, "--to", last, "--sites", BACKFILL_SITE_ID,
            "--tag", "smoke=backfill"]
    assert launch_backfill(argv) == 0

    with mock.patch.dict(os.environ, dagster_env), dg.DagsterInstance.get() as instance:

        def backfill_runs() -> list[dg.DagsterRun]:
            return list(instance.get_runs(filters=dg.RunsFilter(tags={"smoke": "backfill"})))

        wait_until(lambda: dagster_stack.check_alive() or (backfill_runs() and all(r.is_finished for r in backfill_runs())),
                   RUN_TIMEOUT_S, f"the backfill of {BACKFILL_SITE_ID} {first}..{last} to finish",
                   why=lambda: [(r.run_id, r.status.value) for r in backfill_runs()])
        runs = backfill_runs()
    # The assets' backfill policy puts the site's days in one run, launched by the WarmRunLauncher.
    assert [(run.status, run.tags["dagster/asset_partition_range_start"]) for run in runs] == [
        (dg.DagsterRunStatus.SUCCESS, f"{first}|{BACKFILL_SITE_ID}")
    ]
    with engine.connect() as connection:
        stored = connection.execute(
            select(dispatch_runs.c.date, dispatch_runs.c.dagster_run_id).where(dispatch_runs.c.site_id == BACKFILL_SITE_ID)
        ).all()
    assert sorted(tuple(row) for row in stored) == [(date, runs[0].run_id) for date in BACKFILL_DATES]
    assert runs[0].tags[RUN_PID_TAG].isdigit()


def test_one_partition_through_graphql(
    dagster_stack: DagsterProcesses, smoke_databases: Databases
) -> None:
    graphql = dagster_stack.graphql
    assert graphql is not None

    # Seed: the site and its forecast (prices come from the site's ToU tariff), and the partition.
    seed_application_database(smoke_databases.app_url)
    graphql.add_dynamic_partition(SITES_PARTITIONS_NAME, SITE_ID)

    # Launch one partition; the QueuedRunCoordinator queues it, the daemon launches it.
    run_id = graphql.launch_partition_run(
        JOB_NAME,
        PARTITION_KEY,
        tags={
            "dagster/partition/date": DATE.isoformat(),
            "dagster/partition/site": SITE_ID,
            "dispatch/site": SITE_ID,
            "dispatch/date": DATE.isoformat(),
        },
    )
    run = graphql.wait_for_run(run_id, RUN_TIMEOUT_S)
    if run["status"] != "SUCCESS":
        errors = "\n".join(graphql.run_errors(run_id))
        pytest.fail(f"run {run_id} ended {run['status']}:\n{errors}", pytrace=False)
    assert run["jobName"] == JOB_NAME
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == PARTITION_KEY
    # Launched by dagster.yaml's WarmRunLauncher, in a process forked from its fork server.
    assert tags[RUN_PID_TAG].isdigit(), tags

    # Lineage: forecast (and tariff) -> schedule -> explanations and KPIs.
    nodes = graphql.asset_nodes()
    assert set(PIPELINE_ASSETS) <= set(nodes), sorted(nodes)
    assert nodes["site_forecast"]["deps"] == set()
    assert nodes["site_tariff"]["deps"] == set()
    assert nodes["site_forecast"]["dependents"] == {"dispatch_schedule"}
    assert nodes["dispatch_schedule"]["deps"] == {"site_forecast", "site_tariff"}
    assert nodes["dispatch_schedule"]["dependents"] == {"dispatch_explanations", "dispatch_kpis"}
    assert nodes["dispatch_explanations"]["deps"] == {"dispatch_schedule"}
    assert nodes["dispatch_kpis"]["deps"] == {"dispatch_schedule"}
    for asset in PIPELINE_ASSETS:
        assert nodes[asset]["isPartitioned"], asset
        assert JOB_NAME in nodes[asset]["jobNames"], (asset, nodes[asset]["jobNames"])

    # Every asset of the partition was materialised by this run.
    for asset in PIPELINE_ASSETS:
        events = graphql.materializations(asset, PARTITION_KEY)
        assert [(e["partition"], e["runId"]) for e in events] == [(PARTITION_KEY, run_id)], asset

    # The plan is in the application database, stored by Dagster.
    engine = open_database(smoke_databases.app_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(dispatch_runs.c.source, dispatch_runs.c.dagster_run_id).where(
                dispatch_runs.c.site_id == SITE_ID, dispatch_runs.c.date == DATE
            )
        ).all()
    assert [tuple(row) for row in rows] == [("dagster", run_id)]
