"""The deployment files (Compose, its Dagster instance, the Helm values) agree with the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from dotenv import dotenv_values

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


def _settings_the_code_location_reads() -> set[str]:
    """DISPATCH_* variables read by the definitions (os.environ.get("...") and
    positive_int_setting("...")) and the solver service."""
    from dispatch_pipeline.core import solver_service

    read = {solver_service.ADDRESS_ENV, solver_service.KEY_ENV}
    for path in (REPO / "dispatch_pipeline" / "defs").rglob("*.py"):
        read |= set(re.findall(
            r'(?:os\.environ\.get|positive_int_setting)\("(DISPATCH_[A-Z_]+)"', path.read_text()
        ))
    return read


def test_every_setting_the_code_location_reads_reaches_compose_and_its_run_containers():
    """Documented in .env.example, passed to every service of the image, and copied into the run
    containers: a setting that reached the code server but not its runs would give them another job."""
    settings = _settings_the_code_location_reads()
    assert {
        "DISPATCH_PLANNING_TIME", "DISPATCH_RETRY_STRATEGY", "DISPATCH_SOLVER_KEY",
        "DISPATCH_BACKFILL_CHUNK", "DISPATCH_DAY_AHEAD_SITES_PER_RUN",
    } <= settings
    documented = set(dotenv_values(REPO / ".env.example"))
    app_env = yaml.safe_load((REPO / "docker-compose.yml").read_text())["x-app-env"]
    docker_instance = yaml.safe_load((REPO / "dagster_home" / "dagster.docker.yaml").read_text())
    copied = set(docker_instance["run_launcher"]["config"]["env_vars"])
    assert settings - documented == set()
    assert settings - set(app_env) == set()
    assert settings - copied == set()


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


# Every setting of the instance files (dagster_home/dagster.yaml and dagster.docker.yaml) -> the
# key of deploy/helm/values.yaml the chart renders it from. A setting in neither this table nor
# RENDERED_OTHERWISE fails the test below: a new instance setting needs its Helm key too.
_RUN_COORDINATOR = "dagsterDaemon.runCoordinator.config.customRunCoordinator"
_RUN_MONITORING = "dagsterDaemon.runMonitoring"
HELM_KEY_OF_SETTING = {
    "storage.custom.config.postgres_db.username": "postgresql.postgresqlUsername",
    "storage.custom.config.postgres_db.password": "global.postgresqlSecretName",
    "storage.custom.config.postgres_db.hostname": "postgresql.postgresqlHost",
    "storage.custom.config.postgres_db.db_name": "postgresql.postgresqlDatabase",
    "storage.custom.config.postgres_db.port": "postgresql.service.port",
    "storage.custom.config.postgres_db.scheme": "postgresql.postgresqlScheme",
    # The chart's queuedRunCoordinator values cannot set the code-location retries: the same class
    # as a custom run coordinator, whose config the chart renders as written.
    "run_coordinator.module": f"{_RUN_COORDINATOR}.module",
    "run_coordinator.class": f"{_RUN_COORDINATOR}.class",
    "run_coordinator.config.max_concurrent_runs": f"{_RUN_COORDINATOR}.config.max_concurrent_runs",
    "run_coordinator.config.tag_concurrency_limits": f"{_RUN_COORDINATOR}.config.tag_concurrency_limits",
    "run_coordinator.config.dequeue_interval_seconds": f"{_RUN_COORDINATOR}.config.dequeue_interval_seconds",
    "run_coordinator.config.max_user_code_failure_retries":
        f"{_RUN_COORDINATOR}.config.max_user_code_failure_retries",
    "run_coordinator.config.user_code_failure_retry_delay":
        f"{_RUN_COORDINATOR}.config.user_code_failure_retry_delay",
    "scheduler.class": "scheduler.type",
    "run_retries.enabled": "dagsterDaemon.runRetries.enabled",
    "run_retries.max_retries": "dagsterDaemon.runRetries.maxRetries",
    "run_retries.retry_on_asset_or_op_failure": "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
    "run_monitoring.enabled": f"{_RUN_MONITORING}.enabled",
    "run_monitoring.cancel_timeout_seconds": f"{_RUN_MONITORING}.cancelTimeoutSeconds",
    "run_monitoring.max_runtime_seconds": f"{_RUN_MONITORING}.maxRuntimeSeconds",
    "run_monitoring.poll_interval_seconds": f"{_RUN_MONITORING}.pollIntervalSeconds",
    "run_monitoring.max_resume_run_attempts": f"{_RUN_MONITORING}.maxResumeRunAttempts",
    "retention.sensor.purge_after_days.skipped": "retention.sensor.purgeAfterDays.skipped",
    "retention.sensor.purge_after_days.success": "retention.sensor.purgeAfterDays.success",
    "retention.sensor.purge_after_days.failure": "retention.sensor.purgeAfterDays.failure",
    "retention.sensor.purge_after_days.started": "retention.sensor.purgeAfterDays.started",
    "retention.schedule.purge_after_days": "retention.schedule.purgeAfterDays",
    "telemetry.enabled": "telemetry.enabled",
}
# Settings (and sections) the chart renders its own way, on purpose.
RENDERED_OTHERWISE = {
    # dagster-postgres's stock storage: the chart's images cannot load PooledPostgresStorage.
    "storage.custom.module",
    "storage.custom.class",
    # The K8sRunLauncher: each run a Kubernetes Job.
    "run_launcher",
    # Follows from scheduler.type.
    "scheduler.module",
    # A run's pod may wait for a node or an image pull: longer on Kubernetes (300 s).
    "run_monitoring.start_timeout_seconds",
}
# What the chart renders where values.yaml keeps the chart's default.
CHART_DEFAULTS = {"scheduler.type": "DagsterDaemonScheduler"}
# The chart renders those sections only with these values.
RENDERED_ONLY_WITH = {
    "dagsterDaemon.enabled": True,
    "dagsterDaemon.runCoordinator.enabled": True,
    "dagsterDaemon.runCoordinator.type": "CustomRunCoordinator",
    "retention.enabled": True,
}
# Read from the environment by the instance files, and different on every deployment (the
# server's address, a Secret): values.yaml must set them, to anything. Every other variable must
# have there the value .env.example gives it.
SET_PER_DEPLOYMENT = {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"}


def _settings(section: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Each setting under `section` by its dotted name; a value read from the environment
    (`{env: NAME}`) and a list are one setting each."""
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and set(value) != {"env"}:
            yield from _settings(value, f"{name}.")
        else:
            yield name, value


