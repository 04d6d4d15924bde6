from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests.postgres import REQUIRE_POSTGRES, SKIP_POSTGRES

# The pipeline reads its settings (planning time, first partition, API tokens, solver service...)
# from DISPATCH_* variables, some at import: a developer's exported ones must not change what the
# tests see. Only the suite's own switches and the DISPATCH_TEST_* hooks pass through.
_SUITE_SWITCHES = {REQUIRE_POSTGRES, SKIP_POSTGRES}
for _name in [n for n in os.environ if n.startswith("DISPATCH_")]:
    if _name not in _SUITE_SWITCHES and not _name.startswith("DISPATCH_TEST_"):
        del os.environ[_name]

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def load_case(name: str) -> dict:
    return json.loads((DATA / "cases" / f"{name}.json").read_text())


CASE_NAMES = sorted(p.stem for p in (DATA / "cases").glob("*.json"))
REGRESSION_NAMES = sorted(p.stem for p in (DATA / "regressions").glob("*.json"))


def load_regression(name: str) -> dict:
    """The request of a regression file (tests/data/regressions), without its description and
    expected outcome."""
    request = json.loads((DATA / "regressions" / f"{name}.json").read_text())
    request.pop("description")
    request.pop("expected", None)
    return request


def regression_expectation(name: str) -> dict:
    """What a regression file says the outcome must be (e.g. its optimal objective); {} if nothing."""
    return json.loads((DATA / "regressions" / f"{name}.json").read_text()).get("expected", {})

# Hypothesis keeps its examples and caches outside the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dispatch-pipeline-hypothesis")


def pytest_collection_finish(session: pytest.Session) -> None:
    # CI must run the PostgreSQL tests: deselecting them all (-m "not postgres") fails the run.
    required = os.environ.get(REQUIRE_POSTGRES) == "1"
    if required and session.items and not any(item.get_closest_marker("postgres") for item in session.items):
        raise pytest.UsageError(f"{REQUIRE_POSTGRES}=1, but no postgres test was selected")


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
