"""Requests once answered with an invalid or needlessly poor plan, kept as fixed cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from dispatch_pipeline.core.evaluate import objective_value, violations
from dispatch_pipeline.core.fallback import idle_schedule, rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.provenance import schedule_from_result
from tests.conftest import REGRESSION_NAMES, load_case, load_regression, regression_expectation


@pytest.mark.parametrize("name", REGRESSION_NAMES)
def test_rule_based_schedule_keeps_every_hard_constraint(name: str) -> None:
    problem = build_problem(load_regression(name))
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    # Never discharged below the band (a battery starting below it may be unable to climb back).
    assert schedule.energy.min() >= min(problem.energy_min_kwh, problem.energy_initial_kwh) - 1e-9


@pytest.mark.parametrize("name", REGRESSION_NAMES)
def test_the_plan_delivered_keeps_every_hard_constraint(name: str) -> None:
    # Whichever branch made it: a MILP answer that breaks the model is replaced by the rules'.
    from dispatch_pipeline import solve_dispatch

    request = load_regression(name)
    result = solve_dispatch(request)
    problem = build_problem(request)
    assert find_breaches(problem, schedule_from_result(result, problem)) == []
    # Nor does it cost more than the rules' plan, whatever the solver's tolerances.
    rules = objective_value(problem, rule_based_schedule(problem))
    assert result.objective_value <= rules + 1e-9 * max(1.0, abs(rules))


OPTIMUM_KNOWN = [name for name in REGRESSION_NAMES if "objective_value" in regression_expectation(name)]


@pytest.mark.parametrize("name", OPTIMUM_KNOWN)
def test_extreme_ratings_and_efficiencies_reach_the_known_optimum(name: str) -> None:
    from dispatch_pipeline import solve_dispatch

    result = solve_dispatch(load_regression(name))
    assert (result.status, result.solver) == ("ok", "milp"), result.fallback_reason
    expected = regression_expectation(name)["objective_value"]
    assert result.objective_value == pytest.approx(expected, rel=1e-4, abs=1e-2)


@pytest.mark.parametrize(
    "name", ["milp_tiny_loads_in_a_zero_width_band", "milp_tiny_loads_in_a_zero_width_band_paid_to_import"]
)
def test_loads_the_size_of_the_solvers_tolerance_in_a_zero_width_band_keep_the_milp_plan(name: str) -> None:
    """Loads of 1e-7 kW are HiGHS's whole feasibility tolerance: its plan once served them with
    negative flows and moved the stored energy off a zero-width band, a violation it never paid
    and the plan is judged by, and the day fell back with a false "solver failed"."""
    from dispatch_pipeline import solve_dispatch

    request = load_regression(name)
    result = solve_dispatch(request)
    assert (result.status, result.solver) == ("ok", "milp"), result.fallback_reason
    assert result.objective_value == pytest.approx(regression_expectation(name)["objective_value"], rel=1e-4)
    assert result.kpis.violation_kwh == pytest.approx(0.0, abs=1e-12)
    problem = build_problem(request)
    schedule = schedule_from_result(result, problem)
    # The load is served, not left to the tolerance: the balance holds far below 1e-7 kW.
    balance = schedule.pv_set + schedule.discharge + schedule.grid_import - schedule.charge - schedule.grid_export
    assert np.abs(balance - problem.load_kw).max() <= 1e-12


def test_a_battery_starting_above_its_band_owes_only_the_unavoidable_violation() -> None:
    """soc_initial 0.95 over soc_max 0.9 with the default end-of-day target (the contract's
    `= soc_initial`): every plan owes 0.05 x 100 kWh, above the band or short of the target at the
    end of the day. Both schedules owe exactly that and no more (the rule-based schedule once owed
    225 kWh, held above the band all day)."""

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


def flat_day(**changes) -> dict:
    """80 kW all day, PV at midday, a peak tariff 14:00-22:00: the shape the rules are written for."""
    pv = [max(0.0, 120 * np.sin(np.pi * (t - 24) / 48)) if 24 <= t < 72 else 0.0 for t in range(96)]
    request = {
        "site_id": "FLAT",
        "date": "2024-03-15",
        "timezone": "UTC",
        "load_kw": [80.0] * 96,
        "pv_kw": pv,
        "tariff": {"buy": [0.55 if 56 <= t < 88 else 0.25 for t in range(96)], "sell": [0.1] * 96},
    }
    for key, value in changes.items():
        request[key] = {**request[key], **value} if isinstance(value, dict) and key in request else value
    return request


@pytest.mark.parametrize(
    "changes",
    [
        {"tariff": {"demand_charge_per_kw": 1.0}},
        {"limits": {"grid_import_max_kw": 60.0}},
    ],
    ids=["billed-peak", "load-above-import-cap"],
)
def test_a_battery_below_its_band_recovers_in_the_first_interval(changes) -> None:
    """Once held back by the peak guard meant for cheap-hour charging (or by the import cap) and
    below soc_min for 27-30 intervals, each counted as violation: 209,015 against the MILP's 484."""
    problem = build_problem(flat_day(bess={"soc_initial": 0.02}, **changes))
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    assert schedule.energy[0] == pytest.approx(problem.energy_min_kwh)
    assert violations(problem, schedule)["viol_lo"].sum() == pytest.approx(0.0, abs=1e-9)