_UNSET = object()


def _helm_value(helm: dict, key: str) -> object:
    value: object = helm
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return CHART_DEFAULTS.get(key, _UNSET)
        value = value[part]
    return value


@pytest.mark.parametrize("instance_file", ["dagster.yaml", "dagster.docker.yaml"])
def test_the_helm_values_set_every_instance_setting_alike(instance_file):
    """dagster.yaml says to keep it, dagster.docker.yaml and the chart's instance in step: every
    setting has its key in the Helm values, with the same value (or the same .env.example
    default), unless the chart is meant to do it otherwise."""
    instance = yaml.safe_load((REPO / "dagster_home" / instance_file).read_text())
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    env_defaults = dotenv_values(REPO / ".env.example")

    settings = {
        name: value for name, value in _settings(instance)
        if not any(name == other or name.startswith(f"{other}.") for other in RENDERED_OTHERWISE)
    }
    assert sorted(set(settings) - set(HELM_KEY_OF_SETTING)) == [], "settings with no Helm key"
    assert sorted(set(HELM_KEY_OF_SETTING) - set(settings)) == [], "Helm keys of settings gone"
    assert {key: _helm_value(helm, key) for key in RENDERED_ONLY_WITH} == RENDERED_ONLY_WITH

    drift = []
    for name, value in settings.items():
        helm_key = HELM_KEY_OF_SETTING[name]
        helm_value = _helm_value(helm, helm_key)
        if isinstance(value, dict):  # {env: NAME}
            variable = value["env"]
            if variable in SET_PER_DEPLOYMENT:
                agree = helm_value is not _UNSET and bool(helm_value)
            else:
                agree = helm_value is not _UNSET and str(helm_value) == env_defaults[variable]
                value = f"{variable}={env_defaults[variable]}"
        else:
            agree = helm_value == value
        if not agree:
            shown = "not set" if helm_value is _UNSET else repr(helm_value)
            drift.append(f"{name}: {value!r} but {helm_key}: {shown}")
    assert not drift, f"deploy/helm/values.yaml differs from {instance_file}:\n" + "\n".join(drift)


