"""What flows between the ops of `dispatch_schedule`: one value per site-day."""

from __future__ import annotations

from dataclasses import dataclass

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import InputIssues
from dispatch_pipeline.core.solve import Outcome
from dispatch_pipeline.defs.partitions import SiteDay


@dataclass(frozen=True)
class PlannedDay:
    """A validated problem, ready for a solver, and when its stored inputs were issued."""

    day: SiteDay
    problem: DispatchProblem
    currency: str
    issues: InputIssues


@dataclass(frozen=True)
class SolvedDay:
    """The schedule chosen for a day and how long choosing it took (MILP step plus fallback).

    Explanations and KPIs are assembled once the schedule has passed its checks: a result is
    several times the size of its schedule, and these values travel between steps.
    """

    planned: PlannedDay
    outcome: Outcome
    solve_ms: float


@dataclass(frozen=True)
class FailedDay:
    """A day the MILP could not plan: it falls back to the rule-based schedule."""

    planned: PlannedDay
    reason: str
    solve_ms: float
