"""Fixtures of the deployment smoke test: scratch databases, a Dagster home, and the three
Dagster processes (code server, webserver, daemon) started against them.

Needs the PostgreSQL server at 127.0.0.1:5432 (trust auth, user postgres). If it is not reachable
the test fails, unless DISPATCH_SKIP_POSTGRES=1 says to skip it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from deploy.smoke import (
    DagsterGraphQL,
    DagsterProcesses,
    SmokeError,
    free_port,
    grpc_workspace_yaml,
    port_open,
    wait_until,
)
from tests.postgres import POSTGRES_HOST, POSTGRES_PORT, postgres_admin

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 90.0
BIN = Path(sys.executable).parent  # the venv's console scripts


@dataclass(frozen=True)
class Databases:
    dagster_db: str  # Dagster's own storage (DAGSTER_PG_DB)
    app_db: str  # the application's (DATABASE_URL)

    @property
    def app_url(self) -> str:
        return f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{self.app_db}"


@pytest.fixture(scope="session")
def smoke_databases() -> Iterator[Databases]:
    """Two new databases, dropped (connections terminated first) at the end of the session."""
    from psycopg import sql

    suffix = uuid.uuid4().hex[:10]
    databases = Databases(f"dispatch_smoke_dagster_{suffix}", f"dispatch_smoke_app_{suffix}")
    with postgres_admin() as admin:
        created = []
        try:
            for name in (databases.dagster_db, databases.app_db):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
            yield databases
        finally:
            from dispatch_pipeline.storage import close_engines

            close_engines(databases.app_url)  # the test's own pool on the app database
            for name in created:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def repo_dagster_home(home: Path, dagster_db: str) -> dict[str, str]:
    """A copy of the repo's dagster.yaml in `home` (the repo's dagster_home stays clean) and the
    variables it reads, pointed at the Dagster database `dagster_db` on the test server."""
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": POSTGRES_HOST,
        "DAGSTER_PG_PORT": str(POSTGRES_PORT),
        "DAGSTER_PG_DB": dagster_db,
        "DAGSTER_MAX_CONCURRENT_RUNS": "2",
    }


@pytest.fixture(scope="session")
def dagster_env(
    smoke_databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment of every Dagster process: a temp DAGSTER_HOME holding a copy of the repo's
    dagster.yaml (the repo's dagster_home stays clean), pointed at the scratch databases."""
    env = {
        **os.environ,
        **repo_dagster_home(tmp_path_factory.mktemp("dagster_home"), smoke_databases.dagster_db),
        "DATABASE_URL": smoke_databases.app_url,
        "PYTHONUNBUFFERED": "1",
    }
    return env  # without a developer's DISPATCH_* settings: tests/conftest.py removed them


def migrate_dagster_instance(env: dict[str, str]) -> None:
    """Create Dagster's tables once, before three processes race to do it."""
    import dagster as dg

    with mock.patch.dict(os.environ, env), dg.DagsterInstance.from_config(env["DAGSTER_HOME"]):
        pass


@pytest.fixture(scope="session")
def dagster_stack(
    dagster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterProcesses]:
    """Code server (gRPC), webserver and daemon, each in a session and process group of its own.

    Started in that order: the webserver and the daemon load the code location at start-up, so
    the code server is listening before they start. Stopped at the end, leaving no process behind.
    """
    migrate_dagster_instance(dagster_env)
    log_dir = tmp_path_factory.mktemp("dagster_logs")
    grpc_port, web_port = free_port(HOST), free_port(HOST)
    workspace = Path(dagster_env["DAGSTER_HOME"]) / "workspace.yaml"
    workspace.write_text(grpc_workspace_yaml(HOST, grpc_port))
    # Not the repository root: Dagster's processes apply a ./.env found there over their environment.
    stack = DagsterProcesses(env=dagster_env, log_dir=log_dir, cwd=Path(dagster_env["DAGSTER_HOME"]))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        try:
            stack.start(
                "code-server",
                [
                    str(BIN / "dagster"), "code-server", "start",
                    "-h", HOST, "-p", str(grpc_port),
                    "-m", "dispatch_pipeline.definitions", "-a", "defs",
                    "--location-name", "dispatch_pipeline",
                ],
            )  # fmt: skip
            wait_until(
                lambda: stack.check_alive() or port_open(HOST, grpc_port),
                STARTUP_TIMEOUT_S,
                f"the code server to listen on port {grpc_port}",
            )
            stack.start(
                "webserver",
                [
                    str(BIN / "dagster-webserver"),
                    "-h",
                    HOST,
                    "-p",
                    str(web_port),
                    "-w",
                    str(workspace),
                ],
            )
            stack.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
            stack.graphql = DagsterGraphQL(f"http://{HOST}:{web_port}")
            wait_for_stack(stack, deadline)
        except SmokeError as exc:
            raise SmokeError(f"{exc}\n{stack.log_tails()}") from exc
        yield stack
        # Shut down after the last test, whatever their order: every process group goes, and
        # nothing they started survives.
        survivors = stack.stop()
        assert survivors == [], "processes left behind:\n" + "\n".join(survivors)
    finally:
        if not stack.stopped:
            stack.stop()


def wait_for_stack(stack: DagsterProcesses, deadline: float) -> None:
    """Webserver answering, code location loaded, daemons heartbeating; all by `deadline`."""
    graphql = stack.graphql
    assert graphql is not None

    def remaining() -> float:
        return max(deadline - time.monotonic(), 1.0)

    wait_until(
        lambda: stack.check_alive() or graphql.server_up(),
        remaining(),
        "the webserver's /server_info",
    )
    last: list[tuple[str, str]] = [("", "")]

    def location_loaded() -> bool:
        stack.check_alive()
        last[0] = graphql.location_status()
        if last[0][0] == "ERROR":
            # The code server can still be loading the definitions behind its open port.
            graphql.reload_location()
            last[0] = graphql.location_status()
        return last[0][0] == "LOADED"

    wait_until(
        location_loaded, remaining(), "the code location to load", poll_s=1.0, why=lambda: last[0]
    )
    statuses: list[dict[str, bool]] = [{}]

    def daemons_healthy() -> bool:
        stack.check_alive()
        statuses[0] = graphql.daemon_statuses()
        return bool(statuses[0]) and all(statuses[0].values())

    wait_until(daemons_healthy, remaining(), "healthy daemons", poll_s=1.0, why=lambda: statuses[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failing smoke test shows the tails of the Dagster process logs."""
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "funcargs", {}).get("dagster_stack")
    if report.failed and isinstance(stack, DagsterProcesses):
        report.sections.append(("dagster process logs", stack.log_tails()))