def test_the_constraints_pin_every_dependency_within_its_range_and_the_images_dagster():
    """constraints.txt (`make constraints`) is what the tests install and the image installs: a
    dependency added to pyproject.toml without regenerating it would go unpinned, and one whose
    range moved past its pin would fail to install."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: run `make constraints`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG DAGSTER_VERSION={pins['dagster']}\n" in dockerfile
    assert f"ARG DAGSTER_LIBS_VERSION={pins['dagster-postgres']}\n" in dockerfile


def test_ensure_dagster_db_names_each_missing_or_malformed_setting():
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG_")}
    ran = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "docker" / "ensure_dagster_db.py")],
        env={**environment, "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "54x"},
        capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 2
    assert "DAGSTER_PG_USERNAME is not set; DAGSTER_PG_DB is not set; DAGSTER_PG_PORT must be a port number, got '54x'" in ran.stderr
    assert "Traceback" not in ran.stderr


def _stub(folder, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("root", [True, False])
def test_ci_installs_make_and_venv_on_a_fresh_debian_machine(tmp_path, root):
    """`make test` needs make and Python's venv module (python3-venv on Debian) before it can
    install anything itself: .ci/run installs them as root with apt-get, and names them otherwise.
    Here neither is there, and apt-get only records its arguments: make is still missing after it,
    so the suite itself never starts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(subprocess.run(
        ["sh", "-c", "command -v dirname"], capture_output=True, text=True, check=True
    ).stdout.strip())
    _stub(bin_dir, "python3", "exit 1")  # a Debian python3 without python3-venv: no ensurepip
    _stub(bin_dir, "id", f"echo {0 if root else 1000}")
    apt_log = tmp_path / "apt.log"
    _stub(bin_dir, "apt-get", f'echo "$*" >> "{apt_log}"')

    ran = subprocess.run(
        ["/bin/bash", str(REPO / ".ci" / "run")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    if root:
        assert apt_log.read_text().splitlines() == [
            "update -qq", "install -y -qq --no-install-recommends make python3-venv",
        ]
        assert ran.returncode == 127 and "make: command not found" in ran.stderr
    else:
        assert not apt_log.exists()
        assert ran.returncode == 1
        assert "ci: install make python3-venv first" in ran.stderr


# Resident memory measured for `dispatch-pipeline serve` and `solver serve` (docs/performance.md,
# "The API under load"): the uvicorn supervisor, each API worker, each warm solver process.
_SUPERVISOR_MIB = 150
_API_WORKER_MIB = 200
_SOLVER_PROCESS_MIB = 200


def _cpus(quantity: str) -> int:
    """A Kubernetes CPU quantity as the whole CPUs `available_cpus` derives from the quota."""
    import math

    text = str(quantity)
    return max(1, math.ceil(int(text[:-1]) / 1000 if text.endswith("m") else float(text)))


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    text = str(quantity)
    return float(text[:-2]) * units[text[-2:]] if text[-2:] in units else float(text) / 2**20


def _option(command: list[str], name: str, default: str) -> str:
    return command[command.index(name) + 1] if name in command else default


def test_kubernetes_solver_processes_fit_their_containers_memory():
    """The API (each worker) and the solver service start one solver process per CPU they may
    use: their affinity, capped only by a CPU limit. Without one, a pod on a 16-core node would
    start 16 per worker and be killed for memory at start-up."""
    manifests = list(yaml.safe_load_all((REPO / "deploy" / "helm" / "dispatch-api.yaml").read_text()))
    deployments = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Deployment"}
    assert {"dispatch-api", "dispatch-solver"} <= set(deployments)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert "cpu" in limits, f"{name}: no CPU limit, so one solver process per core of the node"
        cpus = _cpus(limits["cpu"])
        command = container["command"]
        if command[1] == "serve":
            workers = int(_option(command, "--workers", "1"))
            needed = _SUPERVISOR_MIB + workers * (_API_WORKER_MIB + cpus * _SOLVER_PROCESS_MIB)
        else:
            assert command[1:3] == ["solver", "serve"], command
            solvers = int(_option(command, "--workers", "0")) or cpus
            needed = _SUPERVISOR_MIB + solvers * _SOLVER_PROCESS_MIB
        assert needed <= _mebibytes(limits["memory"]), (name, needed, limits)
