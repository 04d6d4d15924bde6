"""Where the database is, one engine per URL, and a schema brought up to date before first use."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SAWarning
from sqlalchemy.pool import QueuePool

SQLITE_BUSY_TIMEOUT_S = 30.0
# Execution option read by the SQLite BEGIN hook below; "IMMEDIATE" takes the write lock up front.
SQLITE_BEGIN_OPTION = "dispatch_sqlite_begin"
_SQLITE_BEGIN_MODES = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")

log = logging.getLogger(__name__)

_BARE_POSTGRES = re.compile(r"^(postgres|postgresql)://")

# The migrations in storage/migrations/versions, oldest first (a test keeps the two equal). A
# process finding its database at the newest needs no Alembic: every Dagster run is a new process,
# and importing Alembic and reading the migration scripts to learn that nothing is to do cost
# ~0.1 s each time.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
HEAD_REVISION = KNOWN_REVISIONS[-1]
_PASSWORD = re.compile(r"://([^:/@]+):[^@]*@")
# libpq takes a password in the query too (postgresql://u@h/db?password=...).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_migrated: set[str] = set()
_migration_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Point bare PostgreSQL URLs at psycopg 3, the driver this project installs."""
    return _BARE_POSTGRES.sub("postgresql+psycopg://", url.strip(), count=1)


