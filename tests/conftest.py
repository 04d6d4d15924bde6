from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def load_case(name: str) -> dict:
    return json.loads((DATA / "cases" / f"{name}.json").read_text())


CASE_NAMES = sorted(p.stem for p in (DATA / "cases").glob("*.json"))


@pytest.fixture(scope="session")
def sample_request() -> dict:
    return json.loads((REPO / "examples" / "sample_request.json").read_text())
