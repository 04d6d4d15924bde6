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


def test_a_battery_starting_above_its_band_owes_only_the_unavoidable_violation() -> None:
    """soc_initial 0.95 over soc_max 0.9 with the default end-of-day target (the contract's
    `= soc_initial`): every plan owes 0.05 x 100 kWh, above the band or short of the target at the
    end of the day. Both schedules owe exactly that and no more (the rule-based schedule once owed
    225 kWh, held above the band all day)."""
    import json

    from dispatch_pipeline import solve_dispatch
    from tests.conftest import REPO

    request = json.loads((REPO / "examples" / "sample_request.json").read_text())
    request["bess"] = {**request.get("bess", {}), "soc_initial": 0.95, "soc_max": 0.9, "soc_final_min": None}
    unavoidable_kwh = (0.95 - 0.9) * request["bess"]["capacity_kwh"]
    for use_milp in (True, False):
        result = solve_dispatch({**request, "use_milp": use_milp})
        assert result.kpis.violation_kwh == pytest.approx(unavoidable_kwh, abs=1e-6), use_milp
        # Back within the band after the first interval, not held above it.
        assert max(point.soc for point in result.points[1:]) <= 0.9 + 1e-6, use_milp
