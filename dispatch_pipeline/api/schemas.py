"""Response shapes of the API and the documented request examples.

The request model itself is the core's `DispatchRequest`; the POST body is parsed by hand (see
routes.py) and documented through `request_body_openapi()`.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from dispatch_pipeline.api.limits import MAX_INTERVALS
from dispatch_pipeline.core.request import DispatchRequest
from dispatch_pipeline.core.result import (
    DispatchResponse,
    ForecastIssuedAt,
    ForecastStoredAt,
    Kpis,
    Point,
    PricesIssuedAt,
    PricesStoredAt,
    SiteUpdatedAt,
    SolverName,
    Status,
)
from dispatch_pipeline.storage import RecordedWeights

__all__ = [
    "DispatchResponse", "ErrorResponse", "HealthResponse", "LatestSchedule", "RunDetail", "RunList", "RunSummary",
]

# Bounds of GET /dispatch/runs?limit=: a day re-planned by many backfills may hold many runs.
RUN_LIST_DEFAULT_LIMIT = 100
RUN_LIST_MAX_LIMIT = 1000


class LatestSchedule(BaseModel):
    """The most recent plan of a site (and date), point by point."""

    site_id: str
    date: dt.date = Field(description="The site's local day the plan covers.")
    timezone: str
    run_id: uuid.UUID
    created_at: dt.datetime
    status: Status
    solver: SolverName
    resolution_minutes: int
    forecast_issued_at: ForecastIssuedAt
    prices_issued_at: PricesIssuedAt
    points: list[Point]


class RunDetail(BaseModel):
    """One stored run: how it was solved, its KPIs and its points."""

    run_id: uuid.UUID
    site_id: str
    date: dt.date
    timezone: str
    created_at: dt.datetime
    source: Literal["dagster", "api", "cli"]
    status: Status
    fallback_used: bool
    fallback_reason: str | None
    solver: SolverName
    milp_solver: str | None
    objective_value: float
    objective_config: RecordedWeights = Field(description="The weights the run was solved with.")
    timeout_ms: int
    solve_ms: float
    mip_gap: float | None
    resolution_minutes: int
    forecast_issued_at: ForecastIssuedAt
    prices_issued_at: PricesIssuedAt
    # What stale_plan_sensor compares with the stored inputs and the site now: why a plan was
    # made again, or was not, is answered from here.
    forecast_stored_at: ForecastStoredAt
    prices_stored_at: PricesStoredAt
    site_updated_at: SiteUpdatedAt
    kpis: Kpis
    points: list[Point]


class RunSummary(BaseModel):
    """One stored run of a site-day, without its points (`GET /dispatch/runs/{run_id}` has them)."""

    run_id: uuid.UUID = Field(description="The run's id: `GET /dispatch/runs/{run_id}` answers with the run in full.")
    created_at: dt.datetime = Field(
        description="When the run was stored. The day's newest run is its plan in force (`GET /dispatch/latest`)."
    )
    source: Literal["dagster", "api", "cli"] = Field(description=(
        "Who stored the run: `dagster` (the day-ahead schedule, re-plans, backfills), `api` "
        "(`POST /dispatch/run`) or `cli` (`dispatch-pipeline solve --store`)."
    ))
    status: Status = Field(description="`fallback` when the MILP's plan was not used.")
    solver: SolverName = Field(description=(
        "What made the plan: `milp`, `fallback_rule` (the MILP's plan was not used) or "
        "`rule_based` (the rule-based strategy, or a request with `use_milp` false)."
    ))
    milp_solver: str | None = Field(description="'highs' or 'cbc' when the MILP was tried.")
    fallback_reason: str | None = Field(description="Why the MILP's plan was not used, when it was not.")
    objective_value: float = Field(description="The value of the objective the plan was solved for, with the run's weights.")
    total_cost: float = Field(description="The day's cost of the plan in the site's currency (the KPI `total_cost`).")
    forecast_issued_at: ForecastIssuedAt
    prices_issued_at: PricesIssuedAt


class RunList(BaseModel):
    """The stored runs of a site's local day, newest first."""

    site_id: str
    date: dt.date = Field(description="The site's local day the runs plan.")
    runs: list[RunSummary] = Field(description=(
        "Newest first (`created_at`, then `run_id`, descending: the first is what "
        "`GET /dispatch/latest` answers for the day); at most `limit`, and with `before` only those "
        "after that run in this order. Empty when no run of the day is stored (or none is after "
        "`before`), whether or not the site is known."
    ))
    more: bool = Field(description=(
        "Older runs of the day are left out beyond `limit`: `next_before` gets the next page of them."
    ))
    next_before: uuid.UUID | None = Field(description=(
        "When `more`, the `run_id` of the page's last (oldest) run: ask again with `before` set to it "
        "(and the same `site_id` and `date`) for the runs after it. Null when `more` is false."
    ))


