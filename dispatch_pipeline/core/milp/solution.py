"""What a MILP solve hands back, whichever solver produced it."""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dispatch_pipeline.core.result import Schedule

# A MIP search stops this long before the solve's deadline (at most a tenth of the time left):
# HiGHS answers its interrupt only between phases of its search (seen 0.26 s late on a slow
# machine), CBC its time limit likewise, and the fixed-binary LP and the way back follow. The
# caller kills the worker soon after the deadline, and an incumbent still on its way is lost.
MIP_FINISH_RESERVE_S = 0.2


def search_deadline(deadline: float) -> float:
    """When the MIP search of a solve due at `deadline` (time.monotonic()) must stop."""
    return deadline - min(MIP_FINISH_RESERVE_S, 0.1 * max(0.0, deadline - time.monotonic()))


class MilpFailure(RuntimeError):
    """The solver returned no usable schedule; the message says why (it becomes fallback_reason)."""


class MilpTimeout(MilpFailure):
    """The time limit passed with no schedule at all."""


class SolverUnavailable(RuntimeError):
    """The requested solver is unknown, or not installed on this machine."""


@dataclass
class MilpSolution:
    schedule: Schedule
    objective_value: float
    mip_gap: float
    termination: Literal["optimal", "time_limit"]
    marginal_cost_per_kwh: np.ndarray
    # How many MIP rounds the lazy-integrality loop needed: 0 means the LP relaxation was already
    # free of simultaneous charge/discharge and import/export, hence MILP-optimal as it stood.
    integer_rounds: int = 0
    # The rule-based schedule's objective, as the worker judged it beside this plan (None when
    # nothing did): the caller need not build that schedule a second time.
    rules_objective: float | None = None


def require_highs(solver: str = "highs") -> None:
    """HiGHS solves the MILP, and the fixed-binary LP of every plan (CBC's too): `solver` runs
    only where the highspy package is installed. find_spec, not import: the solver workers import
    it, not the process that asks."""
    if importlib.util.find_spec("highspy") is None:
        needs = "" if solver == "highs" else ", which solves its plan's fixed-binary LP,"
        raise SolverUnavailable(
            f"solver: '{solver}' was requested but the Python package 'highspy'{needs} is not installed "
            "(install it, e.g. 'pip install highspy')"
        )


def require_cbc() -> None:
    if shutil.which("cbc") is None:
        raise SolverUnavailable(
            "solver: 'cbc' was requested but no 'cbc' executable is on PATH "
            "(install it, e.g. 'apt-get install coinor-cbc', or use solver 'highs')"
        )
