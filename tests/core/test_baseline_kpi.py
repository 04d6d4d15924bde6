"""baseline_cost is the day without a battery, costed like total_cost; savings are measured from it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dispatch_pipeline import solve_dispatch
from tests.conftest import CASE_NAMES, load_case


def independent_baseline_cost(request: dict) -> float:
    """The contract's definition, from the request alone: PV serves load; surplus is exported up
    to the export cap while sell >= 0, else curtailed; costed like total_cost, demand charge on
    the baseline's own peak import included."""
    dt = request["resolution_minutes"] / 60
    load = np.asarray(request["load_kw"], dtype=float)
    pv = np.asarray(request["pv_kw"], dtype=float)
    buy = np.asarray(request["tariff"]["buy"], dtype=float)
    sell = np.asarray(request["tariff"]["sell"], dtype=float)
    demand_charge = request["tariff"].get("demand_charge_per_kw", 0.0)
    limits = request.get("limits") or {}
    caps = [limits.get(k) for k in ("grid_export_max_kw", "transformer_max_kw") if limits.get(k) is not None]
    # The import cap is soft: a load above it is still served from the grid, and only reported.
    grid_import = np.clip(load - pv, 0.0, None)
    surplus = np.clip(pv - load, 0.0, None)
    exportable = np.minimum(surplus, min(caps)) if caps else surplus
    grid_export = np.where(sell >= 0, exportable, 0.0)
    energy = dt * (float(buy @ grid_import) - float(sell @ grid_export))
    return energy + demand_charge * float(grid_import.max(initial=0.0))


def hourly_day(**changes: object) -> dict:
    """A UTC day at 60 minutes: 20 kW of load, 50 kW of PV from 10:00 to 14:00 (30 kW of
    surplus), buy 0.30 and sell 0.10 all day; `changes` replace top-level fields."""
    pv = [0.0] * 24
    pv[10:14] = [50.0] * 4
    request = {
        "site_id": "BASELINE",
        "date": "2024-06-01",
        "resolution_minutes": 60,
        "load_kw": [20.0] * 24,
        "pv_kw": pv,
        "tariff": {"buy": [0.3] * 24, "sell": [0.1] * 24},
    }
    request.update(copy.deepcopy(changes))
    return request


def assert_baseline(request: dict, expected: float) -> None:
    assert independent_baseline_cost(request) == pytest.approx(expected, abs=1e-9)
    for use_milp in (True, False):
        kpis = solve_dispatch(request, use_milp=use_milp).kpis
        assert kpis.baseline_cost == pytest.approx(expected, rel=1e-9, abs=1e-9), use_milp
        assert kpis.savings_vs_baseline == pytest.approx(kpis.baseline_cost - kpis.total_cost, abs=1e-9)


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("use_milp", [True, False])
def test_reference_case_baseline_and_savings_follow_the_contract(name: str, use_milp: bool) -> None:
    request = load_case(name)["request"]
    kpis = solve_dispatch(request, use_milp=use_milp).kpis
    assert kpis.baseline_cost == pytest.approx(independent_baseline_cost(request), rel=1e-9, abs=1e-9)
    assert kpis.savings_vs_baseline == pytest.approx(kpis.baseline_cost - kpis.total_cost, abs=1e-9)


def test_baseline_imports_the_net_load_and_exports_the_whole_surplus() -> None:
    # 20 h x 20 kW x 0.30 imported; 4 h x 30 kW x 0.10 exported.
    assert_baseline(hourly_day(), 120.0 - 12.0)


def test_baseline_curtails_surplus_at_negative_sell_prices_instead_of_paying_to_export() -> None:
    sell = [0.1] * 24
    sell[10:12] = [-0.05, -0.05]
    # Exported only at 12:00 and 13:00; exporting at 10:00 and 11:00 would have cost 3.00 more.
    assert_baseline(hourly_day(tariff={"buy": [0.3] * 24, "sell": sell}), 120.0 - 6.0)


