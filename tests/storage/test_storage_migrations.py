"""The migrations build exactly tables.py, idempotently, even from several processes at once."""

from __future__ import annotations

import datetime as dt
import functools
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.result import Kpis
from dispatch_pipeline.demo import demo_site
from dispatch_pipeline.storage import (
    IdempotencyKey,
    get_run,
    keyed_run,
    latest_run,
    load_forecast,
    load_price_series,
    migrate,
    read_registered_sites,
    save_forecast,
    save_keyed_run,
    save_price_series,
    save_runs,
    upsert_site,
)
from dispatch_pipeline.storage.database import (
    HEAD_REVISION,
    KNOWN_REVISIONS,
    close_engines,
    make_engine,
    open_database,
    stored_revisions,
    write_transaction,
)
from dispatch_pipeline.storage.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    head_revision,
    upgrade_database,
)
from dispatch_pipeline.storage.staleness import DayWindow, stale_plans
from dispatch_pipeline.storage.tables import KPI_COLUMNS, dispatch_runs, metadata
from tests.postgres import scratch_database
from tests.storage.conftest import build_result


def schema_at_head(engine: Engine) -> bool:
    return stored_revisions(engine) == [HEAD_REVISION]


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
    assert current_revision(database_url) == head_revision() == HEAD_REVISION


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
    names = _check_constraint_names(engine)
    assert {"ck_forecasts_pv_kw_non_negative", "ck_dispatch_runs_source"} <= names
    assert not any("_ck_" in name for name in names)
    # Downgrading gives every check the doubled name back.
    _migrate(fresh_database_url, "downgrade", "0002")
    names = _check_constraint_names(engine)
    assert len(names) == 6 and all("_ck_" in name for name in names)


def _check_constraint_names(engine: Engine) -> set[str]:
    return {c["name"] for t in ("forecasts", "dispatch_runs") for c in inspect(engine).get_check_constraints(t)}


def test_migrated_schema_matches_tables_module(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        # `alembic check`, through the project's env.py: raises if autogenerate finds a difference.
        command.check(alembic_config(connection))


def test_latest_run_indexes_exist(engine: Engine) -> None:
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("dispatch_runs")}
    assert indexes["ix_dispatch_runs_site_id_date_created_at"] == ["site_id", "date", "created_at"]
    assert indexes["ix_dispatch_runs_site_id_created_at_id"] == ["site_id", "created_at", "id"]


@pytest.mark.postgres
def test_latest_run_without_a_date_reads_its_index_backwards(tmp_path) -> None:
    # Before 0004 PostgreSQL read every run of the site and sorted them (tens of ms at 50k runs).
    with scratch_database("postgresql", tmp_path) as url:
        engine = open_database(url)
        results = [build_result("LATEST_PLAN", seed=seed) for seed in range(3)]
        save_runs(engine, results, source="cli")
        statements: list[tuple[str, object]] = []

        def record(conn, cursor, statement, parameters, context, executemany) -> None:
            statements.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", record)
        try:
            latest = latest_run(engine, "LATEST_PLAN")
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert latest is not None and latest.run.run_id == results[-1].run_id
        statement, parameters = statements[0]
        assert "ORDER BY" in statement
        with engine.connect() as connection:
            # A three-run table is read whole more cheaply: ask for the plan a large one gets.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())
    assert "Index Only Scan Backward using ix_dispatch_runs_site_id_created_at_id" in plan, plan
    assert "Sort" not in plan, plan


def test_the_latest_run_index_comes_and_goes_with_0004(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    _migrate(fresh_database_url, "downgrade", "0003")
    assert "ix_dispatch_runs_site_id_created_at_id" not in _index_names(engine)
    assert "ix_dispatch_runs_site_id_date_created_at" in _index_names(engine)
    upgrade_database(fresh_database_url)
    assert "ix_dispatch_runs_site_id_created_at_id" in _index_names(engine)


@pytest.mark.postgres
def test_an_index_built_concurrently_beforehand_is_kept(tmp_path) -> None:
    # Large tables: the operator builds the index without blocking writes, then upgrades.
    with scratch_database("postgresql", tmp_path) as url:
        _migrate(url, "upgrade", "0003")
        with make_engine(url).connect() as connection:
            # CONCURRENTLY refuses to run inside a transaction block.
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_dispatch_runs_site_id_created_at_id"
                " ON dispatch_runs (site_id, created_at, id)"
            )
        upgrade_database(url)
        assert current_revision(url) == HEAD_REVISION
        assert _index_names(make_engine(url)).count("ix_dispatch_runs_site_id_created_at_id") == 1


