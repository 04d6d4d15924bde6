"""Every bad-input rule of the contract is rejected with the field and the value named."""

from __future__ import annotations

import copy
import datetime as dt
import math

import pytest

from dispatch_pipeline import RequestError, solve_dispatch
from dispatch_pipeline.core.problem import build_problem


def base_request() -> dict:
    return {
        "site_id": "DEMO",
        "date": "2024-03-15",
        "timezone": "Asia/Kuala_Lumpur",
        "resolution_minutes": 60,
        "load_kw": [80.0] * 24,
        "pv_kw": [0.0] * 6 + [50.0] * 12 + [0.0] * 6,
        "tariff": {"buy": [0.4] * 24, "sell": [0.2] * 24},
    }


def with_change(path: str, value) -> dict:
    request = copy.deepcopy(base_request())
    *parents, leaf = path.split(".")
    target = request
    for key in parents:
        target = target.setdefault(key, {})
    if isinstance(target, dict):
        target[leaf] = value
    return request


BAD_INPUTS = [
    # (change, field named in the message, value shown in the message)
    (("date", 0), "date", "0"),
    (("date", 20240315), "date", "20240315"),
    (("date", "0"), "date", "'0'"),  # digits: a Unix timestamp to pydantic
    (("date", "2024-02-30"), "date", "there is no such day"),
    (("bess.soc_min", 0.95), "bess.soc_max", "soc_min (0.95)"),  # above the default soc_max 0.9
    (("load_kw", [80.0] * 23), "load_kw", "23 values"),
    (("tariff.sell", [0.2] * 25), "tariff.sell", "25 values"),
    (("load_kw", [80.0] * 23 + [math.nan]), "load_kw[23]", "NaN"),
    (("load_kw", [80.0] * 23 + [math.inf]), "load_kw[23]", "inf"),
    (("tariff.buy", [0.4] * 23 + ["0.4"]), "tariff.buy[23]", "'0.4'"),
    (("load_kw", [80.0] * 23 + [-1.0]), "load_kw[23]", "-1.0"),
    (("pv_kw", [-0.5] + [0.0] * 23), "pv_kw[0]", "-0.5"),
    (("resolution_minutes", 20), "resolution_minutes", "20"),
    (("bess.capacity_kwh", 0.0), "bess.capacity_kwh", "0.0"),
    (("bess.max_charge_kw", -5.0), "bess.max_charge_kw", "-5.0"),
    (("bess.max_discharge_kw", -5.0), "bess.max_discharge_kw", "-5.0"),
    (("bess.soc_min", -0.1), "bess.soc_min", "-0.1"),
    (("bess.soc_max", 1.2), "bess.soc_max", "1.2"),
    (("bess.soc_initial", 1.5), "bess.soc_initial", "1.5"),
    (("bess.soc_final_min", 0.95), "bess.soc_final_min", "0.95"),
    (("bess.charge_efficiency", 0.0), "bess.charge_efficiency", "0.0"),
    (("bess.discharge_efficiency", 1.01), "bess.discharge_efficiency", "1.01"),
    (("limits.grid_import_max_kw", -1.0), "limits.grid_import_max_kw", "-1.0"),
    (("limits.transformer_max_kw", -1.0), "limits.transformer_max_kw", "-1.0"),
    (("weights.curtail", -0.2), "weights.curtail", "-0.2"),
    # No cost left for the solver to see, and dual / weights.cost overflows.
    (("weights.cost", 5e-324), "weights.cost", "5e-324"),
    (("weights.violation", 1e-10), "weights.violation", "1e-10"),
    # Any energy in it would be an infinite state of charge.
    (("bess.capacity_kwh", 5e-324), "bess.capacity_kwh", "5e-324"),
    (("bess.cycle_cost_per_kwh", -0.01), "bess.cycle_cost_per_kwh", "-0.01"),
    (("tariff.demand_charge_per_kw", -1.0), "tariff.demand_charge_per_kw", "-1.0"),
    (("site_id", "bad site!"), "site_id", "'bad site!'"),
    (("site_id", "x" * 65), "site_id", "xxxx"),
    # The directory a site's files are kept in: a plan of "." could never be a registered site's.
    (("site_id", ".."), "site_id", "'..'"),
    (("timeout_ms", 99), "timeout_ms", "99"),
    (("timeout_ms", 600_001), "timeout_ms", "600001"),
    (("surprise", 1), "surprise", "1"),
    (("bess.surprise", 1), "bess.surprise", "1"),
    (("timezone", "Mars/Olympus"), "timezone", "Mars/Olympus"),
    (("timezone", "Asia"), "timezone", "Asia"),  # a directory of the zone database
    (("timezone", "A" * 5000), "timezone", "AAAA"),  # longer than a file name may be
    (("date", "9999-12-31"), "date", "9999-12-31"),
    (("date", "0001-01-01"), "date", "0001-01-01"),
    # Host aliases, not IANA zones: "localtime" is whatever the machine is set to.
    (("timezone", "localtime"), "timezone", "localtime"),
    (("timezone", "posixrules"), "timezone", "posixrules"),
    (("timezone", "right/Asia/Kuala_Lumpur"), "timezone", "right/Asia"),
    # Finite, yet a day of them (or their cost) overflows to infinity.
    (("load_kw", [80.0] * 23 + [1e308]), "load_kw[23]", "1e+308"),
    (("tariff.buy", [0.4] * 23 + [-1e308]), "tariff.buy[23]", "-1e+308"),
    (("bess.capacity_kwh", 1e308), "bess.capacity_kwh", "1e+308"),
    (("tariff.demand_charge_per_kw", 1e308), "tariff.demand_charge_per_kw", "1e+308"),
    # An object where a list or a number belongs is the mistake itself.
    (("load_kw", {"kw": 80.0}), "load_kw", "{'kw': 80.0}"),
    (("limits.grid_import_max_kw", {"kw": 30}), "limits.grid_import_max_kw", "{'kw': 30}"),
]


