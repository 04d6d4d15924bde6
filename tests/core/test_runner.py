"""The warm worker pool: parallel and background start, sharing among threads, CPU sizing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from dispatch_pipeline.core import runner as runner_module
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.milp import solve_milp
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.runner import MilpRunner, available_cpus
from tests.conftest import load_case


def test_more_solves_than_workers_all_finish_with_the_optimum() -> None:
    case = load_case("typical")
    problem = build_problem(case["request"])
    runner = MilpRunner(size=2)
    try:
        runner.warm(wait=False)  # solves queue for the workers still starting
        with ThreadPoolExecutor(max_workers=5) as pool:
            solutions = list(pool.map(lambda _: runner.solve(problem, "highs", 30.0, 0.25), range(10)))
    finally:
        runner.close()
    expected = case["expected"]
    tolerance = max(expected["rel_tolerance"] * abs(expected["objective_value"]), expected["abs_tolerance"])
    for solution in solutions:
        assert solution.termination == "optimal"
        assert objective_value(problem, solution.schedule) == pytest.approx(expected["objective_value"], abs=tolerance)


@pytest.mark.parametrize(("cpu_max", "expected"), [("50000 100000", 1), ("250000 100000", 3), ("max 100000", None)])
def test_available_cpus_honours_a_container_quota(tmp_path, monkeypatch, cpu_max, expected) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max + "\n")
    monkeypatch.setattr(runner_module, "CGROUP_CPU_MAX", str(quota))
    monkeypatch.setattr(runner_module.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert available_cpus() == (expected or 8)


def test_solve_milp_is_the_default_solve_function() -> None:
    assert MilpRunner(size=1).solve_function is solve_milp
