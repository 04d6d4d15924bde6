"""The deployment files (Compose, its Dagster instance, the Helm values) agree with the code."""

from __future__ import annotations

import yaml

from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
from tests.conftest import REPO


def test_every_deployment_sets_dagsters_event_settings():
    """Compose (every service of the image, and the run containers the daemon starts) and the Helm
    values (code server and its runs, webserver, daemon) set what `EVENT_SETTINGS` holds: without
    the planned-events setting a backfill costs Dagster twice the CPU."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    app_env = compose["x-app-env"]
    assert {name: app_env[name].split(":-")[1].rstrip("}") for name in EVENT_SETTINGS} == EVENT_SETTINGS
    docker_instance = yaml.safe_load((REPO / "dagster_home" / "dagster.docker.yaml").read_text())
    assert set(EVENT_SETTINGS) <= set(docker_instance["run_launcher"]["config"]["env_vars"])

    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    code_server = helm["dagster-user-deployments"]["deployments"][0]

    def env(section: dict) -> dict[str, str]:
        return {item["name"]: item["value"] for item in section.get("env", [])}

    assert env(code_server) == EVENT_SETTINGS and env(helm["dagsterDaemon"]) == EVENT_SETTINGS
    assert env(helm["dagsterWebserver"])["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "1"