def printable_url(url: str | URL) -> str:
    """The URL without its password (after the user, or in the query), for logs and terminals."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"://\1:***@", text))


def database_url() -> str:
    """`DATABASE_URL` if set, else a SQLite file next to Dagster's own storage."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        return normalize_url(configured)
    home = Path(os.environ.get("DAGSTER_HOME") or "./dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    # Built, not joined: a '?' or '%' in the path would otherwise be read as URL syntax.
    return URL.create("sqlite", database=str(home / "dispatch.sqlite")).render_as_string()


def make_engine(url: str) -> Engine:
    """The process's engine for `url` (one pool per database, however often this is called)."""
    url = normalize_url(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _engines[url] = engine
        return engine


def open_database(url: str | None = None) -> Engine:
    """An engine whose schema has been migrated to head (once per process and URL)."""
    url = normalize_url(url or database_url())
    engine = make_engine(url)
    # Holding the lock while migrating makes concurrent first calls in threads wait for one run.
    with _migration_lock:
        if url not in _migrated:
            revisions = stored_revisions(engine)
            if migrated_by_a_newer_release(url, revisions):
                pass
            elif revisions != [HEAD_REVISION]:
                # Imported only when there is something to migrate: see HEAD_REVISION.
                from dispatch_pipeline.storage.migrate import upgrade_database

                upgrade_database(url)
            _migrated.add(url)
    return engine


def migrated_by_a_newer_release(url: str, revisions: list[str]) -> bool:
    """Whether `revisions` (the database's) include one this release does not know; logs it.

    Migrations keep the schema usable by the release before (docs/operations.md, Upgrading), so
    a process of that release (a run mid-upgrade, an API worker restarting, a rolled-back
    deployment's `db upgrade`) uses it as it is rather than failing to migrate it.
    """
    if not revisions or set(revisions) <= set(KNOWN_REVISIONS):
        return False
    log.warning(
        "database %s is at schema revision %s, newer than this release's %s: using it as it is",
        printable_url(url), ", ".join(revisions), HEAD_REVISION,
    )
    return True


def stored_revisions(engine: Engine) -> list[str]:
    """The database's Alembic revisions (one query, no Alembic); none for a new database."""
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except DBAPIError as exc:
        if _no_such_table(exc):  # a new database
            return []
        raise  # a role that may not read it, say: migrating would fail less clearly


INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL: the role may not use a schema or table
UNDEFINED_TABLE = "42P01"


def sqlstate(exc: Exception) -> str | None:
    """The SQLSTATE a PostgreSQL driver attached to a DBAPIError (psycopg 3 or psycopg2)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _no_such_table(exc: DBAPIError) -> bool:
    code = sqlstate(exc)
    if code is not None:
        return code == UNDEFINED_TABLE
    return "no such table" in str(exc.orig)


def close_engines(*urls: str) -> None:
    """Dispose the cached engines of `urls`, or of every URL (tests, before dropping a database).

    The process then forgets them: the next `open_database` checks the schema again.
    """
    with _migration_lock, _engines_lock:
        # open_database caches the engine before it marks a URL migrated, so every migrated URL
        # has an engine here.
        for url in [normalize_url(url) for url in urls] or list(_engines):
            engine = _engines.pop(url, None)
            if engine is not None:
                engine.dispose()
            _migrated.discard(url)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that commits on success and rolls back on any exception.

    On SQLite it begins IMMEDIATE: the write lock is queued for (busy timeout) up front instead of
    failing with "database is locked" when a reader upgrades to a writer mid-transaction.
    """
    with engine.connect() as connection:
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            yield connection


def parse_database_url(url: str) -> URL:
    """The URL, parsed; ArgumentError (as for any URL SQLAlchemy cannot use) when it is malformed."""
    try:
        return make_url(url)
    except ValueError as exc:  # make_url's only ValueError: "invalid literal for int() ...: 'port'"
        raise ArgumentError(f"its port {str(exc).rpartition(': ')[2]} is not a number") from None


def missing_sqlite_file(url: str) -> str | None:
    """The path of an SQLite file `url` names that does not exist yet (connecting would create
    it), else None: commands that only read must not leave an empty file behind a mistyped path."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() != "sqlite" or _in_memory(parsed):
        return None
    return None if Path(parsed.database).exists() else parsed.database


def why_without_tables(url: str) -> str | None:
    """Why the database at `url` has no dispatch-pipeline tables (its SQLite file does not exist,
    or its schema was never created), found without creating either; None when it has them.

    A command refusing its input must leave no database behind a mistyped URL, nor tables in an
    empty one, so it asks this before `open_database`: no site is registered where it says why.
    """
    engine = make_engine(url)  # refuses a URL it cannot use, without connecting
    if (missing := missing_sqlite_file(url)) is not None:
        return f"the file {missing} does not exist"
    with engine.connect() as connection:
        has_schema = inspect(connection).has_table("alembic_version")
    return None if has_schema else f"{printable_url(url)} has no dispatch-pipeline tables yet"


def engine_for_checks(url: str) -> Engine | None:
    """The engine of `url` with its schema as it stands, not migrated, for what a command reads to
    decide whether it refuses its input; None where the database has no dispatch-pipeline tables
    (why_without_tables), so that nothing is registered there.

    A refused command writes nothing, and a schema upgrade is a write (migrations 0004 and 0008
    build indexes that block writes while they do): `open_database`, which migrates, waits until
    the input is accepted. Read through this engine only what every revision of KNOWN_REVISIONS
    holds (the `sites` table, unchanged since 0001), and write nothing through it.
    """
    return None if why_without_tables(url) else make_engine(url)


def is_in_memory(url: str) -> bool:
    """Whether `url` is an SQLite database in memory, which is gone when the process ends."""
    parsed = parse_database_url(url)
    return parsed.get_backend_name() == "sqlite" and _in_memory(parsed)


def _in_memory(parsed: URL) -> bool:
    return parsed.database in (None, "", ":memory:")


def _create(url: str) -> Engine:
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite(url, in_memory=_in_memory(parsed))
    if parsed.get_backend_name() == "postgresql" and not (
        parsed.database or parsed.query.get("dbname") or os.environ.get("PGDATABASE")
    ):
        # libpq would pick the database named after the user: often `postgres`, the server's own.
        raise ArgumentError("it names no database: add /DATABASE after the host (or set PGDATABASE)")
    try:
        # Dagster and API processes hold pooled connections across idle hours; re-check before use.
        return create_engine(url, pool_pre_ping=True)
    except ImportError as exc:  # a dialect SQLAlchemy knows, whose driver is not installed
        raise NoSuchModuleError(f"the driver of {parsed.drivername!r} is not installed ({exc})") from exc


def _create_sqlite(url: str, *, in_memory: bool) -> Engine:
    options: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if in_memory:
        # Each new connection to :memory: is a new empty database: one is kept and shared, by one
        # thread at a time. Used by two at once (the API's worker threads), their transactions
        # would interleave on it and acknowledged writes be lost.
        options.update(poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=SQLITE_BUSY_TIMEOUT_S)
        options["connect_args"]["check_same_thread"] = False
    with warnings.catch_warnings():
        # SQLAlchemy warns of, and then ignores, query arguments the sqlite3 driver does not take.
        warnings.simplefilter("error", SAWarning)
        try:
            engine = create_engine(url, **options)
        except SAWarning as exc:
            raise ArgumentError(str(exc).split(" (Background on this")[0]) from None

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin: the module's
        # legacy mode autocommits DDL (half-applied migrations) and skips BEGIN before SELECT.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets API reads proceed during a long backfill write. FULL sync: under WAL, NORMAL
        # may roll back a committed run after a power cut, one the API has already answered with
        # its run_id; FULL costs one fsync per commit, and runs are written in batches.
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "")
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(
                f"{SQLITE_BEGIN_OPTION}: must be one of {_SQLITE_BEGIN_MODES} (got {mode!r})"
            )
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def _switch_to_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode=WAL`, waiting out other processes as long as the busy timeout allows.

    Only a database that is not yet in WAL mode has anything to switch (the mode is stored in the
    file), and the switch needs the file to itself. A connection that finds another's write
    transaction there (several processes opening a new database at once, one of them already
    migrating it) gets "database is locked" at once: SQLite skips the busy timeout where waiting
    could deadlock.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause_s = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause_s > deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.25)


def _forget_inherited_connections() -> None:
    # A forked child must not reuse the parent's sockets or file handles; dispose(close=False)
    # gives it fresh pools and leaves the parent's connections alone.
    for engine in _engines.values():
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)
