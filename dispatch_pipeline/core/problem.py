"""A validated request resolved into arrays on the site's local day: what every solver reads."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from dispatch_pipeline.core.calendar import LocalDay, local_day, next_local_date
from dispatch_pipeline.core.request import (
    Battery,
    DispatchRequest,
    Limits,
    RequestError,
    Weights,
    array_length_problems,
    parse_request,
)


@dataclass(frozen=True)
class DispatchProblem:
    site_id: str
    day: LocalDay
    load_kw: np.ndarray
    pv_kw: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    demand_charge_per_kw: float
    bess: Battery
    limits: Limits
    weights: Weights
    use_milp: bool
    timeout_ms: int

    @property
    def intervals(self) -> int:
        return len(self.load_kw)

    @property
    def dt(self) -> float:
        return self.day.dt_hours

    @property
    def capacity_kwh(self) -> float:
        return self.bess.capacity_kwh

    @property
    def import_cap_kw(self) -> float | None:
        return self.limits.import_cap_kw

    @property
    def import_bound_kw(self) -> np.ndarray:
        """I_t: the most the site can draw (load plus full charging)."""
        return self.load_kw + self.bess.max_charge_kw

    @property
    def export_bound_kw(self) -> np.ndarray:
        """X_t: the hard export cap of the contract."""
        bound = self.pv_kw + self.bess.max_discharge_kw
        cap = self.limits.export_cap_kw
        return bound if cap is None else np.minimum(bound, cap)

    @property
    def energy_initial_kwh(self) -> float:
        return self.bess.soc_initial * self.capacity_kwh

    @property
    def energy_min_kwh(self) -> float:
        return self.bess.soc_min * self.capacity_kwh

    @property
    def energy_max_kwh(self) -> float:
        return self.bess.soc_max * self.capacity_kwh

    @property
    def energy_final_kwh(self) -> float:
        return self.bess.terminal_soc * self.capacity_kwh


def request_day(
    request: DispatchRequest, *, default_timezone: str | None = None, today: dt.datetime | None = None
) -> LocalDay:
    """The local day `request` plans: its date (default: tomorrow) in its timezone (default:
    `default_timezone`, else UTC); RequestError when that day cannot be planned."""
    timezone = request.timezone or default_timezone or "UTC"
    date = request.date or next_local_date(timezone, today)
    try:
        return local_day(date, timezone, request.resolution_minutes)
    except ValueError as exc:
        raise RequestError([str(exc)]) from None


def build_problem(
    request: DispatchRequest | dict,
    *,
    pv_kw: list[float] | np.ndarray | None = None,
    default_timezone: str | None = None,
    today: dt.datetime | None = None,
) -> DispatchProblem:
    """Resolve defaults and check every array against the length of the local day.

    `pv_kw` and `default_timezone` are what a caller knows about a registered site (its stored
    forecast and timezone); the request's own values win.
    """
    request = parse_request(request, default_timezone=default_timezone, today=today, known_pv_kw=pv_kw)
    day = request_day(request, default_timezone=default_timezone, today=today)
    date = day.date

    pv = request.pv_kw if request.pv_kw is not None else pv_kw
    if pv is None:
        raise RequestError(
            [f"pv_kw: missing, and no stored PV forecast for site {request.site_id!r} on {date}"]
        )

    arrays = {
        "load_kw": request.load_kw,
        "pv_kw": pv,
        "tariff.buy": request.tariff.buy,
        "tariff.sell": request.tariff.sell,
    }
    problems = array_length_problems(arrays, day)
    pv_array = np.asarray(pv, dtype=float)
    if not problems and request.pv_kw is None and (
        not np.all(np.isfinite(pv_array)) or np.any(pv_array < 0)
    ):
        problems.append(f"pv_kw: stored forecast for {request.site_id!r} on {date} has invalid values")
    if problems:
        raise RequestError(problems)

    return DispatchProblem(
        site_id=request.site_id,
        day=day,
        load_kw=np.asarray(request.load_kw, dtype=float),
        pv_kw=pv_array,
        buy=np.asarray(request.tariff.buy, dtype=float),
        sell=np.asarray(request.tariff.sell, dtype=float),
        demand_charge_per_kw=request.tariff.demand_charge_per_kw,
        bess=request.bess,
        limits=request.limits,
        weights=request.weights,
        use_milp=request.use_milp,
        timeout_ms=request.timeout_ms,
    )
