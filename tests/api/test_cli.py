"""`dispatch-pipeline db upgrade|current` and the argument checks of `dispatch-pipeline serve`."""

from __future__ import annotations

import pytest

from dispatch_pipeline.cli import main

pytestmark = pytest.mark.postgres


def test_db_upgrade_reaches_head_and_is_idempotent(database_url, capsys):
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert main(["db", "current", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    revision, head = out.splitlines()[-1].removeprefix("revision: ").split(" (head: ")
    assert revision == head.rstrip(")")


@pytest.mark.parametrize(
    ("url", "words"),
    [("not a url", "not a database URL"),
     ("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_database_here", "cannot reach")],
)
def test_db_usage_errors_exit_2(url, words, capsys):
    assert main(["db", "upgrade", "--database-url", url]) == 2
    assert words in capsys.readouterr().err


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
