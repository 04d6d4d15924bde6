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


def test_a_battery_starting_above_its_band_is_brought_back_not_held_there() -> None:
    """soc_initial 0.95 over soc_max 0.9 with the default end-of-day target: the target is
    soc_max, and neither schedule pays a violation for it (before: the MILP 5 kWh, held above the
    band at the end; the rule-based schedule 225 kWh, above it all day)."""
    import json

    from dispatch_pipeline import solve_dispatch
    from tests.conftest import REPO

    request = json.loads((REPO / "examples" / "sample_request.json").read_text())
    request["bess"] = {**request.get("bess", {}), "soc_initial": 0.95, "soc_max": 0.9, "soc_final_min": None}
    for use_milp in (True, False):
        result = solve_dispatch({**request, "use_milp": use_milp})
        assert result.kpis.violation_kwh == pytest.approx(0.0, abs=1e-6), use_milp
        assert result.points[-1].soc == pytest.approx(0.9, abs=1e-6), use_milp