def _index_names(engine: Engine) -> list[str]:
    return [index["name"] for index in inspect(engine).get_indexes("dispatch_runs")]


OFFLINE_URL = "postgresql://postgres@127.0.0.1/offline_never_connected"


@functools.cache
def _offline_script(*arguments: str) -> str:
    """What `alembic -c .../alembic.ini <arguments> --sql` prints for PostgreSQL."""
    finished = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(MIGRATIONS_DIR / "alembic.ini"), *arguments, "--sql"],
        env={**os.environ, "DATABASE_URL": OFFLINE_URL},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_offline_postgresql_upgrade_writes_every_migration() -> None:
    # Offline there is no database to ask: 0003 once crashed querying pg_constraint live.
    script = _offline_script("upgrade", "head")
    assert [line.split()[-1] for line in script.splitlines() if line.startswith("-- Running upgrade")] == list(
        KNOWN_REVISIONS
    )
    assert f"SET version_num='{HEAD_REVISION}'" in script
    assert "RENAME CONSTRAINT ck_dispatch_runs_ck_dispatch_runs_source TO ck_dispatch_runs_source" in script
    assert (
        "CREATE INDEX IF NOT EXISTS ix_dispatch_runs_site_id_created_at_id"
        " ON dispatch_runs (site_id, created_at, id)"
    ) in script
    # Existing rows get the epoch from a constant default: the table is not rewritten.
    for table in ("forecasts", "price_series"):
        assert (
            f"ALTER TABLE {table} ADD COLUMN stored_at TIMESTAMP WITH TIME ZONE DEFAULT '1970-01-01 00:00:00+00' NOT NULL"
        ) in script
    assert (
        "CREATE UNIQUE INDEX ix_dispatch_runs_idempotency_scope_idempotency_key"
        " ON dispatch_runs (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL"
    ) in script
    downgrade = _offline_script("downgrade", f"{HEAD_REVISION}:0002")
    assert "DROP INDEX IF EXISTS ix_dispatch_runs_site_id_created_at_id" in downgrade
    assert "RENAME CONSTRAINT ck_dispatch_runs_source TO ck_dispatch_runs_ck_dispatch_runs_source" in downgrade


@pytest.mark.postgres
def test_offline_postgresql_script_builds_the_tables_module_schema(tmp_path) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        with engine.connect() as connection:
            # No parameters: the driver sends the whole script as one simple query.
            connection.exec_driver_sql(_offline_script("upgrade", "head"))
            connection.commit()
        assert current_revision(url) == HEAD_REVISION
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        for table in metadata.sorted_tables:
            expected = sorted(c.name for c in table.constraints if isinstance(c, CheckConstraint))
            assert sorted(c["name"] for c in inspect(engine).get_check_constraints(table.name)) == expected


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


