"""The migrations build exactly tables.py, idempotently, even from several processes at once."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect, text

from dispatch_pipeline.core.result import Kpis
from dispatch_pipeline.storage import get_run, migrate, save_runs
from dispatch_pipeline.storage.database import (
    HEAD_REVISION,
    KNOWN_REVISIONS,
    close_engines,
    make_engine,
    open_database,
    schema_at_head,
    write_transaction,
)
from dispatch_pipeline.storage.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_database,
)
from dispatch_pipeline.storage.tables import KPI_COLUMNS, metadata
from tests.postgres import scratch_database
from tests.storage.conftest import build_result

EXPECTED_TABLES = {
    "sites",
    "forecasts",
    "price_series",
    "dispatch_runs",
    "dispatch_schedule",
    "dispatch_explanations",
    "dispatch_kpis",
}


def test_migrations_create_every_table(engine: Engine, database_url: str) -> None:
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    assert current_revision(database_url) == head_revision() == "0003"


def test_check_constraints_carry_the_names_tables_py_gives(engine: Engine) -> None:
    # compare_metadata ignores constraint names; later migrations find constraints by them.
    for table in metadata.sorted_tables:
        expected = sorted(c.name for c in table.constraints if isinstance(c, CheckConstraint))
        found = sorted(c["name"] for c in inspect(engine).get_check_constraints(table.name))
        assert found == expected, table.name


@pytest.mark.postgres
def test_older_postgresql_databases_get_their_check_constraints_renamed(tmp_path) -> None:
    # PostgreSQL only: SQLite cannot rename a constraint, and 0003 leaves SQLite databases alone.
    with scratch_database("postgresql", tmp_path) as url:
        _rename_doubled_check_constraints(url)


def _rename_doubled_check_constraints(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    _migrate(fresh_database_url, "upgrade", "0002")
    # As 0001 named them before its names were marked final.
    with write_transaction(engine) as connection:
        for table, name in (("forecasts", "pv_kw_non_negative"), ("dispatch_runs", "source")):
            connection.exec_driver_sql(
                f"ALTER TABLE {table} RENAME CONSTRAINT ck_{table}_{name} TO ck_{table}_ck_{table}_{name}"
            )
    _migrate(fresh_database_url, "upgrade", "0003")
    names = {c["name"] for t in ("forecasts", "dispatch_runs") for c in inspect(engine).get_check_constraints(t)}
    assert {"ck_forecasts_pv_kw_non_negative", "ck_dispatch_runs_source"} <= names
    assert not any("_ck_" in name for name in names)


def test_migrated_schema_matches_tables_module(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_latest_run_index_exists(engine: Engine) -> None:
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("dispatch_runs")}
    assert indexes["ix_dispatch_runs_site_id_date_created_at"] == ["site_id", "date", "created_at"]


def test_head_revision_constant_is_the_newest_migration() -> None:
    # open_database skips Alembic when the database is at HEAD_REVISION: a stale constant would
    # leave databases unmigrated.
    from alembic.script import ScriptDirectory

    assert head_revision() == HEAD_REVISION
    walked = [script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    assert tuple(reversed(walked)) == KNOWN_REVISIONS


def test_a_database_a_newer_release_migrated_is_used_as_it_is(fresh_database_url: str, caplog) -> None:
    # Mid-upgrade: the new release's migration (additive, as the operations guide requires) ran;
    # this release's processes still start (runs, a restarted API worker) and must work on it.
    engine = open_database(fresh_database_url)
    with write_transaction(engine) as connection:
        connection.execute(text("ALTER TABLE dispatch_runs ADD COLUMN reviewed_by VARCHAR(64)"))
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    close_engines(fresh_database_url)

    with caplog.at_level("WARNING"):
        engine = open_database(fresh_database_url)

    assert "is at schema revision 9999, newer than this release's" in caplog.text
    assert current_revision(fresh_database_url) == "9999"
    result = build_result("NEWER_SCHEMA")
    save_runs(engine, [result], source="api")
    assert get_run(engine, result.run_id) is not None


def test_a_rolled_back_release_db_upgrade_leaves_a_newer_schema_and_succeeds(fresh_database_url: str, capsys) -> None:
    # Compose's migrate service runs `db upgrade` before every other service starts: after a
    # roll-back it must not stop the stack on the newer release's revision.
    from dispatch_pipeline.cli import main

    with write_transaction(open_database(fresh_database_url)) as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    close_engines(fresh_database_url)

    assert main(["db", "upgrade", "--database-url", fresh_database_url]) == 0
    assert "revision: 9999 (head: " in capsys.readouterr().out
    upgrade_database(fresh_database_url)
    assert current_revision(fresh_database_url) == "9999"


def test_open_database_migrates_an_older_schema_and_then_trusts_it(fresh_database_url: str, monkeypatch) -> None:
    engine = make_engine(fresh_database_url)
    assert not schema_at_head(engine)  # nothing there yet
    _migrate(fresh_database_url, "upgrade", "0001")
    assert not schema_at_head(engine)
    close_engines(fresh_database_url)  # forget that this process has seen the database

    engine = open_database(fresh_database_url)
    assert current_revision(fresh_database_url) == HEAD_REVISION
    assert schema_at_head(engine)
    assert _referenced_tables(engine, "dispatch_schedule") == []

    # A schema at head is trusted: another process opening it does not start Alembic.
    close_engines(fresh_database_url)

    def no_alembic(url: str) -> None:
        raise AssertionError(f"Alembic ran on a database already at head ({url})")

    monkeypatch.setattr(migrate, "upgrade_database", no_alembic)
    assert schema_at_head(open_database(fresh_database_url))


def test_upgrade_is_idempotent(fresh_database_url: str) -> None:
    upgrade_database(fresh_database_url)
    upgrade_database(fresh_database_url)
    assert current_revision(fresh_database_url) == head_revision()
    assert set(inspect(make_engine(fresh_database_url)).get_table_names()) >= EXPECTED_TABLES


def test_concurrent_upgrades_from_several_processes(fresh_database_url: str) -> None:
    # spawn, not fork: each worker starts cold, as separate Dagster/API processes do.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        outcomes = list(pool.map(upgrade_database, [fresh_database_url] * 4))
    assert outcomes == [None] * 4
    assert current_revision(fresh_database_url) == head_revision()
    assert set(inspect(make_engine(fresh_database_url)).get_table_names()) >= EXPECTED_TABLES


def test_objective_config_is_jsonb_on_postgresql(engine: Engine) -> None:
    columns = {c["name"]: c["type"] for c in inspect(engine).get_columns("dispatch_runs")}
    expected = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
    assert type(columns["objective_config"]).__name__ == expected


def test_kpi_columns_follow_the_kpi_model() -> None:
    assert list(KPI_COLUMNS) == list(Kpis.model_fields)


def _migrate(url: str, step: str, revision: str) -> None:
    with write_transaction(make_engine(url)) as connection:
        getattr(command, step)(alembic_config(connection), revision)


def _referenced_tables(engine: Engine, table: str) -> list[str]:
    return [key["referred_table"] for key in inspect(engine).get_foreign_keys(table)]


def test_dropping_the_interval_keys_keeps_every_row(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    _migrate(fresh_database_url, "upgrade", "0001")
    result = build_result("MIGRATED_SITE")
    save_runs(engine, [result], source="cli")
    assert _referenced_tables(engine, "dispatch_schedule") == ["dispatch_runs"]

    _migrate(fresh_database_url, "upgrade", "0002")
    assert _referenced_tables(engine, "dispatch_schedule") == []
    assert _referenced_tables(engine, "dispatch_explanations") == []
    assert _referenced_tables(engine, "dispatch_kpis") == ["dispatch_runs"]
    assert get_run(engine, result.run_id).to_result() == result

    _migrate(fresh_database_url, "downgrade", "0001")
    assert _referenced_tables(engine, "dispatch_explanations") == ["dispatch_runs"]
    assert get_run(engine, result.run_id).to_result() == result
