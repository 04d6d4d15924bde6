"""Bring a database's schema to the newest migration, from code, safely from many processes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, inspect, select, text

from dispatch_pipeline.storage.database import (
    make_engine,
    migrated_by_a_newer_release,
    stored_revisions,
    write_transaction,
)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

# Any constant shared by every process of this project: the ASCII of "dispatch" as a bigint.
_PG_MIGRATION_LOCK = int.from_bytes(b"dispatch", "big") & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic settings built in code: the package ships no alembic.ini it depends on."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The URL travels as the live connection, not through the ini's %-interpolated strings.
    config.attributes["connection"] = connection
    return config


def upgrade_database(url: str) -> None:
    """`alembic upgrade head` on `url`; a no-op when already there, or beyond (a newer release's
    migrations: logged, and left as they are).

    Concurrent callers serialise: PostgreSQL through a session advisory lock (held across
    migrations that may commit on their own), SQLite through its write lock taken by BEGIN
    IMMEDIATE. The loser then finds the schema at head and does nothing.
    """
    engine = make_engine(url)
    if migrated_by_a_newer_release(url, stored_revisions(engine)):
        return
    if engine.dialect.name == "postgresql":
        _upgrade_postgresql(url, engine.connect())
        return
    with write_transaction(engine) as connection:
        _upgrade_locked(url, connection)


def _upgrade_locked(url: str, connection: Connection) -> None:
    """Upgrade, the migration lock held: asked again, since a newer release may have migrated the
    database while this process waited for the lock."""
    revisions = (
        list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
        if inspect(connection).has_table("alembic_version") else []
    )
    if not migrated_by_a_newer_release(url, revisions):
        command.upgrade(alembic_config(connection), "head")


def _upgrade_postgresql(url: str, connection: Connection) -> None:
    with connection:
        connection.execute(select(func.pg_advisory_lock(_PG_MIGRATION_LOCK)))
        connection.commit()
        try:
            with connection.begin():
                _upgrade_locked(url, connection)
        except BaseException:
            # Closing the session is what releases the lock when the connection may be unusable.
            connection.invalidate()
            raise
        connection.execute(select(func.pg_advisory_unlock(_PG_MIGRATION_LOCK)))
        connection.commit()


def current_revision(url: str) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with make_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
