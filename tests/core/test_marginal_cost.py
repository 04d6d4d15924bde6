"""marginal_cost_per_kwh is what one more kWh of load at t costs, in currency: the slope of the
optimum in the load at t, per kWh (not per kW) and per unit of currency (not of weighted objective).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.milp.highs import solve_with_highs
from dispatch_pipeline.core.problem import build_problem
from tests.conftest import load_case

EPS_KW = 0.05
# One-sided slopes of an LP optimum are exact to ~1e-9 here; at a kink they differ by a price.
SAME_SLOPE = 1e-4
MIN_COMPARED = 10


def exact_optimum(request: dict) -> float:
    # At the contract's 1e-4 relative gap, a day carrying ~2e4 of violation penalty may end ~2 off
    # its optimum, which swamps the EPS_KW * dt change being measured: differences need gap 0.
    solution = solve_with_highs(build_problem(request), time.monotonic() + 20, mip_rel_gap=0.0)
    assert solution.termination == "optimal"
    return solution.objective_value


def with_load_step(request: dict, t: int, step_kw: float) -> dict:
    stepped = copy.deepcopy(request)
    stepped["load_kw"][t] += step_kw
    return stepped


def marginals_against_finite_differences(request: dict, intervals: range) -> dict[int, tuple[float, float]]:
    """{t: (reported marginal, finite-difference slope)} at every interval of `intervals` where
    the slopes on both sides agree: at a kink any price between them is a valid dual."""
    result = solve_dispatch(request, timeout_ms=60_000)
    assert result.solver == "milp", result.fallback_reason
    dt = request["resolution_minutes"] / 60
    cost_weight = request["weights"]["cost"]
    base = exact_optimum(request)
    compared = {}
    for t in intervals:
        steps = [s for s in (EPS_KW, -EPS_KW) if request["load_kw"][t] + s >= 0]
        slopes = [
            (exact_optimum(with_load_step(request, t, s)) - base) / (cost_weight * s * dt) for s in steps
        ]
        if len(slopes) == 2 and abs(slopes[0] - slopes[1]) <= SAME_SLOPE * (1 + abs(slopes[0])):
            compared[t] = (result.points[t].marginal_cost_per_kwh, slopes[0])
    return compared


def assert_marginals_match(compared: dict[int, tuple[float, float]], tried: int) -> None:
    assert len(compared) >= min(MIN_COMPARED, tried), f"only {len(compared)} of {tried} intervals compared"
    wrong = {
        t: (reported, slope)
        for t, (reported, slope) in compared.items()
        if reported != pytest.approx(slope, rel=1e-5, abs=1e-5)
    }
    assert wrong == {}, "interval: (reported, finite difference)"


def checked_marginals(request: dict, every: int) -> dict[int, tuple[float, float]]:
    """The marginals of every `every`-th interval, checked against finite differences."""
    intervals = range(0, len(request["load_kw"]), every)
    compared = marginals_against_finite_differences(request, intervals)
    assert_marginals_match(compared, len(intervals))
    return compared


def site_day(resolution_minutes: int, cost_weight: float) -> dict:
    """A day whose margin moves: night imports, PV exported and then curtailed at the export cap
    (with negative sell prices at noon), an evening peak above the import cap."""
    per_hour = 60 // resolution_minutes
    hours = np.arange(24 * per_hour) / per_hour
    load = 40 + 10 * np.sin(2 * np.pi * (hours - 6) / 24)
    load[(hours >= 19) & (hours < 20)] = 160.0
    pv = np.clip(150 * np.sin(np.pi * (hours - 6) / 13), 0, None)
    buy = np.select([hours < 7, hours < 18, hours < 21], [0.2, 0.35, 0.6], 0.25)
    sell = np.where((hours >= 11) & (hours < 13), -0.03, 0.08)
    return {
        "site_id": f"MARGIN_{resolution_minutes}",
        "date": "2024-06-01",
        "resolution_minutes": resolution_minutes,
        "load_kw": np.round(load, 3).tolist(),
        "pv_kw": np.round(pv, 3).tolist(),
        "tariff": {"buy": buy.tolist(), "sell": sell.tolist()},
        # A cycling cost: charging and discharging at once to burn surplus no longer beats
        # curtailing it, so the relaxation is the MILP's optimum and differences are exact.
        "bess": {"cycle_cost_per_kwh": 0.02},
        "limits": {"grid_import_max_kw": 90.0, "grid_export_max_kw": 30.0},
        "weights": {"cost": cost_weight, "curtail": 0.2, "violation": 1000.0},
    }


def reference_case(name: str, cost_weight: float) -> dict:
    request = copy.deepcopy(load_case(name)["request"])
    request["weights"]["cost"] = cost_weight
    return request


@pytest.mark.parametrize(
    ("name", "cost_weight", "every"),
    [("typical", 2.0, 3), ("hourly", 3.0, 1)],
)
def test_reference_case_marginal_cost_is_the_optimums_cost_of_one_more_kwh(
    name: str, cost_weight: float, every: int
) -> None:
    checked_marginals(reference_case(name, cost_weight), every)


@pytest.mark.parametrize(("resolution_minutes", "cost_weight", "every"), [(15, 2.0, 2), (30, 4.0, 1)])
def test_marginal_cost_is_in_currency_per_kwh_wherever_the_margin_lies(
    resolution_minutes: int, cost_weight: float, every: int
) -> None:
    request = site_day(resolution_minutes, cost_weight)
    compared = checked_marginals(request, every)
    buy = np.array(request["tariff"]["buy"])
    sell = np.array(request["tariff"]["sell"])
    reported = {t: m for t, (m, _) in compared.items()}
    # The margins the day was built to reach, so the comparison spans more than the buy price:
    # PV exported, PV curtailed (worth the curtail weight in currency), load above the import cap.
    assert any(m == pytest.approx(sell[t]) and sell[t] != buy[t] for t, m in reported.items())
    assert any(m == pytest.approx(-0.2 / cost_weight) for m in reported.values())
    assert any(m == pytest.approx(buy[t] + 1000.0 / cost_weight) for t, m in reported.items())


def test_marginal_cost_while_grid_charging_runs_at_full_rating_is_this_intervals_price() -> None:
    """Grid charging at its 50 kW rating with no PV: import sits at I_t (load plus full charging),
    and one more kWh of load is imported at this hour's price. The bound on import, binding beside
    the charge rating, once made the dual report the next hour's price (0.11 for 0.10)."""
    buy = [0.10, 0.11, 0.12, 0.13] + [0.30] * 14 + [0.50] * 4 + [0.30] * 2
    request = {
        "site_id": "GRIDCHARGE", "date": "2024-03-15", "timezone": "UTC", "resolution_minutes": 60,
        "load_kw": [20.0] * 24, "pv_kw": [0.0] * 24, "tariff": {"buy": buy, "sell": [0.0] * 24},
        "bess": {"capacity_kwh": 100, "max_charge_kw": 50, "max_discharge_kw": 50, "soc_min": 0.1, "soc_max": 0.9,
                 "soc_initial": 0.1, "soc_final_min": 0.1, "charge_efficiency": 0.95, "discharge_efficiency": 0.95},
        "weights": {"cost": 1.0, "curtail": 0.2, "violation": 1000.0},
    }
    result = solve_dispatch(request)
    assert result.points[0].batt_ch_kw == pytest.approx(50.0)  # at its rating
    compared = marginals_against_finite_differences(request, range(3))
    assert compared[0] == pytest.approx((0.10, 0.10), rel=1e-6)
    assert_marginals_match(compared, 3)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_marginal_cost_while_the_battery_empties_into_the_grid_is_that_hours_sell_price(solver: str) -> None:
    """A battery alone (no load, no PV) sells its whole charge at the one dear hour: export sits
    below the contract's cap, so one more kWh of load costs that hour's export, 50. The model's
    tighter export bound (what the battery can deliver in the hour), binding there too, once made
    HiGHS report 0.1."""
    sell = [0.1] * 22 + [50.0, 0.1]
    request = {
        "site_id": "EMPTIES", "date": "2024-06-10", "timezone": "UTC", "resolution_minutes": 60,
        "load_kw": [0.0] * 24, "pv_kw": [0.0] * 24, "tariff": {"buy": [0.5] * 24, "sell": sell},
        "bess": {"capacity_kwh": 100, "max_charge_kw": 100, "max_discharge_kw": 100, "soc_min": 0.0,
                 "soc_max": 1.0, "soc_initial": 1.0, "soc_final_min": 0.0},
    }
    result = solve_dispatch(request, solver=solver)
    dear = result.points[22]
    assert dear.grid_exp_kw == pytest.approx(95.0)  # 100 kWh delivered at 0.95
    assert dear.marginal_cost_per_kwh == pytest.approx(50.0, rel=1e-9)