def test_a_newer_release_migrating_while_this_one_waits_for_the_lock_is_left_alone(
    fresh_database_url: str, monkeypatch, caplog
) -> None:
    # Seen at 0003 before the lock; by the time it is held, a newer release has migrated past
    # this one's head: asked again under the lock, not handed to Alembic, which knows no 9999.
    from dispatch_pipeline.storage import migrate

    with write_transaction(open_database(fresh_database_url)) as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    close_engines(fresh_database_url)
    monkeypatch.setattr(migrate, "stored_revisions", lambda engine: ["0003"])

    with caplog.at_level("WARNING"):
        upgrade_database(fresh_database_url)

    assert "is at schema revision 9999, newer than this release's" in caplog.text
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
    upgrade_database(fresh_database_url)
    result = build_result("MIGRATED_SITE")
    save_runs(engine, [result], source="cli")
    rows = _rows_of_every_table(engine)

    _migrate(fresh_database_url, "downgrade", "0001")
    assert _referenced_tables(engine, "dispatch_schedule") == ["dispatch_runs"]
    assert _referenced_tables(engine, "dispatch_explanations") == ["dispatch_runs"]
    assert _rows_of_every_table(engine) == rows

    upgrade_database(fresh_database_url)
    assert _referenced_tables(engine, "dispatch_schedule") == []
    assert _referenced_tables(engine, "dispatch_explanations") == []
    assert _referenced_tables(engine, "dispatch_kpis") == ["dispatch_runs"]
    assert get_run(engine, result.run_id).to_result() == result


