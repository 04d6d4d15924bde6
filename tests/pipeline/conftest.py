"""Fixtures for the pipeline tests: a scratch application database per backend and session,
an ephemeral Dagster instance, the pipeline job bound to them, and sites with forecasts.

PostgreSQL tests need the server at 127.0.0.1:5432 (trust auth, user postgres). If it is not
reachable they fail, unless DISPATCH_SKIP_POSTGRES=1 says to skip them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.defs.local_runs import build_local_job
from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
from dispatch_pipeline.defs.resources_map import pipeline_resources
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import open_database, save_forecast, upsert_site
from tests.postgres import BACKENDS, scratch_database

ISSUED_AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(backend, tmp_path_factory.mktemp("db"), "dispatch_pipeline_test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Engine:
    return open_database(database_url)


@pytest.fixture(scope="session")
def resources(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return pipeline_resources(
        storage=DispatchStorage(database_url=database_url),
        solver=DispatchSolver(timeout_ms=5000),
        pickle_dir=str(tmp_path_factory.mktemp("snapshots")),
    )


@pytest.fixture(scope="session")
def job(resources: dict[str, Any]) -> dg.JobDefinition:
    return build_local_job(resources)


@pytest.fixture(scope="session")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def persistent_instance() -> Iterator[dg.DagsterInstance]:
    """A temporary instance with an instance ref (schedule and sensor contexts need one).

    Session-scoped: Dagster keeps a reference to the instance of the definitions it last loaded,
    and Definitions built after this instance closes would trip over it.
    """
    with dg.instance_for_test() as instance:
        yield instance


SiteFactory = Callable[..., Site]


@pytest.fixture
def make_site(engine: Engine, instance: dg.DagsterInstance) -> SiteFactory:
    """A registered copy of a demo site under a fresh id, with forecasts for `dates`."""

    def make(template: str = "KL_MALL", dates: tuple[dt.date, ...] = (), prefix: str = "T") -> Site:
        site = demo_site(template).model_copy(update={"site_id": f"{prefix}_{uuid.uuid4().hex[:10]}"})
        upsert_site(engine, site)
        instance.add_dynamic_partitions("sites", [site.site_id])
        for date in dates:
            save_forecast(engine, site.site_id, demo_forecast(template, date), ISSUED_AT)
        return site

    return make


@pytest.fixture
def snapshots_dir(resources: dict[str, Any]) -> Path:
    return Path(resources["site_day_io_manager"].base_dir)


def price_table(site_id: str = "BERLIN_DEPOT") -> pd.DataFrame:
    """Spot prices for Berlin's 2025-03-11 (UTC+1), every quarter-hour: negative around noon."""
    ts = pd.date_range("2025-03-10T23:00:00Z", periods=96, freq="15min")
    hours = np.arange(96) / 4
    buy = 0.25 + 0.1 * np.cos((hours - 19) / 24 * 2 * np.pi) - np.where((hours >= 11) & (hours < 14), 0.3, 0.0)
    return pd.DataFrame({
        "site_id": site_id,
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "buy": buy.round(4),
        "sell": (buy - 0.12).round(4),
    })
