"""The deployment files (Compose, its Dagster instance, the Helm values) agree with the code."""

from __future__ import annotations

import yaml

from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
from tests.conftest import REPO


def test_every_deployment_stores_events_in_batches():
    """Compose (every service of the image, and the run containers the daemon starts) and the Helm
    values (code server and its runs, daemon) set what `EVENT_SETTINGS` holds, as the CLI does."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    app_env = compose["x-app-env"]
    assert {name: app_env[name].split(":-")[1].rstrip("}") for name in EVENT_SETTINGS} == EVENT_SETTINGS
    docker_instance = yaml.safe_load((REPO / "dagster_home" / "dagster.docker.yaml").read_text())
    assert set(EVENT_SETTINGS) <= set(docker_instance["run_launcher"]["config"]["env_vars"])

    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    code_server = helm["dagster-user-deployments"]["deployments"][0]

    def env(section: dict) -> dict[str, str]:
        return {item["name"]: item["value"] for item in section.get("env", [])}

    assert env(code_server).items() >= EVENT_SETTINGS.items() and env(helm["dagsterDaemon"]) == EVENT_SETTINGS


def test_kubernetes_runs_retry_every_step():
    """A run pod's disk goes with it, so a retry there cannot load the failed run's step outputs."""
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    code_server = helm["dagster-user-deployments"]["deployments"][0]
    assert {"name": "DISPATCH_RETRY_STRATEGY", "value": "ALL_STEPS"} in code_server["env"]
    from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job

    assert day_ahead_dispatch_job.tags["dagster/retry_strategy"] == "FROM_FAILURE"  # shared disks


def test_instances_on_postgresql_plan_large_runs_in_one_event_per_asset():
    """The instance storage that Compose and `dispatch-pipeline ui` use decides it, not an
    environment variable that would also stop failed single-partition runs from showing."""
    for name in ("dagster.yaml", "dagster.docker.yaml"):
        storage = yaml.safe_load((REPO / "dagster_home" / name).read_text())["storage"]["custom"]
        assert storage["class"] == "PooledPostgresStorage", name
    for path in (REPO / "docker-compose.yml", REPO / ".env.example", REPO / "dagster_home" / "dagster.docker.yaml"):
        assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" not in path.read_text(), path


def test_kubernetes_runs_are_sized_by_the_run_launcher():
    """With includeConfigInLaunchedRuns the chart passes the code server's `resources` to its runs,
    deep-merged over the run launcher's: the code server must set none."""
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    code_server = helm["dagster-user-deployments"]["deployments"][0]
    assert code_server["includeConfigInLaunchedRuns"]["enabled"]
    assert "resources" not in code_server
    assert helm["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]["memory"] == "1536Mi"
