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