@pytest.mark.parametrize(("change", "field", "shown"), BAD_INPUTS, ids=[f"{c[0]}={c[1]!r:.20}" for c, _, _ in BAD_INPUTS])
def test_bad_input_names_field_and_value(change, field, shown) -> None:
    with pytest.raises(RequestError) as caught:
        build_problem(with_change(*change))
    problems = caught.value.problems
    assert any(p.startswith(f"{field}: ") and shown in p for p in problems), problems


def test_soc_min_above_soc_max_is_rejected() -> None:
    request = base_request() | {"bess": {"soc_min": 0.8, "soc_max": 0.3}}
    with pytest.raises(RequestError, match=r"bess.soc_max: must not be below soc_min \(0.8\) \(got 0.3\)"):
        build_problem(request)


def test_wrong_length_for_dst_day_names_the_day() -> None:
    request = base_request() | {"date": "2024-03-31", "timezone": "Europe/Berlin", "resolution_minutes": 15}
    request |= {"load_kw": [1.0] * 96, "pv_kw": [0.0] * 96, "tariff": {"buy": [0.1] * 96, "sell": [0.0] * 96}}
    with pytest.raises(RequestError, match=r"load_kw: has 96 values, but 2024-03-31 in Europe/Berlin .* has 92 intervals"):
        build_problem(request)


def test_a_date_the_zone_skipped_is_refused_by_name() -> None:
    # Samoa crossed the date line on 2011-12-30: that local day never happened.
    request = base_request() | {"date": "2011-12-30", "timezone": "Pacific/Apia", "resolution_minutes": 15}
    request |= {"load_kw": [], "pv_kw": [], "tariff": {"buy": [], "sell": []}}
    with pytest.raises(RequestError, match=r"date: 2011-12-30 never happened in Pacific/Apia"):
        build_problem(request)


def test_missing_pv_without_stored_forecast_is_an_error() -> None:
    request = base_request()
    del request["pv_kw"]
    with pytest.raises(RequestError, match=r"pv_kw: missing, and no stored PV forecast for site 'DEMO'"):
        build_problem(request)


def test_negative_prices_are_accepted() -> None:
    # A midday dip below zero, as on sunny days in spot-priced markets.
    request = with_change("tariff.buy", [0.3] * 11 + [-0.02] * 3 + [0.3] * 10)
    request["tariff"]["sell"] = [0.0] * 11 + [-0.05] * 3 + [0.0] * 10
    result = solve_dispatch(request, timeout_ms=30_000)
    assert (result.status, result.solver) == ("ok", "milp")
    # Paid to import: the battery fills up during the dip, at its full rating first.
    assert result.points[11].batt_ch_kw == pytest.approx(50.0)
    assert result.points[13].soc == pytest.approx(0.9)
    assert result.points[11].reason_code == "charge_negative_price"


def test_every_problem_is_listed_at_once() -> None:
    request = with_change("bess.capacity_kwh", -1.0) | {"timeout_ms": 5}
    with pytest.raises(RequestError) as caught:
        build_problem(request)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("bess.capacity_kwh: ") and problems[0].endswith("(got -1.0)")
    assert problems[1].startswith("timeout_ms: ") and problems[1].endswith("(got 5)")


def test_arrays_of_the_wrong_length_are_listed_with_the_other_problems() -> None:
    # One answer names everything: a caller fixing the battery must not then learn of the arrays.
    request = with_change("bess.capacity_kwh", -1.0)
    request["load_kw"] = request["load_kw"][:-1]
    request["tariff"]["sell"] = request["tariff"]["sell"] + [0.1]
    with pytest.raises(RequestError) as caught:
        solve_dispatch(request, timeout_ms=5000)
    problems = caught.value.problems
    assert problems[0].startswith("bess.capacity_kwh: ")
    day = f"{request['date']} in {request['timezone']} at 60-minute resolution has 24 intervals"
    assert problems[1:] == [f"load_kw: has 23 values, but {day}", f"tariff.sell: has 25 values, but {day}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *(("timezone", value) for value in ("Mars/Olympus", "", 0, False)),
        *(("resolution_minutes", value) for value in (60.0, 7, "60")),
    ],
)
def test_lengths_are_not_guessed_when_the_day_itself_is_in_doubt(field, value) -> None:
    request = with_change(field, value)
    request["load_kw"] = request["load_kw"][:-1]
    with pytest.raises(RequestError) as caught:
        build_problem(request)
    assert [p.split(":")[0] for p in caught.value.problems] == [field]


@pytest.mark.parametrize(("field", "value"), [("resolution_minutes", 60), ("date", dt.date(2024, 3, 15))])
def test_lengths_are_checked_for_every_form_of_the_day_the_model_accepts(field, value) -> None:
    request = with_change(field, value)
    del request["tariff"]
    request["load_kw"] = request["load_kw"][:-1]
    with pytest.raises(RequestError) as caught:
        build_problem(request)
    assert [p.split(":")[0] for p in caught.value.problems] == ["tariff", "load_kw"]