def test_baseline_exports_surplus_at_a_sell_price_of_zero_for_nothing() -> None:
    sell = [0.1] * 24
    sell[10:14] = [0.0] * 4
    assert_baseline(hourly_day(tariff={"buy": [0.3] * 24, "sell": sell}), 120.0)


def test_baseline_export_stops_at_the_grid_export_cap() -> None:
    # 10 of the 30 kW of surplus exported for 4 h; the rest is curtailed.
    assert_baseline(hourly_day(limits={"grid_export_max_kw": 10.0}), 120.0 - 4.0)


def test_baseline_export_stops_at_the_transformer_limit_but_import_does_not() -> None:
    load = [20.0] * 24
    load[19] = 70.0
    request = hourly_day(load_kw=load, limits={"grid_export_max_kw": 25.0, "transformer_max_kw": 15.0})
    # The transformer (15 kW) is the tighter export cap; the 70 kW evening load above it is still
    # served from the grid (a violation, never dropped), and paid for.
    imports = (19 * 20.0 + 70.0) * 0.3
    assert_baseline(request, imports - 15.0 * 4 * 0.1)


def test_baseline_pays_the_demand_charge_on_its_own_peak_import() -> None:
    load = [20.0] * 24
    load[18] = 60.0
    request = hourly_day(
        load_kw=load, tariff={"buy": [0.3] * 24, "sell": [0.1] * 24, "demand_charge_per_kw": 2.0}
    )
    # Without a battery to shave it, the 60 kW at 18:00 is the baseline's peak import.
    assert_baseline(request, (19 * 20.0 + 60.0) * 0.3 - 12.0 + 2.0 * 60.0)
    result = solve_dispatch(request)
    assert result.kpis.peak_grid_import_kw < 60.0
    assert result.kpis.savings_vs_baseline > 0


def test_baseline_at_15_minutes_with_an_export_cap_and_a_demand_charge() -> None:
    request = copy.deepcopy(load_case("typical")["request"])
    request["limits"] = {"grid_export_max_kw": 5.0, "transformer_max_kw": 50.0}
    request["tariff"]["demand_charge_per_kw"] = 0.8
    surplus = np.asarray(request["pv_kw"]) - np.asarray(request["load_kw"])
    assert surplus.max() > 5.0
    kpis = solve_dispatch(request, use_milp=False).kpis
    assert kpis.baseline_cost == pytest.approx(independent_baseline_cost(request), rel=1e-9)


def test_baseline_does_not_depend_on_the_battery() -> None:
    request = load_case("negative")["request"]
    expected = independent_baseline_cost(request)
    no_power = {**request["bess"], "max_charge_kw": 0.0, "max_discharge_kw": 0.0}
    bigger = {**request["bess"], "capacity_kwh": 400.0, "max_charge_kw": 150.0, "max_discharge_kw": 150.0}
    for bess in (request["bess"], no_power, bigger):
        kpis = solve_dispatch({**request, "bess": bess}).kpis
        assert kpis.baseline_cost == pytest.approx(expected, rel=1e-9), bess


def test_a_battery_that_cannot_move_power_saves_nothing() -> None:
    # With no negative sell price, the optimum without battery power is the baseline's own plan
    # (export pays more than curtailing, and the peak cannot be shaved), cap and demand charge too.
    load = [20.0] * 24
    load[18] = 60.0
    request = hourly_day(
        load_kw=load,
        tariff={"buy": [0.3] * 24, "sell": [0.1] * 24, "demand_charge_per_kw": 2.0},
        limits={"grid_export_max_kw": 25.0, "transformer_max_kw": 10.0},
        bess={"max_charge_kw": 0.0, "max_discharge_kw": 0.0},
    )
    kpis = solve_dispatch(request).kpis
    assert kpis.total_cost == pytest.approx(independent_baseline_cost(request), abs=1e-6)
    assert kpis.savings_vs_baseline == pytest.approx(0.0, abs=1e-6)
