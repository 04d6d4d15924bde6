"""Every reference case reaches its independently computed optimum, with both solvers."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.milp import MIP_REL_GAP, solve_milp
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.provenance import schedule_from_result
from tests.conftest import CASE_NAMES, DATA, load_case


def assert_reaches_expected(objective: float, expected: dict) -> None:
    target = expected["objective_value"]
    tolerance = max(expected["rel_tolerance"] * abs(target), expected["abs_tolerance"])
    assert objective == pytest.approx(target, abs=tolerance)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_milp_reaches_reference_objective(name: str) -> None:
    case = load_case(name)
    result = solve_dispatch(case["request"])
    assert (result.status, result.solver, result.fallback_used) == ("ok", "milp", False)
    assert_reaches_expected(result.objective_value, case["expected"])
    problem = build_problem(case["request"])
    schedule = schedule_from_result(result, problem)
    assert find_breaches(problem, schedule) == []
    # result.objective_value is evaluate.objective_value of the schedule by construction; the
    # solver's own objective (its model's, from HiGHS) is the independent number to match: exactly
    # for the schedule it returns, and to the MIP gap for the schedule of another run.
    solution = solve_milp(problem, "highs", time.monotonic() + 120)
    assert objective_value(problem, solution.schedule) == pytest.approx(solution.objective_value, rel=1e-6, abs=1e-6)
    assert result.objective_value == pytest.approx(solution.objective_value, rel=MIP_REL_GAP, abs=1e-6)


# Days on which the LP relaxation charges and discharges (negative_long) or imports and exports
# (feed_in) at once: HiGHS reaches their optimum only through its integer rounds, so these cases
# test those rounds and not only the relaxation.
@pytest.mark.parametrize("name", ["negative_long", "feed_in"])
def test_some_reference_cases_need_the_integer_step(name: str) -> None:
    case = load_case(name)
    problem = build_problem(case["request"])
    solution = solve_milp(problem, "highs", time.monotonic() + 120)
    assert solution.integer_rounds > 0
    assert_reaches_expected(solution.objective_value, case["expected"])


# Not skipped without cbc: `make test` installs it (as it does docker-compose), and a skip would
# leave the independent check of the optima unrun without anyone noticing.
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cbc_and_highs_agree(name: str) -> None:
    case = load_case(name)
    problem = build_problem(case["request"])
    highs = solve_milp(problem, "highs", time.monotonic() + 120)
    cbc = solve_milp(problem, "cbc", time.monotonic() + 120)
    assert_reaches_expected(cbc.objective_value, case["expected"])
    assert cbc.objective_value == pytest.approx(highs.objective_value, rel=1e-4, abs=1e-2)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_rule_based_schedule_is_feasible_and_no_better_than_optimum(name: str) -> None:
    case = load_case(name)
    problem = build_problem(case["request"])
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    assert objective_value(problem, schedule) >= case["expected"]["objective_value"] - 1e-6


def test_dst_long_day_has_100_intervals() -> None:
    result = solve_dispatch(load_case("dst_long")["request"])
    assert len(result.points) == 100
    timestamps = np.array([p.ts.removesuffix("Z") for p in result.points], dtype="datetime64[s]")
    assert set(np.diff(timestamps).astype(int)) == {900}
    assert result.points[0].ts == "2024-10-26T22:00:00Z"


def _independent_solver():
    path = DATA / "cases" / "independent_optimum.py"
    spec = importlib.util.spec_from_file_location("independent_optimum", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.independent_optimum


@pytest.mark.parametrize("name", CASE_NAMES)
def test_each_expected_optimum_is_the_independent_solvers(name: str) -> None:
    """The stored optima stay what the contract's model, written out apart from the package,
    gives: a change to a case's request without its optimum fails here."""
    case = load_case(name)
    optimum, _bound = _independent_solver()(case["request"])
    assert_reaches_expected(optimum, case["expected"])


@pytest.mark.parametrize("use_milp", [True, False], ids=["milp", "rules"])
def test_no_flow_or_soc_is_a_negative_zero(use_milp: bool) -> None:
    # JSON and the API would show "-0.0 kW" of export.
    import math

    for name in CASE_NAMES:
        for point in solve_dispatch(load_case(name)["request"], use_milp=use_milp).points:
            values = [point.pv_set_kw, point.batt_ch_kw, point.batt_dis_kw, point.grid_imp_kw,
                      point.grid_exp_kw, point.curtail_kw, point.soc]
            assert all(math.copysign(1.0, v) > 0 for v in values), (name, point)