class DatabaseHealth(BaseModel):
    ok: bool
    error: str | None = None


class SolverHealth(BaseModel):
    highs: bool = Field(description="highspy importable: the default MILP solver.")
    cbc: bool = Field(description="cbc on PATH: optional second solver.")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    database: DatabaseHealth
    solvers: SolverHealth


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="A sentence, or for 422 a list of {loc, msg, type, input} per offending field."
    )
    message: str = Field(description="The whole error as one readable line.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown bearer token."},
    403: {"model": ErrorResponse, "description": "The token may not access this site."},
    413: {"model": ErrorResponse, "description": "Body over 1 MB (a GET takes none)."},
    422: {"model": ErrorResponse, "description": "Invalid input; names each field and value."},
    500: {
        "model": ErrorResponse,
        "description": (
            "The server failed; the message says why (stored rows or a site definition changed by "
            "hand so they no longer make a whole run or a valid site) or, for an internal error, "
            "that the server's log has it."
        ),
    },
    503: {"model": ErrorResponse, "description": "The database is unavailable; try again after the `Retry-After` seconds."},
}


def _quick_start_request() -> dict[str, Any]:
    """A small request in the contract's shape, spelled out: 96 quarter-hours, load ~80..115 kW,
    ToU prices 0.40..0.55 buy / 0.20..0.28 sell, and a clear-sky PV day so no forecast is needed."""
    hours = [i / 4 for i in range(96)]
    load = [round(80 + 35 * max(0.0, math.sin(math.pi * (h - 6) / 16)), 2) for h in hours]
    pv = [round(max(0.0, 55 * math.sin(math.pi * (h - 7) / 12)), 2) for h in hours]

    def tou(h: float, default: float, morning: float, midday: float, peak: float) -> float:
        if 8 <= h < 11:
            return morning
        if 11 <= h < 14 or 18 <= h < 22:
            return midday
        return peak if 14 <= h < 18 else default

    return {
        "site_id": "DEMO",
        "date": "2024-03-15",
        "timezone": "Asia/Kuala_Lumpur",
        "resolution_minutes": 15,
        "load_kw": load,
        "pv_kw": pv,
        "tariff": {
            "buy": [tou(h, 0.40, 0.45, 0.50, 0.55) for h in hours],
            "sell": [tou(h, 0.20, 0.22, 0.25, 0.28) for h in hours],
        },
    }


QUICK_START_REQUEST = _quick_start_request()
# Tomorrow for a site `dispatch-pipeline demo` registers, with the PV forecast it stores.
REGISTERED_SITE_REQUEST = {
    **{key: value for key, value in QUICK_START_REQUEST.items() if key not in ("pv_kw", "timezone", "date")},
    "site_id": "KL_MALL",
}

REQUEST_EXAMPLES = {
    "quick_start": {
        "summary": "Quick-start request (96 values, PV given)",
        "value": QUICK_START_REQUEST,
    },
    "registered_site": {
        "summary": (
            "Registered site, tomorrow on its clock: battery, limits, weights, timezone, demand charge "
            "and PV forecast from storage (KL_MALL, once `dispatch-pipeline demo` has stored them)"
        ),
        "value": REGISTERED_SITE_REQUEST,
    },
}


def request_body_openapi() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": (
                "A dispatch request per the contract, sent as application/json. Fields left out "
                "take the registered site's stored values (bess, limits, weights, timezone, "
                "tariff.demand_charge_per_kw, that of the tariff in force on the request's local "
                "day; a partial bess/limits/weights object patches the site's), then the contract "
                "defaults. Without `pv_kw` the site's stored forecast is "
                "used, averaged over the request's intervals if it is stored finer. Arrays hold at "
                f"most {MAX_INTERVALS} values; bodies at most 1 MB."
            ),
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/DispatchRequest"},
                    "examples": REQUEST_EXAMPLES,
                }
            },
        }
    }


def request_component_schemas() -> dict[str, dict[str, Any]]:
    """DispatchRequest and the models it refers to, as OpenAPI components."""
    schema = DispatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    for name in ("load_kw", "pv_kw"):
        _limit_array(schema["properties"][name])
    for name in ("buy", "sell"):
        _limit_array(components["Tariff"]["properties"][name])
    components["DispatchRequest"] = schema
    return components


def _limit_array(schema: dict[str, Any]) -> None:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "array":
            option["maxItems"] = MAX_INTERVALS
