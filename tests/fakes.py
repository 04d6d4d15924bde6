"""Stand-in solver functions that misbehave, run inside the real solver worker processes."""

from __future__ import annotations

import os
import signal
import time

from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.milp import MilpSolution, solve_milp


def hang(problem, solver, deadline):
    """A solver stuck in native code: ignores its time limit entirely."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


HANG_ONCE_MARKER = "DISPATCH_TEST_HANG_ONCE_MARKER"


def hang_once(problem, solver, deadline):
    """Hangs in the first worker to take a problem, solves in every one after it.

    The mark survives the hung worker being killed: a file named by the environment variable
    HANG_ONCE_MARKER, which every worker inherits.
    """
    marker = os.environ[HANG_ONCE_MARKER]
    try:
        open(marker, "x").close()
    except FileExistsError:
        return solve_milp(problem, solver, deadline)
    hang(problem, solver, deadline)


def crash(problem, solver, deadline):
    """A solver that takes its process down (as a segfault in native code would)."""
    os.kill(os.getpid(), signal.SIGKILL)


def time_limit_with_optimum(problem, solver, deadline):
    """The real optimum, reported as found at the time limit."""
    solution = solve_milp(problem, solver, deadline)
    solution.termination = "time_limit"
    return solution


def time_limit_without_a_bound(problem, solver, deadline):
    """The real optimum, reported as found at the time limit with no finite bound (HiGHS then
    reports an infinite gap)."""
    solution = time_limit_with_optimum(problem, solver, deadline)
    solution.mip_gap = float("inf")
    return solution


def time_limit_with_poor_incumbent(problem, solver, deadline):
    """An incumbent that idles the battery: worse than the rule-based schedule on a ToU day."""
    solution = solve_milp(problem, solver, deadline)
    idle = rule_based_schedule(problem.__class__(**{**problem.__dict__, "use_milp": False}))
    net = problem.load_kw - problem.pv_kw
    idle.charge[:] = 0
    idle.discharge[:] = 0
    idle.energy[:] = problem.energy_initial_kwh
    idle.grid_import[:] = net.clip(min=0)
    idle.grid_export[:] = 0
    idle.curtail[:] = (-net).clip(min=0)
    idle.pv_set[:] = problem.pv_kw - idle.curtail
    return MilpSolution(
        schedule=idle,
        objective_value=float("nan"),
        mip_gap=0.5,
        termination="time_limit",
        marginal_cost_per_kwh=solution.marginal_cost_per_kwh,
    )


def optimum_with_energy_from_nowhere(problem, solver, deadline):
    """The real optimum, but its battery gains energy in one interval with nothing charging it."""
    solution = solve_milp(problem, solver, deadline)
    solution.schedule.energy[5:] += 0.1 * problem.capacity_kwh
    return solution


def worker_pid(problem, solver, deadline):
    """The pid of the worker process that took the problem."""
    return os.getpid()


def echo_slowly(problem, solver, deadline):
    """The problem itself, after 0.6 s: which answer belongs to which problem is visible."""
    time.sleep(0.6)
    return problem


CHILD_PID_FILE = "DISPATCH_TEST_CHILD_PID_FILE"


def hang_with_a_child(problem, solver, deadline):
    """Starts a child process (as Pyomo starts CBC), writes its pid where the test says, hangs."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    with open(os.environ[CHILD_PID_FILE], "w") as out:
        out.write(str(child.pid))
    hang(problem, solver, deadline)


def crash_leaving_a_child(problem, solver, deadline):
    """Starts a child process (as Pyomo starts CBC), writes its pid where the test says, crashes."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    with open(os.environ[CHILD_PID_FILE], "w") as out:
        out.write(str(child.pid))
    crash(problem, solver, deadline)
