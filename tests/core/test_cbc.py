"""CBC, the independent second opinion, on requests the reference cases do not exercise."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import pytest

from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.milp import solve_milp
from dispatch_pipeline.core.problem import build_problem
from tests.conftest import load_case, load_regression


def _typical_with_battery(**bess: float) -> dict:
    request = load_case("typical")["request"]
    return request | {"bess": request["bess"] | bess}


def _flat_load_day_with_battery(**bess: float) -> dict:
    """An hourly day of 30 kW load and a midday PV peak of 60 kW under a three-band tariff."""
    return {
        "site_id": "FLAT", "date": "2024-03-15", "resolution_minutes": 60,
        "load_kw": [30.0] * 24, "pv_kw": [0.0] * 7 + [15.0, 30.0, 42.0, 52.0, 58.0, 60.0, 58.0, 52.0, 42.0, 30.0, 15.0] + [0.0] * 6,
        "tariff": {"buy": [0.15] * 7 + [0.3] * 10 + [0.5] * 5 + [0.3] * 2, "sell": [0.1] * 24},
        "bess": bess,
    }


@pytest.mark.parametrize(
    "request_",
    [
        # Zero ratings leave the charge switch out of every constraint, so CBC's LP file lacks it.
        pytest.param(_typical_with_battery(max_charge_kw=0, max_discharge_kw=0), id="zero-rated battery"),
        # At GW ratings CBC's default integrality tolerance lets a closed switch pass real flows.
        pytest.param(
            _flat_load_day_with_battery(capacity_kwh=1e9, max_charge_kw=1e9, max_discharge_kw=1e9),
            id="GW battery",
        ),
    ],
)
def test_cbc_reaches_the_highs_optimum(request_: dict) -> None:
    problem = build_problem(request_)
    highs = solve_milp(problem, "highs", time.monotonic() + 60)
    cbc = solve_milp(problem, "cbc", time.monotonic() + 60)
    assert cbc.termination == "optimal"
    assert cbc.objective_value == pytest.approx(highs.objective_value, rel=1e-4, abs=1e-2)
    assert find_breaches(problem, cbc.schedule) == []


def test_cbc_finds_the_optimum_its_preprocessing_calls_infeasible() -> None:
    problem = build_problem(load_regression("cbc_preprocessing_calls_a_feasible_model_infeasible"))
    cbc = solve_milp(problem, "cbc", time.monotonic() + 60)
    assert cbc.termination == "optimal"
    assert cbc.objective_value == pytest.approx(27.983066, rel=1e-6)
    assert find_breaches(problem, cbc.schedule) == []


def test_cbc_reports_the_gap_its_search_proved_not_the_root_lp_gap() -> None:
    problem = build_problem(load_regression("cbc_root_cuts_close_the_gap"))
    cbc = solve_milp(problem, "cbc", time.monotonic() + 120)
    assert cbc.termination == "optimal"
    # The root LP's bound alone leaves a gap of about 5 %; CBC stopped at its 1e-4 target.
    assert 0.0 <= cbc.mip_gap <= 1e-4
    assert find_breaches(problem, cbc.schedule) == []


def test_a_solve_removes_what_killed_workers_left_and_leaves_nothing_itself(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])  # a process that has ended: its pid is gone
    gone.wait()
    abandoned = tmp_path / f"dispatch-cbc-{gone.pid}-x"
    abandoned.mkdir()
    (abandoned / "tmp1.pyomo.lp").write_text("an LP file of a worker killed at its deadline")
    in_use = tmp_path / f"dispatch-cbc-{os.getpid()}-y"  # a live process's solve
    in_use.mkdir()

    problem = build_problem(_typical_with_battery())
    solve_milp(problem, "cbc", time.monotonic() + 60)
    assert sorted(path.name for path in tmp_path.iterdir()) == [in_use.name]


def test_the_gap_is_the_returned_plans_not_cbcs_own_best() -> None:
    # The LP over CBC's binaries (or the rule-based plan) may cost less than CBC's best schedule:
    # the reported gap is the plan's, against the bound CBC proved.
    from types import SimpleNamespace

    from dispatch_pipeline.core.milp.cbc import _achieved_gap

    results = SimpleNamespace(problem=[SimpleNamespace(lower_bound=90.0, upper_bound=110.0)])
    assert _achieved_gap(results, "", 100.0) == pytest.approx(0.1)
    assert _achieved_gap(results, "Lower bound:                    95\n", 100.0) == pytest.approx(0.05)
    assert _achieved_gap(results, "", 89.0) == 0.0
