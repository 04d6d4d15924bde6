"""The feasibility checker behind the blocking asset checks: every breach found, NaN included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.problem import build_problem
from tests.conftest import load_case


@pytest.fixture
def problem_and_schedule():
    problem = build_problem(load_case("typical")["request"])
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    return problem, schedule


def changed(schedule, name: str, t: int, value: float):
    values = getattr(schedule, name).copy()
    values[t] = value
    return dataclasses.replace(schedule, **{name: values})


def test_power_out_of_balance_is_a_breach_at_its_interval(problem_and_schedule):
    problem, schedule = problem_and_schedule
    corrupted = changed(schedule, "grid_import", 5, schedule.grid_import[5] + 10.0)
    assert [(b.check, b.interval) for b in find_breaches(problem, corrupted)] == [("power_balance", 5)]


@pytest.mark.parametrize("name", ["grid_import", "energy", "curtail"])
def test_a_nan_anywhere_is_a_breach_not_a_pass(problem_and_schedule, name):
    problem, schedule = problem_and_schedule
    breaches = find_breaches(problem, changed(schedule, name, 20, np.nan))
    assert breaches and all(b.detail == "not a number" for b in breaches)
    assert {b.interval for b in breaches} <= {20, 21}  # energy at t feeds the dynamics of t + 1


def large_load_small_battery(load_kw: list[float] | None = None):
    """A 200 MW load (or `load_kw`, hourly) beside a 100 kWh, 50 kW battery, planned by the rules:
    every breach is judged on its own scale."""
    request = load_case("typical")["request"] | {
        "resolution_minutes": 60,
        "load_kw": load_kw or [200_000.0] * 24,
        "pv_kw": [0.0] * 24,
        "tariff": {"buy": [0.2] * 12 + [0.5] * 12, "sell": [0.1] * 24},
        "bess": {"capacity_kwh": 100.0, "max_charge_kw": 50.0, "max_discharge_kw": 50.0,
                 "charge_efficiency": 1.0, "discharge_efficiency": 1.0, "soc_initial": 0.5},
    }
    problem = build_problem(request)
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    return problem, schedule


def test_a_small_battery_beside_a_large_load_breaks_its_own_rating():
    problem, schedule = large_load_small_battery()
    t = 2
    over = dataclasses.replace(
        schedule,
        charge=np.where(np.arange(problem.intervals) == t, 51.9, 0.0),
        discharge=np.zeros(problem.intervals),
        grid_import=schedule.grid_import + np.where(np.arange(problem.intervals) == t, 51.9, 0.0) - schedule.charge + schedule.discharge,
        energy=np.full(problem.intervals, problem.energy_initial_kwh) + np.where(np.arange(problem.intervals) >= t, 51.9, 0.0),
    )
    assert {b.check for b in find_breaches(problem, over)} >= {"charge_rating"}


def test_energy_appearing_from_nowhere_in_a_small_battery_is_a_breach():
    problem, schedule = large_load_small_battery()
    corrupted = changed(schedule, "energy", 3, schedule.energy[3] + 1.5)
    assert {(b.check, b.interval) for b in find_breaches(problem, corrupted)} == {("energy_dynamics", 3), ("energy_dynamics", 4)}


T = 10  # the interval each case below breaks


@pytest.mark.parametrize(
    ("check", "break_it"),
    [
        ("power_balance", lambda p, s: changed(s, "grid_import", T, s.grid_import[T] + 10.0)),
        ("pv_split", lambda p, s: changed(s, "curtail", T, s.curtail[T] + 1.0)),
        ("nonnegative_flows", lambda p, s: changed(s, "curtail", T, -1.0)),
        ("energy_dynamics", lambda p, s: changed(s, "energy", T, s.energy[T] + 1.0)),
        ("physical_soc", lambda p, s: changed(s, "energy", T, p.capacity_kwh + 10.0)),
        ("charge_rating", lambda p, s: changed(s, "charge", T, p.bess.max_charge_kw + 10.0)),
        ("discharge_rating", lambda p, s: changed(s, "discharge", T, p.bess.max_discharge_kw + 10.0)),
        ("export_cap", lambda p, s: changed(s, "grid_export", T, p.export_bound_kw[T] + 10.0)),
        ("import_bound", lambda p, s: changed(s, "grid_import", T, p.import_bound_kw[T] + 10.0)),
        ("no_simultaneous_charge_discharge",
         lambda p, s: changed(changed(s, "charge", T, s.charge[T] + 5.0), "discharge", T, s.discharge[T] + 5.0)),
        ("no_simultaneous_import_export",
         lambda p, s: changed(changed(s, "grid_import", T, s.grid_import[T] + 5.0), "grid_export", T, s.grid_export[T] + 5.0)),
    ],
)
def test_every_check_finds_its_own_breach(problem_and_schedule, check, break_it):
    problem, schedule = problem_and_schedule
    found = {(b.check, b.interval) for b in find_breaches(problem, break_it(problem, schedule))}
    assert (check, T) in found, found


@pytest.mark.parametrize(("relative_breach", "found"), [(2e-5, True), (5e-6, False)])
def test_energy_is_judged_at_a_hundred_thousandth_of_the_battery(relative_breach, found):
    # 1000 kWh: 0.02 kWh out of nowhere is a breach; 0.005 kWh is a solver's rounding.
    request = load_case("typical")["request"] | {
        "bess": {"capacity_kwh": 1000.0, "max_charge_kw": 500.0, "max_discharge_kw": 500.0},
    }
    problem = build_problem(request)
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    corrupted = changed(schedule, "energy", T, schedule.energy[T] + relative_breach * problem.capacity_kwh)
    breaches = {(b.check, b.interval) for b in find_breaches(problem, corrupted)}
    assert (("energy_dynamics", T) in breaches) is found


@pytest.mark.parametrize(("relative_breach", "found"), [(2e-5, True), (5e-6, False)])
def test_power_balance_is_judged_at_a_hundred_thousandth_of_the_intervals_own_power(relative_breach, found):
    # 10 kW at night, 200 MW at noon: a night interval is judged on its own 10 kW, not on the
    # day's largest load, which would let hundreds of kW go missing there.
    load = [10.0] * 24
    load[12] = 200_000.0
    problem, schedule = large_load_small_battery(load)
    t = 3
    flows = (schedule.pv_set, schedule.curtail, schedule.charge, schedule.discharge, schedule.grid_import,
             schedule.grid_export)
    power = max(1.0, problem.load_kw[t], problem.pv_kw[t], *(flow[t] for flow in flows))
    assert power == pytest.approx(10.0)  # the interval's own power, far below noon's
    corrupted = changed(schedule, "grid_import", t, schedule.grid_import[t] + relative_breach * power)
    breaches = [(b.check, b.interval) for b in find_breaches(problem, corrupted)]
    assert breaches == ([("power_balance", t)] if found else [])


@pytest.mark.parametrize(("capacity_kwh", "over_kwh", "found"), [
    # A battery of a billionth of a kWh stored to 8.5 times full: 7.5e-9 kWh over, far under the
    # 1e-5 kWh that judges a kWh-scale battery, once passed as physical.
    (1e-9, 7.5e-9, True),
    (1e-9, 0.5e-12, False),  # a solver's rounding: SOC 1.0005
    (1.0, 0.5e-5, False),  # from 10 Wh up, 1e-5 kWh as before
    (100.0, 0.05, True),  # 0.05 % of the battery over full: not the 0.1 % that binds only below 10 Wh
])
def test_a_small_batterys_soc_is_judged_as_a_fraction_of_it(capacity_kwh, over_kwh, found):
    request = load_case("typical")["request"] | {"bess": {"capacity_kwh": capacity_kwh, "soc_max": 1.0}}
    problem = build_problem(request)
    schedule = rule_based_schedule(problem)
    assert find_breaches(problem, schedule) == []
    full = np.full(problem.intervals, problem.capacity_kwh)
    # Held full all day, one interval over it: only the SOC bound is at stake.
    corrupted = dataclasses.replace(
        schedule, energy=np.where(np.arange(problem.intervals) == T, full + over_kwh, full),
    )
    checks = {(b.check, b.interval) for b in find_breaches(problem, corrupted)}
    assert (("physical_soc", T) in checks) is found, checks


def test_charging_and_discharging_at_once_is_a_breach_however_large_the_ratings():
    for rating in (50.0, 1e9):
        request = load_case("typical")["request"] | {
            "bess": {**load_case("typical")["request"]["bess"], "max_charge_kw": rating, "max_discharge_kw": rating,
                     "charge_efficiency": 1.0, "discharge_efficiency": 1.0},
        }
        problem = build_problem(request)
        schedule = rule_based_schedule(problem)
        assert find_breaches(problem, schedule) == []
        # 40 kW both ways at once: balance and energy still hold, the binaries do not.
        both = dataclasses.replace(
            schedule, charge=schedule.charge + np.where(np.arange(problem.intervals) == 10, 40.0, 0.0),
            discharge=schedule.discharge + np.where(np.arange(problem.intervals) == 10, 40.0, 0.0),
        )
        found = [(b.check, b.interval) for b in find_breaches(problem, both)]
        assert ("no_simultaneous_charge_discharge", 10) in found, rating
