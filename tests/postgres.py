"""Scratch databases for the tests: a fresh PostgreSQL database (dropped afterwards) or SQLite file,
and the tables one holds.

PostgreSQL tests fail, never skip silently, when the server is unreachable; DISPATCH_SKIP_POSTGRES=1
skips them deliberately, except under DISPATCH_REQUIRE_POSTGRES=1 (CI), which also refuses a run
that selects none of them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

POSTGRES_HOST = os.environ.get("DISPATCH_TEST_PGHOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("DISPATCH_TEST_PGPORT", "5432"))
POSTGRES_ADMIN_CONNINFO = (
    f"host={POSTGRES_HOST} port={POSTGRES_PORT} user=postgres dbname=postgres connect_timeout=5"
)
POSTGRES_URL_TEMPLATE = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{{name}}"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
REQUIRE_POSTGRES = "DISPATCH_REQUIRE_POSTGRES"
SKIP_POSTGRES = "DISPATCH_SKIP_POSTGRES"


def postgres_admin() -> Any:
    """An autocommit connection to the server's `postgres` database."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN_CONNINFO, autocommit=True)
    except psycopg.OperationalError as exc:
        failure = str(exc)
    if os.environ.get(SKIP_POSTGRES) == "1" and os.environ.get(REQUIRE_POSTGRES) != "1":
        pytest.skip(f"PostgreSQL unreachable and DISPATCH_SKIP_POSTGRES=1: {failure}")
    pytest.fail(
        f"PostgreSQL at {POSTGRES_HOST}:{POSTGRES_PORT} is unreachable ({failure}). Start it, or "
        "set DISPATCH_SKIP_POSTGRES=1 to skip the postgres tests deliberately.",
        pytrace=False,
    )


@contextmanager
def scratch_database(backend: str, folder: Path, prefix: str = "dispatch_test") -> Iterator[str]:
    """A new, empty database URL; PostgreSQL ones are dropped on exit, SQLite files stay in folder."""
    from dispatch_pipeline.storage import close_engines

    if backend == "sqlite":
        url = f"sqlite:///{folder / f'{prefix}_{uuid.uuid4().hex[:8]}.sqlite'}"
        try:
            yield url
        finally:
            close_engines(url)
        return
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with postgres_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = POSTGRES_URL_TEMPLATE.format(name=name)
        try:
            yield url
        finally:
            close_engines(url)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def tables(url: str) -> list[str]:
    """The tables of the database at `url`; none for an SQLite file that does not exist (asked
    without creating it)."""
    from sqlalchemy import create_engine, inspect

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()
