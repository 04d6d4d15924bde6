"""What a stored dispatch run is: its row, the run read back whole or listed, its idempotency
key, and the columns its tables are written with."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dispatch_pipeline.core.request import Weights
from dispatch_pipeline.core.result import DispatchResult, Kpis, Point, SolverName, Status
from dispatch_pipeline.storage.tables import KPI_COLUMNS, SCHEDULE_FLOW_COLUMNS

Source = Literal["dagster", "api", "cli"]

RUN_COLUMNS = (
    "id",
    "site_id",
    "date",
    "created_at",
    "status",
    "solver",
    "fallback_reason",
    "objective_value",
    "objective_config",
    "timeout_ms",
    "solve_ms",
    "mip_gap",
    "source",
    "dagster_run_id",
    "timezone",
    "resolution_minutes",
    "milp_solver",
    "forecast_issued_at",
    "prices_issued_at",
    "forecast_stored_at",
    "prices_stored_at",
    "site_updated_at",
)
# Written only with a keyed run (save_keyed_run): every other writer leaves them null.
IDEMPOTENCY_COLUMNS = ("idempotency_key", "idempotency_scope", "request_fingerprint")
SCHEDULE_COLUMNS = ("run_id", "ts", *SCHEDULE_FLOW_COLUMNS, "soc", "reason")
EXPLANATION_COLUMNS = ("run_id", "ts", "reason_code", "reason", "binding", "marginal_cost_per_kwh")
KPI_TABLE_COLUMNS = ("run_id", *KPI_COLUMNS)
# The Point fields stored as the schedule's numbers, in SCHEDULE_COLUMNS order (same names).
POINT_NUMBER_FIELDS = (*SCHEDULE_FLOW_COLUMNS, "soc")


class RecordedWeights(BaseModel):
    """The weights a stored run was solved with, as stored.

    Not the request's `Weights`: a run is a record of what was solved, and rules on new requests
    tightened since (weights above 1e9, or between 0 and 1e-9, are refused now) must not make
    the runs stored before them unreadable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cost: float
    curtail: float
    violation: float


class RunRecord(BaseModel):
    """One row of `dispatch_runs`."""

    model_config = ConfigDict(frozen=True)

    run_id: uuid.UUID
    site_id: str
    date: dt.date
    created_at: dt.datetime
    status: Status
    solver: SolverName
    fallback_reason: str | None
    objective_value: float
    objective_config: RecordedWeights
    timeout_ms: int
    solve_ms: float
    mip_gap: float | None
    source: Source
    dagster_run_id: str | None
    timezone: str
    resolution_minutes: int
    milp_solver: str | None
    forecast_issued_at: dt.datetime | None
    prices_issued_at: dt.datetime | None
    forecast_stored_at: dt.datetime | None
    prices_stored_at: dt.datetime | None
    site_updated_at: dt.datetime | None


class StoredRun(BaseModel):
    """A stored run with its KPIs and its points (schedule joined with explanations, by ts)."""

    model_config = ConfigDict(frozen=True)

    run: RunRecord
    kpis: Kpis
    points: list[Point]

    def to_result(self) -> DispatchResult:
        """The DispatchResult this run was saved from."""
        run = self.run
        return DispatchResult(
            run_id=run.run_id,
            status=run.status,
            # The contract ties the two: status "fallback" exactly when the fallback rule ran.
            fallback_used=run.status == "fallback",
            solver=run.solver,
            objective_value=run.objective_value,
            kpis=self.kpis,
            site_id=run.site_id,
            date=run.date,
            timezone=run.timezone,
            resolution_minutes=run.resolution_minutes,
            fallback_reason=run.fallback_reason,
            milp_solver=run.milp_solver,
            mip_gap=run.mip_gap,
            solve_ms=run.solve_ms,
            timeout_ms=run.timeout_ms,
            # As solved: not judged again by the rules on new requests.
            objective_config=Weights.model_construct(**run.objective_config.model_dump()),
            forecast_issued_at=run.forecast_issued_at,
            prices_issued_at=run.prices_issued_at,
            forecast_stored_at=run.forecast_stored_at,
            prices_stored_at=run.prices_stored_at,
            site_updated_at=run.site_updated_at,
            points=self.points,
        )


class ListedRun(BaseModel):
    """A stored run's row and its day's total cost (its KPI row's `total_cost`), without points."""

    model_config = ConfigDict(frozen=True)

    run: RunRecord
    total_cost: float


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key for one request, whose key it is (`scope`: keys of two scopes never meet)
    and the fingerprint of the request it came with. Opaque strings to storage."""

    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class KeyedRun:
    """The run stored under an idempotency key, and the fingerprint of the request that stored it."""

    run_id: uuid.UUID
    site_id: str
    fingerprint: str
