"""What a solve returns: the schedule, its explanation, its KPIs and how it was obtained."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dispatch_pipeline.core.request import Weights

Status = Literal["ok", "fallback"]
SolverName = Literal["milp", "fallback_rule", "rule_based"]
BINDING_NAMES = (
    "soc_min",
    "soc_max",
    "charge_rating",
    "discharge_rating",
    "import_limit",
    "export_limit",
    "terminal_soc",
    "pv_curtailed",
)


@dataclass
class Schedule:
    """Power flows (kW) per interval and stored energy (kWh) at the end of each interval."""

    pv_set: np.ndarray
    curtail: np.ndarray
    charge: np.ndarray
    discharge: np.ndarray
    grid_import: np.ndarray
    grid_export: np.ndarray
    energy: np.ndarray

    def soc(self, capacity_kwh: float) -> np.ndarray:
        return self.energy / capacity_kwh


class Kpis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_cost: float
    import_cost: float
    export_revenue: float
    total_import_kwh: float
    total_export_kwh: float
    total_curtail_kwh: float
    peak_grid_import_kw: float
    peak_grid_export_kw: float
    avg_soc: float
    min_soc: float
    max_soc: float
    final_soc: float
    equivalent_full_cycles: float
    self_sufficiency: float
    pv_utilization: float
    violation_kwh: float
    baseline_cost: float
    savings_vs_baseline: float


class Point(BaseModel):
    """One interval of the plan, as GET /dispatch/latest shows it."""

    ts: str = Field(description="Interval start, ISO 8601 UTC.")
    pv_set_kw: float
    batt_ch_kw: float
    batt_dis_kw: float
    grid_imp_kw: float
    grid_exp_kw: float
    curtail_kw: float
    soc: float = Field(description="Fraction of capacity at the end of the interval.")
    reason: str
    reason_code: str
    binding: list[str]
    marginal_cost_per_kwh: float | None = None


@dataclass(frozen=True)
class InputIssues:
    """When the stored series a plan read were issued: per series, the latest `issued_at` among
    the intervals it took (each interval takes its most recent issue). None: the series came with
    the request, or from a time-of-use tariff, and no issue of it was read.

    `forecast_stored` and `prices_stored`: when the most recently written of those rows was
    written (their `stored_at`); a row written later, under the same issue time too, makes the
    plan stale. None where no stored row was read, or the time is not known.

    `site_updated`: when the registration of the site the plan was made with last changed (its
    `updated_at` as read; the oldest, where the plan's inputs were taken from the site at
    different times); a later change makes the plan stale. None where no registered site was read.
    """

    forecast: dt.datetime | None = None
    prices: dt.datetime | None = None
    forecast_stored: dt.datetime | None = None
    prices_stored: dt.datetime | None = None
    site_updated: dt.datetime | None = None


NO_STORED_INPUTS = InputIssues()

ForecastIssuedAt = Annotated[dt.datetime | None, Field(description=(
    "When the stored forecast the plan read was issued (the latest issue among its intervals); "
    "null when the request sent its own load and PV."
))]
PricesIssuedAt = Annotated[dt.datetime | None, Field(description=(
    "When the stored price series the plan read was issued (the latest issue among its "
    "intervals); null when the prices came from a time-of-use tariff or the request."
))]

ForecastStoredAt = Annotated[dt.datetime | None, Field(description=(
    "When the most recently written row of the stored forecast the plan read was written (loaded, "
    "or overwritten by a load under the same issue time); null when no stored forecast was read."
))]
PricesStoredAt = Annotated[dt.datetime | None, Field(description=(
    "When the most recently written row of the stored price series the plan read was written; "
    "null when no stored price series was read."
))]
SiteUpdatedAt = Annotated[dt.datetime | None, Field(description=(
    "When the registration of the site the plan was made with last changed (the site's "
    "`updated_at` as read); null when no registered site was read."
))]


class DispatchResponse(BaseModel):
    """The contract's answer to a solve request."""

    run_id: uuid.UUID
    # Which local day was planned: a request without `date` plans tomorrow on the site's clock.
    site_id: str
    date: dt.date = Field(description="The local day planned, in `timezone`.")
    timezone: str
    status: Status
    fallback_used: bool
    fallback_reason: str | None = Field(None, description="Why the MILP's plan was not used, when it was not.")
    solver: SolverName
    objective_value: float
    kpis: Kpis


class DispatchResult(DispatchResponse):
    """Everything a solve produced; `response()` is the contract's short answer."""

    resolution_minutes: int
    milp_solver: str | None = Field(None, description="'highs' or 'cbc' when the MILP was tried.")
    mip_gap: float | None = None
    solve_ms: float
    timeout_ms: int
    objective_config: Weights
    forecast_issued_at: ForecastIssuedAt = None
    prices_issued_at: PricesIssuedAt = None
    forecast_stored_at: ForecastStoredAt = None
    prices_stored_at: PricesStoredAt = None
    site_updated_at: SiteUpdatedAt = None
    points: list[Point]

    def response(self) -> DispatchResponse:
        return DispatchResponse.model_validate(self.model_dump(include=set(DispatchResponse.model_fields)))

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
