"""`dispatch-pipeline db upgrade|current` and the argument checks of `dispatch-pipeline serve`."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, inspect

from dispatch_pipeline.cli import main
from tests.postgres import BACKENDS, scratch_database


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_upgrade_creates_the_tables_of_an_empty_database_and_is_idempotent(backend, tmp_path, capsys):
    with scratch_database(backend, tmp_path) as url:
        assert main(["db", "upgrade", "--database-url", url]) == 0
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"sites", "forecasts", "price_series", "dispatch_runs", "dispatch_schedule", "dispatch_kpis"} <= tables
        assert main(["db", "upgrade", "--database-url", url]) == 0
        assert main(["db", "current", "--database-url", url]) == 0
        out = capsys.readouterr().out
        revision, head = out.splitlines()[-1].removeprefix("revision: ").split(" (head: ")
        assert revision == head.rstrip(")")


def test_db_upgrade_names_an_sqlite_file_it_cannot_create(capsys):
    assert main(["db", "upgrade", "--database-url", "sqlite:////nonexistent-directory/x.sqlite"]) == 1
    err = capsys.readouterr().err
    assert "cannot use the database: unable to open database file" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [("not a url", 2, "is not a URL SQLAlchemy can use"),
     ("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_database_here", 1, "cannot use the database"),
     ("TEXT_FILE", 1, "cannot use the database: file is not a database")],
)
@pytest.mark.postgres
def test_db_errors_are_one_line_with_the_other_commands_statuses(url, status, words, capsys, tmp_path):
    if url == "TEXT_FILE":
        (tmp_path / "notes.sqlite").write_text("not a database, some notes\n" * 100)
        url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    for action in ("upgrade", "current"):
        assert main(["db", action, "--database-url", url]) == status
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


def test_serve_refuses_a_database_url_it_cannot_use_before_starting(capsys):
    assert main(["serve", "--database-url", "postgresql://postgres@127.0.0.1:abc/x"]) == 2
    assert "is not a URL SQLAlchemy can use: its port 'abc' is not a number" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_an_empty_host_is_refused_not_taken_for_every_interface(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--host", ""])
    assert exit_.value.code == 2
    assert "--host: expected an address such as 127.0.0.1 or 0.0.0.0 (got '')" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "tokens", "words"),
    [(["--port", "0"], None, "--port"), (["--workers", "0"], None, "--workers"),
     ([], "tok:bad site", "DISPATCH_API_TOKENS")],
)
def test_serve_usage_errors_exit_2(argv, tokens, words, monkeypatch, capsys):
    if tokens:
        monkeypatch.setenv("DISPATCH_API_TOKENS", tokens)
    assert main(["serve", *argv]) == 2
    assert words in capsys.readouterr().err


def test_serve_help_names_every_endpoint(capsys):
    from fastapi.routing import APIRoute

    from dispatch_pipeline.api.routes import router

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    endpoints = {f"{method} {route.path}" for route in router.routes if isinstance(route, APIRoute)
                 for method in route.methods if method != "HEAD"}
    assert endpoints == {"POST /dispatch/run", "GET /dispatch/latest", "GET /dispatch/runs",
                         "GET /dispatch/runs/{run_id}", "GET /healthz"}
    # Each as a whole: "GET /dispatch/runs/{run_id}" does not name "GET /dispatch/runs".
    assert [e for e in sorted(endpoints) if not re.search(re.escape(e) + r"[,;)]", help_text)] == []