def test_a_billed_peak_does_not_keep_the_battery_short_of_its_end_of_day_target() -> None:
    problem = build_problem(
        flat_day(pv_kw=[0.0] * 96, bess={"soc_final_min": 0.9}, tariff={"demand_charge_per_kw": 1.0})
    )
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    assert schedule.energy[-1] == pytest.approx(problem.energy_final_kwh)
    assert violations(problem, schedule)["viol_end"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("efficiency", "buy"), [(1e-300, 0.4), (1e-200, 0.0)], ids=["divide", "zero-over-zero"])
def test_efficiencies_near_zero_give_a_valid_schedule_without_numpy_warnings(efficiency, buy) -> None:
    request = load_case("typical")["request"]
    request["bess"] |= {"charge_efficiency": efficiency, "discharge_efficiency": efficiency}
    request["tariff"]["buy"] = [buy] * len(request["tariff"]["buy"])
    problem = build_problem(request)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []


@pytest.mark.parametrize(("export_cap_kw", "left_above_kwh"), [(None, 0.0), (0.0, 15.0)])
def test_a_battery_above_its_band_at_a_site_without_load_exports_down_to_it(export_cap_kw, left_above_kwh) -> None:
    """A PV-and-battery plant (no load) whose battery starts 15 kWh above soc_max: the rules once
    held it there all day (96 intervals of violation); now it exports the excess at its rating in
    the first interval, unless there is no export to make."""
    from dispatch_pipeline import solve_dispatch

    request = {
        "site_id": "PLANT", "date": "2024-06-01", "timezone": "UTC",
        "load_kw": [0.0] * 96, "pv_kw": [0.0] * 96,
        "tariff": {"buy": [0.3] * 96, "sell": [0.05] * 96},
        "bess": {"capacity_kwh": 100.0, "max_charge_kw": 100.0, "max_discharge_kw": 100.0,
                 "soc_initial": 0.95, "soc_max": 0.8, "soc_final_min": 0.5, "discharge_efficiency": 1.0},
        "limits": {"grid_export_max_kw": export_cap_kw},
        "use_milp": False,
    }
    result = solve_dispatch(request)
    assert result.points[0].grid_exp_kw == pytest.approx(60.0 if export_cap_kw is None else 0.0)
    assert result.points[-1].soc * 100.0 == pytest.approx(80.0 + left_above_kwh)
    problem = build_problem(request)
    assert find_breaches(problem, schedule_from_result(result, problem)) == []


def test_a_milp_plan_optimal_within_its_gap_is_never_dearer_than_the_rules() -> None:
    from dispatch_pipeline import solve_dispatch

    request = load_regression("milp_optimal_within_gap_but_dearer_than_the_rules")
    result = solve_dispatch(request)
    problem = build_problem(request)
    assert (result.status, result.solver) == ("ok", "milp"), result.fallback_reason
    rules = objective_value(problem, rule_based_schedule(problem))
    assert result.objective_value <= rules + 1e-6 * abs(rules)
    assert find_breaches(problem, schedule_from_result(result, problem)) == []


def test_a_day_the_rules_would_make_dearer_than_an_idle_battery_costs_no_more_than_idling() -> None:
    # Rule 10: the rules recharge this day's end-of-day target in its dearest hour.
    from dispatch_pipeline import solve_dispatch

    request = load_regression("fallback_dearer_than_an_idle_battery")
    problem = build_problem(request)
    idle = idle_schedule(problem)
    assert find_breaches(problem, idle) == []
    result = solve_dispatch(request, use_milp=False)
    assert result.objective_value <= objective_value(problem, idle)
    assert find_breaches(problem, schedule_from_result(result, problem)) == []


def _dearer_than_the_rules(problem):
    """What no_dearer_than_the_rules is handed: the compiled model, and a stand-in MIP plan 20 %
    dearer than the rule-based schedule."""
    from dispatch_pipeline.core.milp.highs import _new_highs, compile_model
    from dispatch_pipeline.core.milp.model import build_model

    rules = rule_based_schedule(problem)
    compiled = compile_model(build_model(problem))
    highs = _new_highs(1e-4)
    highs.passModel(compiled.lp)
    return compiled, highs, (rules, objective_value(problem, rules) * 1.2 + 1.0, np.ones(problem.intervals))


@pytest.mark.parametrize(
    "name", ["milp_optimal_within_gap_but_dearer_than_the_rules", "milp_discharge_efficiency_of_one_millionth_as_a_pv_dump"]
)
def test_the_lp_over_the_rules_binaries_costs_no_more_than_the_rules(name: str) -> None:
    # The second discharges millionths of a kW: its binaries must allow them.
    import time

    from dispatch_pipeline.core.milp.highs import no_dearer_than_the_rules

    problem = build_problem(load_regression(name))
    compiled, highs, dearer = _dearer_than_the_rules(problem)
    rules = objective_value(problem, rule_based_schedule(problem))
    (schedule, objective, *_), rules_objective = no_dearer_than_the_rules(
        problem, compiled, highs, dearer, time.monotonic() + 30
    )
    assert rules_objective == rules
    assert objective <= rules + 1e-6 * abs(rules)
    assert objective == pytest.approx(objective_value(problem, schedule), rel=1e-6)
    assert find_breaches(problem, schedule) == []


def test_past_its_deadline_the_plan_in_hand_is_kept() -> None:
    import time

    from dispatch_pipeline.core.milp.highs import no_dearer_than_the_rules

    problem = build_problem(load_regression("milp_optimal_within_gap_but_dearer_than_the_rules"))
    compiled, highs, dearer = _dearer_than_the_rules(problem)
    plan, rules_objective = no_dearer_than_the_rules(problem, compiled, highs, dearer, time.monotonic() - 1)
    assert plan is dearer
    assert rules_objective == objective_value(problem, rule_based_schedule(problem))
