"""Create Dagster's own database (DAGSTER_PG_DB) if it does not exist yet.

Run by the one-shot `migrate` service before `dagster instance migrate`. Connects with the
DAGSTER_PG_* settings to the server's maintenance database (`postgres`) and issues CREATE DATABASE
when needed. Safe to run any number of times. Uses psycopg 3, a dependency of dispatch-pipeline.

Exit status: 0 when the database exists (or was created), 1 when it is missing and could not be
created (e.g. the role lacks CREATEDB: create it by hand, see docs/operations.md), 2 when a
DAGSTER_PG_* setting is missing or malformed.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg
from psycopg import sql

REQUIRED = ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB")


class SettingsError(Exception):
    pass


def _settings() -> dict[str, str]:
    """The DAGSTER_PG_* settings; SettingsError naming each one unset or malformed."""
    problems = [f"{name} is not set" for name in REQUIRED if not os.environ.get(name)]
    port = os.environ.get("DAGSTER_PG_PORT", "5432")
    if not (port.isdigit() and 0 < int(port) < 65536):
        problems.append(f"DAGSTER_PG_PORT must be a port number, got {port!r}")
    if problems:
        raise SettingsError("; ".join(problems) + " (in Compose they come from .env: set -a; . ./.env; set +a)")
    return {name: os.environ[name] for name in REQUIRED} | {"DAGSTER_PG_PORT": port}


def _connect(settings: dict[str, str], dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=settings["DAGSTER_PG_HOST"],
        port=int(settings["DAGSTER_PG_PORT"]),
        user=settings["DAGSTER_PG_USERNAME"],
        password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
        dbname=dbname,
        connect_timeout=10,
        autocommit=True,
    )


def main() -> int:
    try:
        settings = _settings()
    except SettingsError as exc:
        print(f"ensure_dagster_db: {exc}", file=sys.stderr)
        return 2
    target = settings["DAGSTER_PG_DB"]
    maintenance_db = os.environ.get("DAGSTER_PG_MAINTENANCE_DB", "postgres")
    last_error: Exception | None = None
    for _attempt in range(10):
        try:
            with _connect(settings, maintenance_db) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (target,)
                ).fetchone()
                if exists:
                    print(f"ensure_dagster_db: database {target!r} exists")
                    return 0
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
                print(f"ensure_dagster_db: created database {target!r}")
                return 0
        except psycopg.OperationalError as exc:
            # Server still starting, or no access to the maintenance database: retry, then fall back.
            last_error = exc
            time.sleep(3)
        except psycopg.Error as exc:  # e.g. permission denied to create database
            last_error = exc
            break
    # Fall back to the target itself: enough when it was created out of band.
    try:
        with _connect(settings, target):
            print(f"ensure_dagster_db: database {target!r} is reachable")
            return 0
    except psycopg.Error:
        pass
    print(
        f"ensure_dagster_db: database {target!r} is missing and could not be created: {last_error}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
