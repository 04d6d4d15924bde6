"""Check that dagster_home/dagster.yaml and dagster_home/dagster.docker.yaml stay in step.

The two instance files must be identical except for `run_launcher` (WarmRunLauncher locally,
DockerRunLauncher in Compose). Needs only PyYAML. Exit status 0 when they agree, 1 otherwise.

    python deploy/check_dagster_yaml.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "dagster_home" / "dagster.yaml"
DOCKER = ROOT / "dagster_home" / "dagster.docker.yaml"
ALLOWED_TO_DIFFER = {"run_launcher"}


def main() -> int:
    local = yaml.safe_load(LOCAL.read_text())
    docker = yaml.safe_load(DOCKER.read_text())
    problems = []
    for key in sorted(set(local) | set(docker)):
        if key in ALLOWED_TO_DIFFER:
            continue
        if local.get(key) != docker.get(key):
            problems.append(f"`{key}` differs between {LOCAL.name} and {DOCKER.name}")
    storage = local.get("storage", {}).get("custom", {})
    if storage.get("class") != "PooledPostgresStorage":
        problems.append("storage must be dispatch_pipeline.dagster_instance.PooledPostgresStorage")
    scheme = storage.get("config", {}).get("postgres_db", {}).get("scheme")
    if scheme != "postgresql+psycopg2":
        problems.append("storage.custom.config.postgres_db.scheme must be postgresql+psycopg2")
    if docker.get("run_launcher", {}).get("class") != "DockerRunLauncher":
        problems.append(f"{DOCKER.name} must use DockerRunLauncher")
    for p in problems:
        print(f"check_dagster_yaml: {p}", file=sys.stderr)
    if not problems:
        print("check_dagster_yaml: dagster.yaml and dagster.docker.yaml agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
