"""Resources: the application database and the MILP solver pool."""

import atexit
import os
import threading
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine

from dispatch_pipeline.core.request import DEFAULT_TIMEOUT_MS, TIMEOUT_MS_RANGE
from dispatch_pipeline.core.runner import MilpRunner, SolverPool, available_cpus
from dispatch_pipeline.core.solve import check_solver, missing_solver
from dispatch_pipeline.core.solver_service import (
    ADDRESS_ENV,
    KEY_ENV,
    ServiceClient,
    ServiceUnavailable,
)
from dispatch_pipeline.defs.common import run_strategy
from dispatch_pipeline.storage import database_url, open_database


class DispatchStorage(dg.ConfigurableResource):
    """The application database (sites, forecasts, prices, dispatch runs)."""

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means DATABASE_URL, else SQLite under DAGSTER_HOME.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step of the pipeline reads or writes here: a run that cannot plan fails as it
        # starts, before it ingests anything, whichever executor runs its steps.
        if context.run is not None:
            run_strategy(context.run.tags)

    def url(self) -> str:
        return self.database_url or database_url()

    def engine(self) -> Engine:
        """The process's engine for the database, its schema migrated to head (once)."""
        return open_database(self.url())


# Warm solver workers are processes that take about a second to start; a process running many
# Dagster runs (tests, the demo, the benchmark, an in-process backfill) reuses them.
_runners: dict[int, MilpRunner] = {}
_runners_lock = threading.Lock()


def shared_runner(size: int) -> MilpRunner:
    with _runners_lock:
        runner = _runners.get(size)
        if runner is None:
            runner = _runners[size] = MilpRunner(size)
            atexit.register(runner.close)
        return runner


class DispatchSolver(dg.ConfigurableResource):
    """How the MILP is solved: which solver, under which hard timeout, how many at once, where."""

    solver: Literal["highs", "cbc"] = Field(
        default="highs",
        description=(
            "The MILP solver: highs (the default) or cbc. Where it is not installed, the site-days "
            "are planned by the rule-based fallback (fallback_reason 'solver missing: ...')."
        ),
    )
    timeout_ms: int = Field(
        default=DEFAULT_TIMEOUT_MS,
        ge=TIMEOUT_MS_RANGE.start,
        le=TIMEOUT_MS_RANGE.stop - 1,
        description="Hard wall-clock bound of each MILP step.",
    )
    parallelism: int = Field(
        default=0, ge=0, description="Solver worker processes (0: one per CPU this process may use, container quota included)."
    )
    service: str = Field(
        default="",
        description=(
            "Address of a solver service (`dispatch-pipeline solver serve`: HOST:PORT or a Unix "
            "socket path) whose warm workers the run uses instead of starting its own. Empty: "
            "the run starts its own. Unreachable: the run starts its own and logs why."
        ),
    )
    service_key: str = Field(default="", description="Shared secret the solver service authenticates runs with.")

    _runner: SolverPool | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_solver(self.solver)  # an unknown name fails the run before any work starts
        if context.run is not None and run_strategy(context.run.tags) == "rule_based":
            return  # nothing to solve: no workers to start or service to reach
        if (missing := missing_solver(self.solver)) is not None:
            context.log.warning(f"{missing}: every site-day of this run falls back to the rule-based schedule")
        if self.service:
            try:
                self._runner = ServiceClient(
                    self.service, self.service_key, self.solver, self._local_pool, on_fallback=context.log.warning
                )
                return
            except (ServiceUnavailable, ValueError) as exc:
                context.log.warning(
                    f"solver service at {self.service}: {exc}; this run starts its own solver workers"
                )
        self._runner = self._local_pool()

    def _local_pool(self) -> MilpRunner:
        runner = shared_runner(self.parallelism or available_cpus())
        # Workers start in the background while the run reads its inputs (about a second each;
        # start-up is never counted in a solve's timeout).
        runner.warm(wait=False)
        return runner

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if isinstance(self._runner, ServiceClient):
            self._runner.close()  # its connections; local workers stay warm for the next run

    @property
    def runner(self) -> SolverPool:
        if self._runner is None:
            raise dg.DagsterInvariantViolationError("DispatchSolver used before setup")
        return self._runner

    @property
    def placement(self) -> str:
        """Where this run's solves ran, for the run's metadata."""
        if isinstance(self._runner, ServiceClient) and self._runner.using_service:
            return f"solver service {self.service}"
        return "the run's own workers"


def default_solver() -> DispatchSolver:
    """The solver service from DISPATCH_SOLVER_SERVICE (read when a run starts) if it is set now."""
    if os.environ.get(ADDRESS_ENV):
        return DispatchSolver(service=dg.EnvVar(ADDRESS_ENV), service_key=dg.EnvVar(KEY_ENV))
    return DispatchSolver()


def default_storage() -> DispatchStorage:
    """DATABASE_URL read when a run starts (EnvVar) if it is set now; else the SQLite default."""
    if os.environ.get("DATABASE_URL"):
        return DispatchStorage(database_url=dg.EnvVar("DATABASE_URL"))
    return DispatchStorage()
