"""A stored plan is recognised as made from the inputs at hand, and only from those."""

from __future__ import annotations

import copy

import pytest

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.provenance import planned_from
from tests.conftest import load_case


@pytest.fixture(scope="module")
def case() -> dict:
    return load_case("negative")


@pytest.mark.parametrize("use_milp", [True, False])
def test_a_plan_is_planned_from_its_own_request(case, use_milp: bool) -> None:
    request = {**case["request"], "use_milp": use_milp}
    result = solve_dispatch(request)
    assert planned_from(build_problem(request), result)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r["load_kw"].__setitem__(40, r["load_kw"][40] + 5.0), id="one-interval-of-load"),
        pytest.param(lambda r: r["pv_kw"].__setitem__(50, r["pv_kw"][50] * 0.5 + 1.0), id="one-interval-of-pv"),
        pytest.param(lambda r: r["tariff"]["buy"].__setitem__(10, r["tariff"]["buy"][10] + 0.01), id="one-buy-price"),
        pytest.param(lambda r: r["weights"].__setitem__("cost", 2.0), id="weights"),
    ],
)
def test_a_plan_is_not_planned_from_other_inputs(case, change) -> None:
    result = solve_dispatch(case["request"])
    other = copy.deepcopy(case["request"])
    change(other)
    assert not planned_from(build_problem(other), result)


def test_a_plan_of_another_day_length_is_not_planned_from_the_problem(case) -> None:
    result = solve_dispatch(case["request"])
    shorter = result.model_copy(update={"points": result.points[:-4]})
    assert not planned_from(build_problem(case["request"]), shorter)
