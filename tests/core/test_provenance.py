"""A stored plan stands for the plan of the inputs at hand only where it fits them as well."""

from __future__ import annotations

import copy

import pytest

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.provenance import schedule_from_result, stands_for
from tests.conftest import load_case


@pytest.fixture(scope="module")
def case() -> dict:
    return load_case("negative")


def stands(stored_request: dict, request_now: dict) -> bool:
    """Whether the plan of `stored_request` may stand for one of `request_now`, as a retry asks."""
    stored = solve_dispatch(stored_request)
    problem = build_problem(request_now)
    fresh = solve_dispatch(request_now)
    return stands_for(problem, stored, schedule_from_result(fresh, problem))


@pytest.mark.parametrize("use_milp", [True, False])
def test_a_plan_stands_for_the_plan_of_its_own_request(case, use_milp: bool) -> None:
    request = {**case["request"], "use_milp": use_milp}
    assert stands(request, request)


def _sell_dear_at_midnight(r: dict) -> None:
    # The plan does not export at 00:00, so its cost is unchanged; a plan made now sells there.
    r["tariff"]["sell"][0] = 1000.0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r["load_kw"].__setitem__(40, r["load_kw"][40] + 5.0), id="one-interval-of-load"),
        pytest.param(lambda r: r["pv_kw"].__setitem__(50, r["pv_kw"][50] * 0.5 + 1.0), id="one-interval-of-pv"),
        pytest.param(lambda r: r["tariff"]["buy"].__setitem__(10, r["tariff"]["buy"][10] + 0.01), id="one-buy-price"),
        pytest.param(_sell_dear_at_midnight, id="a-sell-price-where-the-plan-does-not-export"),
        pytest.param(lambda r: r["weights"].__setitem__("cost", 2.0), id="weights"),
    ],
)
def test_a_plan_does_not_stand_for_the_plan_of_other_inputs(case, change) -> None:
    other = copy.deepcopy(case["request"])
    change(other)
    assert not stands(case["request"], other)


def test_a_plan_of_another_day_length_does_not_stand(case) -> None:
    result = solve_dispatch(case["request"])
    problem = build_problem(case["request"])
    shorter = result.model_copy(update={"points": result.points[:-4]})
    assert not stands_for(problem, shorter, schedule_from_result(result, problem))
