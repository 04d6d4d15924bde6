"""Create Dagster's own database (DAGSTER_PG_DB) if it does not exist yet.

Run by the one-shot `migrate` service before `dagster instance migrate`. Connects with the
DAGSTER_PG_* settings to the server's maintenance database (`postgres`) and issues CREATE DATABASE
when needed. Safe to run any number of times. Uses psycopg 3, a dependency of dispatch-pipeline.

Exit status: 0 when the database exists (or was created), 1 when it is missing and could not be
created (e.g. the role lacks CREATEDB: create it by hand, see docs/operations.md).
"""

from __future__ import annotations

import os
import sys
import time

import psycopg
from psycopg import sql


def _connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=os.environ["DAGSTER_PG_HOST"],
        port=int(os.environ.get("DAGSTER_PG_PORT", "5432")),
        user=os.environ["DAGSTER_PG_USERNAME"],
        password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
        dbname=dbname,
        connect_timeout=10,
        autocommit=True,
    )


def main() -> int:
    target = os.environ["DAGSTER_PG_DB"]
    maintenance_db = os.environ.get("DAGSTER_PG_MAINTENANCE_DB", "postgres")
    last_error: Exception | None = None
    for _attempt in range(10):
        try:
            with _connect(maintenance_db) as conn:
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
        with _connect(target):
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
