"""Schedules the property tests once found invalid, kept as fixed cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.problem import build_problem

REGRESSIONS = Path(__file__).resolve().parent.parent / "data" / "regressions"


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.json")), ids=lambda p: p.stem)
def test_rule_based_schedule_keeps_every_hard_constraint(path: Path) -> None:
    request = json.loads(path.read_text())
    request.pop("description")
    problem = build_problem(request)
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    assert schedule.energy.min() >= problem.energy_min_kwh - 1e-9
