"""Finding the database and configuring engines (no server needed)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from dispatch_pipeline.storage import latest_run, save_runs
from dispatch_pipeline.storage.database import (
    database_url,
    make_engine,
    normalize_url,
    open_database,
    printable_url,
)
from tests.storage.conftest import build_result


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql+psycopg://u:p@db:5432/x"),
        ("postgres://u@db/x", "postgresql+psycopg://u@db/x"),
        ("postgresql+psycopg2://u@db/x", "postgresql+psycopg2://u@db/x"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
    ],
)
def test_database_url_from_environment(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert database_url() == expected
    assert normalize_url(given) == expected


def test_default_database_lives_in_dagster_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "not-yet" / "dagster_home"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert database_url() == f"sqlite:///{home / 'dispatch.sqlite'}"
    assert home.is_dir()


@pytest.mark.parametrize("directory", ["home?x", "home%20x", "home #1"])
def test_the_default_database_is_in_dagster_home_whatever_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, directory: str
) -> None:
    # Joined into the URL as text, "?x" would be read as a query and "%20" as a space.
    home = tmp_path / directory
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    open_database(database_url())
    assert [path.name for path in tmp_path.iterdir()] == [directory]
    assert (home / "dispatch.sqlite").is_file()


def test_default_dagster_home_is_relative_to_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert database_url() == f"sqlite:///{tmp_path.resolve() / 'dagster_home' / 'dispatch.sqlite'}"


def test_engines_are_cached_per_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    assert make_engine(url) is make_engine(url)
    assert make_engine(url) is not make_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")


def test_sqlite_runs_in_wal_mode_with_durable_commits_and_foreign_keys(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
        # 2 = FULL: a commit is on disk before it returns, so a stored run survives a power cut.
        assert connection.scalar(text("PRAGMA synchronous")) == 2
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert connection.scalar(text("PRAGMA busy_timeout")) >= 1000


def test_a_new_sqlite_database_switches_to_wal_once_another_process_has_finished_writing(tmp_path: Path) -> None:
    # Another process writing to a database still in rollback-journal mode (as when several
    # processes open a new database at once and one of them migrates it): the switch to WAL
    # fails at once, without SQLite's busy timeout, so the engine must wait for the writer itself.
    path = tmp_path / "new.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    finished = threading.Timer(0.3, writer.execute, ["COMMIT"])
    finished.start()
    try:
        with make_engine(f"sqlite:///{path}").connect() as connection:
            assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
            assert connection.scalar(text("SELECT count(*) FROM t")) == 1
    finally:
        finished.join()
        writer.close()


def test_in_memory_sqlite_keeps_its_schema() -> None:
    engine = open_database("sqlite://")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM dispatch_runs")) == 0


def test_in_memory_sqlite_used_by_many_threads_keeps_every_write() -> None:
    """One shared connection: threads interleaving their transactions on it lost writes that
    had been acknowledged, and readers saw runs without their KPIs."""
    engine = open_database("sqlite://")
    failures: list[BaseException] = []

    def save_and_read(thread: int) -> None:
        try:
            for n in range(10):
                save_runs(engine, [build_result("MEMORY", seed=thread * 10 + n)], source="api")
                assert latest_run(engine, "MEMORY", dt.date(2024, 3, 15)) is not None
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=save_and_read, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM dispatch_runs WHERE site_id = 'MEMORY'")) == 60


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db:5432/dispatch", "postgresql+psycopg://app:***@db:5432/dispatch"),
        ("postgresql+psycopg://app@db/dispatch?password=s3cret", "postgresql+psycopg://app@db/dispatch?password=***"),
        ("postgresql://app@db/dispatch?sslmode=require&PASSWORD=s3cret&connect_timeout=5",
         "postgresql://app@db/dispatch?sslmode=require&PASSWORD=***&connect_timeout=5"),
        ("sqlite:////tmp/dispatch.sqlite", "sqlite:////tmp/dispatch.sqlite"),
    ],
)
def test_a_printed_url_hides_its_password_wherever_it_is_written(url: str, shown: str) -> None:
    # Commands print the database they wrote to: into CI and cron logs.
    assert printable_url(url) == shown
