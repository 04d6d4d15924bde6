"""The repository is a `dg` project: `dg list defs` and `dg dev` work from its root.

`dg dev` is started the way a developer starts it (no arguments, in the repository root) on an
embedded instance of its own, and must serve the code location under the name workspace.yaml
gives it, so that `dagster dev -w workspace.yaml` and `dg dev` show one location's runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from deploy.smoke import (
    JOB_NAME,
    LOCATION_NAME,
    PIPELINE_ASSETS,
    DagsterGraphQL,
    DagsterProcesses,
    free_port,
    wait_until,
)
from dispatch_pipeline.defs.dispatch.checks import FALLBACK_CHECK, HARD_CHECKS
from tests.deploy.conftest import BIN, HOST, REPO, STARTUP_TIMEOUT_S

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_env(tmp_path) -> dict[str, str]:
    """A copy of the embedded instance's dagster.yaml in a home of the test's own."""
    if (REPO / ".env").exists():
        # Dagster applies a ./.env over the environment: this DAGSTER_HOME and DATABASE_URL would
        # give way to the developer's own, and the test would start processes on their instance.
        pytest.skip(f"{REPO / '.env'} exists: dg run from the repository root would use its settings")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "embedded" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite'}"}
    env.pop("VIRTUAL_ENV", None)
    # dg dev leaves a Unix socket in the temporary directory: the test's own, removed with it.
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    return env


def test_dg_lists_the_pipeline_definitions(embedded_env):
    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=REPO, env=embedded_env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"]: asset for asset in defs["assets"]}
    assert set(assets) == set(PIPELINE_ASSETS)
    for key, asset in assets.items():
        assert asset["description"] and asset["group_name"] and asset["kinds"] and asset["owners"], key
    assert sorted(assets["dispatch_schedule"]["dependency_keys"]) == ["site_forecast", "site_tariff"]
    assert {check["key"] for check in defs["asset_checks"]} == {
        f"dispatch_schedule:{name}" for name in (*HARD_CHECKS, FALLBACK_CHECK)
    }
    assert [job["name"] for job in defs["jobs"]] == [JOB_NAME]
    assert [schedule["name"] for schedule in defs["schedules"]] == ["day_ahead_dispatch_schedule"]
    assert [sensor["name"] for sensor in defs["sensors"]] == [
        "partition_recovery_sensor", "site_partitions_sensor", "stale_plan_sensor"
    ]


def test_dg_dev_serves_the_code_location_from_the_repository_root(embedded_env, tmp_path):
    port = free_port(HOST)
    stack = DagsterProcesses(env=embedded_env, log_dir=tmp_path, cwd=REPO)
    stack.start("dg-dev", [str(BIN / "dg"), "dev", "--host", HOST, "--port", str(port)])
    stack.graphql = graphql = DagsterGraphQL(f"http://{HOST}:{port}")
    try:
        def loaded() -> bool:
            stack.check_alive()
            return graphql.server_up() and graphql.location_status(LOCATION_NAME)[0] == "LOADED"

        wait_until(loaded, STARTUP_TIMEOUT_S, f"dg dev to load {LOCATION_NAME}",
                   why=lambda: graphql.location_status(LOCATION_NAME) if graphql.server_up() else stack.log_tails())
        nodes = graphql.asset_nodes()
        assert set(PIPELINE_ASSETS) <= set(nodes), sorted(nodes)
        assert nodes["dispatch_schedule"]["deps"] == {"site_forecast", "site_tariff"}
    finally:
        survivors = stack.stop()
    assert survivors == [], "processes left behind:\n" + "\n".join(survivors)
