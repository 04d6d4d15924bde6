"""Solve the full Pyomo MILP (all 2T binaries) with the CBC executable.

CBC is the independent second opinion: it sees the plain model, with no relaxation tricks, so
agreement with the HiGHS path on the reference cases checks both.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.common.tempfiles import TempfileManager
from pyomo.opt import SolverStatus, TerminationCondition

from dispatch_pipeline.core.milp.highs import _new_highs, compile_model, plan_from_binaries
from dispatch_pipeline.core.milp.model import build_model
from dispatch_pipeline.core.milp.solution import (
    MilpFailure,
    MilpSolution,
    MilpTimeout,
    require_cbc,
    search_deadline,
)
from dispatch_pipeline.core.problem import DispatchProblem

# CBC's time limit covers only its search: writing the LP file, starting the executable and
# reading its solution back take another 0.1-0.25 s on a 96-288 interval day, and CBC overruns
# its limit to finish a node. Without this reserve an incumbent found in time arrives after the
# caller has killed the worker.
CBC_OVERHEAD_RESERVE_S = 0.3
# CBC's default integrality tolerance (1e-7) lets a "closed" switch pass 1e-7 of a rating: with a
# battery rated in GW, that is a real flow the switch was meant to forbid.
CBC_INTEGER_TOLERANCE = 1e-9
# The final summary of CBC's log, e.g. "Lower bound:                    136.567".
_LOG_LOWER_BOUND = re.compile(r"^Lower bound:\s+(\S+)", re.MULTILINE)
# One directory per solve, named after the worker process: "dispatch-cbc-<pid>-<random>".
_SOLVE_DIRECTORY_PREFIX = "dispatch-cbc-"


def solve_with_cbc(problem: DispatchProblem, deadline: float, mip_rel_gap: float = 1e-4) -> MilpSolution:
    require_cbc()
    model = build_model(problem)
    remaining = search_deadline(deadline) - time.monotonic() - CBC_OVERHEAD_RESERVE_S
    if remaining <= 0:
        raise MilpTimeout(
            f"time limit reached before CBC could start: {CBC_OVERHEAD_RESERVE_S:g} s of it is kept for writing "
            "the model and reading CBC's answer (a timeout_ms of about 800 or more leaves CBC time to search)"
        )
    solver = pyo.SolverFactory("cbc")
    # The deadline is wall clock; CBC counts CPU seconds unless told, and a process that waits
    # for a busy core spends less CPU than wall time, so it would still be searching when killed.
    solver.options["timeMode"] = "elapsed"
    solver.options["ratioGap"] = mip_rel_gap
    solver.options["seconds"] = round(remaining, 3)  # CBC takes fractions: int() made 0.7 s a whole second
    solver.options["integerTolerance"] = CBC_INTEGER_TOLERANCE
    with _solve_directory() as workdir:
        results, log = _run(solver, model, workdir)
        remaining = search_deadline(deadline) - time.monotonic() - CBC_OVERHEAD_RESERVE_S
        if results.solver.termination_condition in _INFEASIBLE and remaining > 0:
            # CBC 2.10's preprocessing can end in "Cut generators found to be infeasible!" on a
            # model with plans (one with a battery held at 0 kW charging, a zero-width SOC band and
            # violations costing nothing); its search without preprocessing finds the optimum.
            solver.options["preprocess"] = "off"
            solver.options["seconds"] = round(remaining, 3)
            results, log = _run(solver, model, workdir)
    condition = results.solver.termination_condition
    has_solution = len(results.solution) > 0
    if condition == TerminationCondition.optimal and results.solver.status == SolverStatus.ok:
        termination = "optimal"
    elif condition == TerminationCondition.maxTimeLimit and has_solution:
        termination = "time_limit"
    elif condition == TerminationCondition.maxTimeLimit or (
        # "Stopped on ... (no integer solution)": on time when aborted (the only limit set), on
        # numerical difficulties when an error.
        condition == TerminationCondition.intermediateNonInteger and results.solver.status == SolverStatus.aborted
    ):
        raise MilpTimeout("CBC reached its time limit without a feasible schedule")
    else:
        raise MilpFailure(f"CBC failed: {results.solver.status}, {condition}")
    model.solutions.load_from(results)

    compiled = compile_model(model)
    highs = _new_highs(mip_rel_gap)
    highs.passModel(compiled.lp)
    (schedule, objective, marginal), rules_objective = plan_from_binaries(
        problem, compiled, highs, _binary_values(model.b, model.T), _binary_values(model.g, model.T), deadline
    )
    return MilpSolution(
        schedule=schedule,
        objective_value=objective,
        mip_gap=_achieved_gap(results, log, objective),
        termination=termination,
        marginal_cost_per_kwh=marginal,
        rules_objective=rules_objective,
    )


_INFEASIBLE = (TerminationCondition.infeasible, TerminationCondition.infeasibleOrUnbounded)


def _run(solver: Any, model: Any, workdir: Path) -> tuple[Any, str]:
    """CBC's results (solutions not loaded) and its log."""
    log_path = workdir / "cbc.log"
    results = solver.solve(model, load_solutions=False, logfile=str(log_path))
    return results, log_path.read_text(errors="replace")


@contextlib.contextmanager
def _solve_directory() -> Iterator[Path]:
    """Where one solve's files go: Pyomo's LP and solution files and CBC's log.

    A worker killed at its deadline cannot remove them, so each solve first removes the
    directories of worker processes that no longer exist.
    """
    for abandoned in Path(tempfile.gettempdir()).glob(f"{_SOLVE_DIRECTORY_PREFIX}*"):
        pid = abandoned.name.removeprefix(_SOLVE_DIRECTORY_PREFIX).partition("-")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(abandoned, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{_SOLVE_DIRECTORY_PREFIX}{os.getpid()}-") as workdir:
        previous, TempfileManager.tempdir = TempfileManager.tempdir, workdir
        try:
            yield Path(workdir)
        finally:
            TempfileManager.tempdir = previous


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _binary_values(switch: Any, intervals: Any) -> np.ndarray:
    """A binary per interval, as 0.0 or 1.0. A switch that no constraint mentions (a zero rating
    makes it irrelevant) never reaches CBC's LP file and comes back unset: either value is as
    good, and closed is the one the fixed-binary LP can always honour."""
    return np.round([0.0 if switch[t].value is None else switch[t].value for t in intervals]).astype(float)


def _achieved_gap(results: Any, log: str, objective: float) -> float:
    """The gap between the plan's objective and the bound CBC proved, relative to the objective
    (not the 1e-4 it was asked for); NaN when CBC reported no bound. The plan's, not CBC's best:
    the LP over its binaries (or the rules') may cost less, and the gap is the plan's.

    Pyomo keeps the root LP's value as the bound when the search completed; the bound CBC proved
    is the "Lower bound:" of its log's summary (six significant digits, so it can round past the
    objective by a hair: the gap is never negative).
    """
    lower, upper = results.problem[0].lower_bound, objective
    try:
        lower = float(lower)
    except (TypeError, ValueError):
        return float("nan")
    logged = _LOG_LOWER_BOUND.findall(log)
    if logged:
        with contextlib.suppress(ValueError):
            lower = max(lower, float(logged[-1]))
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return float("nan")
    if upper <= lower:
        return 0.0
    return (upper - lower) / abs(upper) if upper else math.inf
