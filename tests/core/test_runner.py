"""The warm worker pool: parallel and background start, sharing among threads, CPU sizing, and
workers that die, hang or are interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dispatch_pipeline.core import runner as runner_module
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.milp import MilpTimeout, solve_milp
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.runner import MilpRunner, SolverCrashed, available_cpus
from tests import fakes
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


class Interrupted(Exception):
    pass


def test_a_solve_interrupted_while_waiting_leaves_no_answer_for_the_next_problem(runner_with) -> None:
    # As a run being terminated is interrupted: the first answer must not reach the second caller.
    runner = runner_with(fakes.echo_slowly)

    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            runner.solve("problem A", "highs", 5.0, 0.25)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert runner.solve("problem B", "highs", 5.0, 0.25) == "problem B"
    assert runner.solve("problem C", "highs", 5.0, 0.25) == "problem C"


def test_a_worker_that_died_while_idle_is_replaced_not_an_error(runner_with) -> None:
    runner = runner_with(fakes.worker_pid)
    first = runner.solve(None, "highs", 5.0, 0.25)
    os.kill(first, signal.SIGKILL)  # as the OOM killer would
    # Until every thread of it has exited, a dead process is not yet reported to its parent.
    deadline = time.monotonic() + 10
    while os.waitid(os.P_PID, first, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline, "the killed worker never exited"
        time.sleep(0.05)
    second = runner.solve(None, "highs", 5.0, 0.25)
    assert second != first


@pytest.mark.parametrize(
    ("misbehaving", "error"),
    [(fakes.hang_with_a_child, MilpTimeout), (fakes.crash_leaving_a_child, SolverCrashed)],
    ids=["killed", "crashed"],
)
def test_a_worker_that_ends_takes_its_children_with_it(runner_with, tmp_path, monkeypatch, misbehaving, error) -> None:
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv(fakes.CHILD_PID_FILE, str(pid_file))
    runner = runner_with(misbehaving)
    with pytest.raises(error):
        runner.solve(None, "highs", 0.5, 0.25)
    wait_until_gone(int(pid_file.read_text()))  # a CBC left running would hold a core until it finished


def test_a_caller_killed_mid_solve_takes_its_workers_and_their_children_with_it(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    caller = subprocess.Popen(
        [sys.executable, "-c", (
            "from dispatch_pipeline.core.runner import MilpRunner\n"
            "from tests import fakes\n"
            "MilpRunner(1, fakes.hang_with_a_child).solve(None, 'highs', 600.0, 1.0)\n"
        )],
        env={**os.environ, fakes.CHILD_PID_FILE: str(pid_file)},
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert caller.poll() is None, f"the caller exited with {caller.returncode}"
            assert time.monotonic() < deadline, "the worker never started its child"
            time.sleep(0.05)
    finally:
        caller.kill()  # SIGKILL: no atexit, no pool close
        caller.wait()
    wait_until_gone(int(pid_file.read_text()))


def wait_until_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _state(pid)
        if state is None or state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running ({_state(pid)})")


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]
