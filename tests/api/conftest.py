"""API tests run against the real PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres).

Each session creates a uniquely named database through the `postgres` maintenance database and
drops it at the end. An unreachable server fails the tests; DISPATCH_SKIP_POSTGRES=1 skips them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from dispatch_pipeline.api import create_app
from dispatch_pipeline.api.auth import TOKENS_ENV
from dispatch_pipeline.storage import open_database
from tests.postgres import scratch_database

SAMPLE_REQUEST = Path(__file__).resolve().parents[2] / "examples" / "sample_request.json"
# Port 1 on loopback refuses at once: a database that is down.
UNREACHABLE_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/none"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database("postgresql", tmp_path_factory.mktemp("db"), "dispatch_api_test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Engine:
    return open_database(database_url)


@pytest.fixture
def make_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FastAPI]:
    """An app on the test database; `tokens` sets DISPATCH_API_TOKENS (None: no auth)."""

    def make(tokens: str | None = None) -> FastAPI:
        if tokens is None:
            monkeypatch.delenv(TOKENS_ENV, raising=False)
        else:
            monkeypatch.setenv(TOKENS_ENV, tokens)
        return create_app(database_url)

    return make


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


@pytest.fixture
def client_without_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client of an app (no auth) whose database is down."""
    monkeypatch.delenv(TOKENS_ENV, raising=False)
    with TestClient(create_app(UNREACHABLE_DATABASE_URL)) as test_client:
        yield test_client


@pytest.fixture
def sample_request() -> dict[str, Any]:
    """The README's quick-start request in full (96 quarter-hours, examples/sample_request.json)."""
    return json.loads(SAMPLE_REQUEST.read_text())
