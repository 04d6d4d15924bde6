from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def load_case(name: str) -> dict:
    return json.loads((DATA / "cases" / f"{name}.json").read_text())


CASE_NAMES = sorted(p.stem for p in (DATA / "cases").glob("*.json"))


@pytest.fixture(scope="session", autouse=True)
def _the_repositorys_env_file_is_ignored() -> Iterator[None]:
    """A developer's ./.env (docs/operations.md) is applied over the environment by the CLI, as
    `dagster dev` applies it: commands run in-process here must see the tests' settings only.
    (Dagster processes the tests start run in directories of their own, for the same reason.)"""
    from dispatch_pipeline.cli import dagster_home

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dagster_home, "PROJECT_ENV_FILE", REPO / "tests" / "no-such-file.env")
        yield


@pytest.fixture(scope="session")
def sample_request() -> dict:
    return json.loads((REPO / "examples" / "sample_request.json").read_text())