def _rows_of_every_table(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of the run tables, in the columns all revisions have (0001's)."""
    columns = {
        "dispatch_runs": "id, site_id, date, status, objective_value, milp_solver",
        "dispatch_kpis": "run_id, " + ", ".join(KPI_COLUMNS),
        "dispatch_schedule": "run_id, ts, batt_ch_kw, soc, reason",
        "dispatch_explanations": "run_id, ts, reason_code, marginal_cost_per_kwh",
    }
    with engine.connect() as connection:
        return {
            table: [tuple(row) for row in connection.execute(text(f"SELECT {names} FROM {table} ORDER BY 1, 2"))]
            for table, names in columns.items()
        }


def test_runs_stored_before_0005_read_back_without_issue_times(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    issued = dt.datetime(2024, 3, 14, 9, 30, tzinfo=dt.UTC)
    result = build_result("ISSUED_SITE").model_copy(update={"forecast_issued_at": issued, "prices_issued_at": issued})
    save_runs(engine, [result], source="cli")

    _migrate(fresh_database_url, "downgrade", "0004")
    assert not {"forecast_issued_at", "prices_issued_at"} & _run_column_names(engine)
    rows = _rows_of_every_table(engine)

    upgrade_database(fresh_database_url)
    assert _rows_of_every_table(engine) == rows
    # What 0004 never held comes back unknown, not invented.
    expected = result.model_copy(update={"forecast_issued_at": None, "prices_issued_at": None})
    assert get_run(engine, result.run_id).to_result() == expected


def _run_column_names(engine: Engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("dispatch_runs")}


def _column_names(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def test_0006_leaves_plans_made_before_it_fresh_and_sees_rows_rewritten_after(fresh_database_url: str) -> None:
    """Rows and runs stored before 0006 (written at head and downgraded: what 0005 holds) are
    upgraded to plans that are not stale; a reload of the issue they read after it makes them so."""
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    site_id, date, timezone = "BEFORE_0006", dt.date(2024, 3, 15), "Asia/Kuala_Lumpur"
    day = local_day(date, timezone, 15)
    issued = dt.datetime(2024, 3, 14, 6, tzinfo=dt.UTC)
    frames = {
        "forecast": pd.DataFrame({"ts": day.timestamps(), "load_kw": 50.0, "pv_kw": 5.0}),
        "prices": pd.DataFrame({"ts": day.timestamps(), "buy": 0.3, "sell": 0.1}),
    }
    save_forecast(engine, site_id, frames["forecast"], issued)
    save_price_series(engine, site_id, frames["prices"], issued)
    result = build_result(site_id, date, timezone=timezone).model_copy(
        update={"forecast_issued_at": issued, "prices_issued_at": issued}
    )
    save_runs(engine, [result], source="dagster")

    _migrate(fresh_database_url, "downgrade", "0005")
    assert "stored_at" not in _column_names(engine, "forecasts") | _column_names(engine, "price_series")
    assert not {"forecast_stored_at", "prices_stored_at"} & _run_column_names(engine)
    rows = _rows_of_every_table(engine)
    # Written by this release's predecessor until the upgrade: an issue loaded again included.
    with write_transaction(engine) as connection:
        connection.execute(text("UPDATE forecasts SET load_kw = 55.0 WHERE site_id = :site"), {"site": site_id})

    upgrade_database(fresh_database_url)
    assert current_revision(fresh_database_url) == HEAD_REVISION
    assert _rows_of_every_table(engine) == rows
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for load in (load_forecast, load_price_series):
        assert set(load(engine, site_id, day.start_utc, day.end_utc)["stored_at"]) == {pd.Timestamp(epoch)}
    assert get_run(engine, result.run_id).to_result() == result  # no stored times, as saved
    window = {date: DayWindow(site_id, date, day.start_utc, day.end_utc)}
    assert stale_plans(engine, window) == {}

    # The previous release writes on after a roll-back, not naming stored_at: its rows get the epoch.
    with write_transaction(engine) as connection:
        connection.execute(
            text("INSERT INTO price_series (site_id, ts, issued_at, buy, sell) VALUES (:site, :ts, :issued, 0.2, 0.1)"),
            {"site": "ROLLED_BACK", "ts": _sql_datetime(engine, day.start_utc), "issued": _sql_datetime(engine, issued)},
        )
    assert load_price_series(engine, "ROLLED_BACK", day.start_utc, day.end_utc)["stored_at"].tolist() == [
        pd.Timestamp(epoch)
    ]

    # The same issue loaded again: as stored, nothing changes; with other values, the plan is stale.
    save_forecast(engine, site_id, frames["forecast"].assign(load_kw=55.0), issued)
    assert stale_plans(engine, window) == {}
    save_price_series(engine, site_id, frames["prices"].assign(buy=0.35), issued)
    assert stale_plans(engine, window)[date].run_id == result.run_id


def test_0007_keeps_every_run_and_judges_runs_stored_before_it_by_their_creation(fresh_database_url: str) -> None:
    """A run that kept the registration of its site loses it on the way down to 0006, and every
    row stays; back at 0007 it reads as a run stored before it, compared by its `created_at`."""
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    site = demo_site("KL_MALL").model_copy(update={"site_id": "BEFORE_0007"})
    date, timezone = dt.date(2024, 3, 15), site.timezone
    day = local_day(date, timezone, 15)
    issued = dt.datetime(2024, 3, 14, 6, tzinfo=dt.UTC)
    upsert_site(engine, site)
    save_forecast(engine, site.site_id, pd.DataFrame({"ts": day.timestamps(), "load_kw": 50.0, "pv_kw": 5.0}), issued)
    [registered] = read_registered_sites(engine, [site.site_id])[0]
    result = build_result(site.site_id, date, timezone=timezone).model_copy(
        update={"forecast_issued_at": issued, "site_updated_at": registered.updated_at}
    )
    save_runs(engine, [result], source="dagster")
    assert get_run(engine, result.run_id).to_result() == result
    rows = _rows_of_every_table(engine)

    _migrate(fresh_database_url, "downgrade", "0006")
    assert current_revision(fresh_database_url) == "0006"
    assert "site_updated_at" not in _run_column_names(engine)
    assert _rows_of_every_table(engine) == rows

    upgrade_database(fresh_database_url)
    assert current_revision(fresh_database_url) == HEAD_REVISION
    assert _rows_of_every_table(engine) == rows
    # What 0006 never held comes back unknown, not invented.
    assert get_run(engine, result.run_id).to_result() == result.model_copy(update={"site_updated_at": None})
    window = {date: DayWindow(site.site_id, date, day.start_utc, day.end_utc)}
    assert stale_plans(engine, window) == {}
    # Registered again with other values after the run was stored: stale by its creation, as before 0007.
    upsert_site(engine, site.model_copy(update={"bess": site.bess.model_copy(update={"capacity_kwh": 999.0})}))
    found = stale_plans(engine, window)[date]
    assert found.run_id == result.run_id and found.site_changed_at is not None


def _idempotency_revisions() -> tuple[str, str]:
    """The revision adding the idempotency keys and the one before it, found by its file: its
    number may change when migrations written alongside it are merged."""
    from alembic.script import ScriptDirectory

    [script] = [
        script for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
        if script.path.endswith("_idempotency_keys.py")
    ]
    return script.revision, script.down_revision


IDEMPOTENCY_COLUMNS = {"idempotency_key", "idempotency_scope", "request_fingerprint"}
IDEMPOTENCY_INDEX = "ix_dispatch_runs_idempotency_scope_idempotency_key"


def test_idempotency_keys_come_and_go_with_their_migration(fresh_database_url: str) -> None:
    """Downgraded, runs lose their keys and nothing else; upgraded again, every run is keyless,
    its key free to store another run under, and the index refuses a key twice."""
    revision, before = _idempotency_revisions()
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    keyed = build_result("KEYED_SITE", seed=1)
    plain = build_result("KEYED_SITE", seed=2)
    key = IdempotencyKey(scope="", key="retry-1", fingerprint="f" * 64)
    save_keyed_run(engine, keyed, key, source="api")
    save_runs(engine, [plain], source="api")
    rows = _rows_of_every_table(engine)

    _migrate(fresh_database_url, "downgrade", before)
    assert not IDEMPOTENCY_COLUMNS & _run_column_names(engine)
    assert IDEMPOTENCY_INDEX not in _index_names(engine)
    assert _rows_of_every_table(engine) == rows
    # The previous release writes its runs as before.
    save_runs(engine, [build_result("KEYED_SITE", seed=3)], source="api")

    _migrate(fresh_database_url, "upgrade", revision)
    assert _run_column_names(engine) >= IDEMPOTENCY_COLUMNS
    assert get_run(engine, keyed.run_id).to_result() == keyed
    assert keyed_run(engine, key.scope, key.key) is None
    retried = build_result("KEYED_SITE", seed=4)
    assert save_keyed_run(engine, retried, key, source="api")[1]
    assert save_keyed_run(engine, build_result("KEYED_SITE", seed=5), key, source="api") == (
        keyed_run(engine, key.scope, key.key), False
    )
    assert keyed_run(engine, key.scope, key.key).run_id == retried.run_id


def test_the_idempotency_index_holds_only_keyed_runs_as_tables_py_says(engine: Engine) -> None:
    # alembic check compares an index's columns, not its WHERE: compared here, on each backend.
    dialect = engine.dialect.name
    [declared] = [index for index in dispatch_runs.indexes if index.name == IDEMPOTENCY_INDEX]
    [migrated] = [index for index in inspect(engine).get_indexes("dispatch_runs") if index["name"] == IDEMPOTENCY_INDEX]
    declared_where = declared.dialect_options[dialect]["where"]
    migrated_where = migrated["dialect_options"].get(f"{dialect}_where")
    assert declared_where is not None and migrated_where is not None
    assert str(migrated_where).strip("()") == str(declared_where) == "idempotency_key IS NOT NULL"
    assert migrated["unique"]


def _sql_datetime(engine: Engine, value: dt.datetime) -> object:
    """A UTC instant as a plain statement stores it: SQLite keeps the text SQLAlchemy writes."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else value


RUN_TABLES = ("dispatch_runs", "dispatch_kpis", "dispatch_schedule", "dispatch_explanations")


def test_writing_to_a_schema_older_than_the_release_names_the_missing_column(fresh_database_url: str) -> None:
    """make_engine does not migrate: a run written to a database at an older revision fails as an
    INSERT would, naming the column (PostgreSQL's COPY raised a bare KeyError), and writes nothing."""
    engine = make_engine(fresh_database_url)
    upgrade_database(fresh_database_url)
    _migrate(fresh_database_url, "downgrade", "0004")
    result = build_result("OLD_SCHEMA_SITE")
    with pytest.raises(DBAPIError, match="forecast_issued_at"):
        save_runs(engine, [result], source="cli")
    with engine.connect() as connection:
        assert {table: connection.scalar(text(f"SELECT count(*) FROM {table}")) for table in RUN_TABLES} == dict.fromkeys(
            RUN_TABLES, 0
        )
