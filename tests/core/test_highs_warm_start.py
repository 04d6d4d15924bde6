"""The LP basis kept from a site's previous day only shortens the path: never changes the outcome."""

from __future__ import annotations

import time

import highspy
import pytest

from dispatch_pipeline.core.milp import highs as highs_solver
from dispatch_pipeline.core.problem import build_problem
from tests.conftest import load_case


@pytest.fixture
def problem():
    return build_problem(load_case("negative")["request"])


def test_a_relaxation_that_fails_from_another_days_basis_is_solved_cold(problem, monkeypatch):
    cold = highs_solver.solve_with_highs(problem, time.monotonic() + 20)  # leaves the site's basis
    assert (problem.site_id, *_shape(problem)) in highs_solver._last_basis

    runs = []
    real_run = highs_solver._run

    def run_failing_once_warm(highs, deadline):
        runs.append(highs.getBasis().valid)
        if len(runs) == 1:
            return highspy.HighsModelStatus.kSolveError
        return real_run(highs, deadline)

    monkeypatch.setattr(highs_solver, "_run", run_failing_once_warm)
    again = highs_solver.solve_with_highs(problem, time.monotonic() + 20)

    assert runs[:2] == [True, False]  # the warm start, then a start without a basis
    assert again.objective_value == pytest.approx(cold.objective_value, rel=1e-9)


def _shape(problem) -> tuple[int, int]:
    from dispatch_pipeline.core.milp.model import build_model

    lp = highs_solver.compile_model(build_model(problem)).lp
    return lp.num_col_, lp.num_row_


def test_an_lp_with_binaries_fixed_that_fails_warm_is_solved_cold():
    import json

    from tests.conftest import DATA

    pair = json.loads((DATA / "warm_start_pair.json").read_text())
    highs_solver.solve_with_highs(build_problem(pair["first"]), time.monotonic() + 20)
    second = highs_solver.solve_with_highs(build_problem(pair["second"]), time.monotonic() + 20)
    assert second.objective_value == pytest.approx(pair["expected"]["objective_value"], rel=1e-6)
