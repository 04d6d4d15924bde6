"""The contract's mixed-integer program: built in Pyomo, solved by HiGHS (default) or CBC."""

from __future__ import annotations

from dispatch_pipeline.core.milp.solution import (
    MilpFailure,
    MilpSolution,
    MilpTimeout,
    SolverUnavailable,
    require_cbc,
    require_highs,
)
from dispatch_pipeline.core.problem import DispatchProblem

SOLVERS = ("highs", "cbc")
MIP_REL_GAP = 1e-4


def check_solver(solver: str) -> None:
    """Reject a solver name that is not one of SOLVERS before any work starts: a caller's or a
    deployment's mistake, not a solver failure."""
    if solver not in SOLVERS:
        raise SolverUnavailable(f"solver: unknown solver {solver!r} (choose one of {', '.join(SOLVERS)})")


def solve_milp(problem: DispatchProblem, solver: str, deadline: float) -> MilpSolution:
    """Solve to a relative gap of 1e-4; `deadline` is a time.monotonic() value."""
    check_solver(solver)
    if solver == "cbc":
        from dispatch_pipeline.core.milp.cbc import solve_with_cbc

        return solve_with_cbc(problem, deadline, MIP_REL_GAP)
    from dispatch_pipeline.core.milp.highs import solve_with_highs

    return solve_with_highs(problem, deadline, MIP_REL_GAP)


__all__ = [
    "MIP_REL_GAP",
    "SOLVERS",
    "MilpFailure",
    "MilpSolution",
    "MilpTimeout",
    "SolverUnavailable",
    "check_solver",
    "require_cbc",
    "require_highs",
    "solve_milp",
]
