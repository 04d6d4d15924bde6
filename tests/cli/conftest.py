"""The CLI tests' database: a scratch one per test, on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
from tests.postgres import BACKENDS, scratch_database


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "cli_test") as url:
        yield url


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DAGSTER_HOME and no DATABASE_URL: commands use the SQLite file the demo would."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    for name in ("DATABASE_URL", *EVENT_SETTINGS):
        # Set first, so that monkeypatch also removes what a command sets by default.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home
