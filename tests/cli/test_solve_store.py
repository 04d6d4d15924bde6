"""`dispatch-pipeline solve --store`: a registered site's stored values complete the request, as
POST /dispatch/run completes it, and the run is stored with source 'cli'."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.cli import main
from dispatch_pipeline.core import solve as solve_module
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import (
    get_run,
    open_database,
    read_registered_sites,
    save_forecast,
    upsert_site,
)
from dispatch_pipeline.storage.tables import dispatch_runs
from tests.postgres import tables

SPRING_FORWARD = dt.date(2025, 3, 30)  # 92 quarter-hours in Berlin
ISSUED_AT = dt.datetime(2025, 3, 29, 6, 0, tzinfo=dt.UTC)
SAMPLE_REQUEST = Path(__file__).resolve().parents[2] / "examples" / "sample_request.json"


def run_count(url: str) -> int:
    with open_database(url).connect() as connection:
        return connection.execute(select(func.count()).select_from(dispatch_runs)).scalar_one()


def solve_stored(request: dict, tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    status = main(["solve", str(path), "--store", "--database-url", url])
    captured = capsys.readouterr()
    if status == 0:  # stdout is the result's JSON; where it went is said on stderr
        run_id = json.loads(captured.out)["run_id"]
        assert f"dispatch-pipeline solve: run {run_id} stored in {url.split('://')[0]}" in captured.err
    return status, captured.out if status == 0 else captured.err


def test_a_registered_sites_request_is_completed_from_storage_and_stored(tmp_path, url, capsys) -> None:
    site = demo_site("BERLIN_DEPOT")
    engine = open_database(url)
    upsert_site(engine, site)
    forecast = demo_forecast(site, SPRING_FORWARD)
    save_forecast(engine, site.site_id, forecast, ISSUED_AT)
    # No timezone, battery, limits, weights, demand charge or PV: the site's day and stored values.
    request = {
        "site_id": site.site_id, "date": SPRING_FORWARD.isoformat(), "resolution_minutes": 15,
        "load_kw": forecast["load_kw"].tolist(),
        "tariff": {"buy": [0.30] * 28 + [0.45] * 64, "sell": [0.08] * 92},
    }

    status, output = solve_stored(request, tmp_path, url, capsys)

    assert status == 0, output
    answer = json.loads(output)
    stored = get_run(engine, answer["run_id"])
    assert stored is not None and stored.run.source == "cli"
    assert (stored.run.timezone, len(stored.points)) == ("Europe/Berlin", 92)
    completed = {
        **request, "timezone": site.timezone, "pv_kw": forecast["pv_kw"].tolist(),
        "bess": site.bess.model_dump(), "limits": site.limits.model_dump(), "weights": site.weights.model_dump(),
        "tariff": {**request["tariff"], "demand_charge_per_kw": site.tariff.demand_charge_per_kw},
    }
    assert site.tariff.demand_charge_per_kw > 0
    assert answer["objective_value"] == pytest.approx(solve_dispatch(completed).objective_value, rel=1e-6)
    assert [p.pv_set_kw + p.curtail_kw for p in stored.to_result().points] == pytest.approx(forecast["pv_kw"].tolist())
    # The PV read from storage, so its issue with it; the prices were the request's own.
    assert (stored.run.forecast_issued_at, stored.run.prices_issued_at) == (ISSUED_AT, None)
    assert dt.datetime.fromisoformat(answer["forecast_issued_at"]) == ISSUED_AT
    # And the registration of the site it was completed from.
    [registered] = read_registered_sites(engine, [site.site_id])[0]
    assert stored.run.site_updated_at == registered.updated_at
    reasons = [p["reason"] for p in answer["points"]]
    assert any("EUR/kWh" in reason for reason in reasons) and not any("MYR" in reason for reason in reasons)


def test_a_day_under_an_earlier_tariff_takes_that_tariffs_demand_charge(tmp_path, url, capsys) -> None:
    demo = demo_site("BERLIN_DEPOT")
    earlier = {"demand_charge_per_kw": 0.02, "default": {"buy": 0.2, "sell": 0.05}}
    site = Site.model_validate({
        **demo.model_dump(), "tariff_history": [{"until": (SPRING_FORWARD + dt.timedelta(days=1)).isoformat(), "tariff": earlier}],
    })
    engine = open_database(url)
    upsert_site(engine, site)
    forecast = demo_forecast(demo, SPRING_FORWARD)
    save_forecast(engine, site.site_id, forecast, ISSUED_AT)
    request = {
        "site_id": site.site_id, "date": SPRING_FORWARD.isoformat(), "resolution_minutes": 15,
        "load_kw": forecast["load_kw"].tolist(), "pv_kw": forecast["pv_kw"].tolist(),
        "tariff": {"buy": [0.30] * 28 + [0.45] * 64, "sell": [0.08] * 92},
    }

    status, output = solve_stored(request, tmp_path, url, capsys)

    assert status == 0, output
    kpis = json.loads(output)["kpis"]
    assert kpis["peak_grid_import_kw"] > 0 and site.tariff.demand_charge_per_kw != 0.02
    assert kpis["total_cost"] == pytest.approx(
        kpis["import_cost"] - kpis["export_revenue"] + 0.02 * kpis["peak_grid_import_kw"], abs=1e-6
    )


def test_an_unregistered_site_without_pv_is_refused_and_nothing_is_stored(tmp_path, url, capsys) -> None:
    request = json.loads(SAMPLE_REQUEST.read_text())
    request["site_id"] = "NOT_REGISTERED"
    del request["pv_kw"]
    before = run_count(url)

    status, message = solve_stored(request, tmp_path, url, capsys)

    assert status == 2
    assert "pv_kw: missing, and site 'NOT_REGISTERED' is not registered" in message
    assert run_count(url) == before


def test_a_full_request_of_an_unregistered_site_is_stored_as_sent(tmp_path, url, capsys) -> None:
    request = json.loads(SAMPLE_REQUEST.read_text())

    status, output = solve_stored(request, tmp_path, url, capsys)

    assert status == 0, output
    answer = json.loads(output)
    assert answer["objective_value"] == pytest.approx(solve_dispatch(request).objective_value, rel=1e-6)
    stored = get_run(open_database(url), answer["run_id"])
    assert (stored.run.source, stored.run.timezone) == ("cli", request["timezone"])


def test_a_site_id_differing_only_in_case_from_a_registered_one_is_refused(tmp_path, url, capsys) -> None:
    # A typo of a registered id must not be planned as a site of its own with default values.
    upsert_site(open_database(url), demo_site("KL_MALL"))
    request = {**json.loads(SAMPLE_REQUEST.read_text()), "site_id": "kl_mall"}

    status, output = solve_stored(request, tmp_path, url, capsys)

    assert status == 2
    assert "site_id: differs only in case from the registered site 'KL_MALL' (got 'kl_mall')" in output
    assert run_count(url) == 0


def test_a_rule_broken_against_the_sites_stored_value_says_whose_value_it_is(tmp_path, url, capsys) -> None:
    site = demo_site("KL_MALL")  # stores soc_max 0.95
    upsert_site(open_database(url), site)
    request = {**json.loads(SAMPLE_REQUEST.read_text()), "site_id": site.site_id, "bess": {"soc_min": 0.99}}
    before = run_count(url)

    status, message = solve_stored(request, tmp_path, url, capsys)

    assert status == 2
    assert (
        "bess.soc_max: must not be below soc_min (0.99) (got 0.95) "
        "(stored for site 'KL_MALL', as the request left it out: bess.soc_max)"
    ) in message
    assert run_count(url) == before


def test_one_refusal_names_the_requests_own_faults_and_those_against_its_site(tmp_path, url, capsys) -> None:
    site = demo_site("KL_MALL")  # stores soc_max 0.95
    upsert_site(open_database(url), site)
    sent = json.loads(SAMPLE_REQUEST.read_text())
    request = {**sent, "site_id": site.site_id, "bess": {"soc_min": 0.99}, "load_kw": [-5.0, *sent["load_kw"][1:]]}

    status, message = solve_stored(request, tmp_path, url, capsys)

    assert status == 2
    assert "load_kw[0]" in message
    assert "(stored for site 'KL_MALL', as the request left it out: bess.soc_max)" in message
    assert run_count(url) == 0


def test_a_currency_other_than_the_registered_sites_is_refused(tmp_path, url, capsys) -> None:
    site = demo_site("KL_MALL")
    upsert_site(open_database(url), site)
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**json.loads(SAMPLE_REQUEST.read_text()), "site_id": site.site_id}))
    before = run_count(url)

    status = main(["solve", str(path), "--store", "--currency", "EUR", "--database-url", url])

    assert status == 2
    assert "--currency EUR: site 'KL_MALL' is registered in MYR; leave --currency out to use it" in capsys.readouterr().err
    assert run_count(url) == before


def sample_request() -> dict:
    return json.loads(SAMPLE_REQUEST.read_text())


def without(request: dict, *fields: str) -> dict:
    return {name: value for name, value in request.items() if name not in fields}


# Requests `solve --store` refuses where no site is registered, as none is in a database without
# tables: for problems of the request's own, or found against no site. Each: the request, the
# options added, and what the refusal says.
REFUSED_WITHOUT_A_SITE = {
    "not-an-object": ([sample_request()], [], "request: must be a JSON object (got an array)"),
    "a-field-missing": (without(sample_request(), "tariff"), [], "tariff: field required"),
    "a-bad-value": (
        {**sample_request(), "load_kw": "lots"}, [], "load_kw: Input should be a valid list (got 'lots')",
    ),
    "a-bad-value-an-option-replaces": (
        {**sample_request(), "timeout_ms": "fast"}, ["--timeout-ms", "2000"],
        "timeout_ms: Input should be a valid integer (got 'fast')",
    ),
    "an-array-of-another-day": (
        {**sample_request(), "load_kw": sample_request()["load_kw"][:95]}, [],
        "load_kw: has 95 values, but 2024-03-15 in Asia/Kuala_Lumpur at 15-minute resolution has 96 intervals",
    ),
    # Judged once the database is found without tables: a site's timezone would make another day.
    "an-array-of-another-day-in-utc": (
        without({**sample_request(), "load_kw": sample_request()["load_kw"][:95]}, "timezone"), [],
        "load_kw: has 95 values, but 2024-03-15 in UTC at 15-minute resolution has 96 intervals",
    ),
    # Likewise: a site's soc_max would stand in for the contract's.
    "a-rule-broken-against-a-value-left-out": (
        {**sample_request(), "bess": {"soc_min": 0.99}}, [],
        "bess.soc_max: must not be below soc_min (0.99) (got 0.9)",
    ),
    "no-pv-of-a-site-not-registered": (
        without(sample_request(), "pv_kw"), [],
        "pv_kw: missing, and site 'DEMO' is not registered, so there is no stored PV forecast to use",
    ),
}


def solve_refused(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *database_url: str) -> None:
    """`solve --store` of the case's request: refused with exit status 2, saying why, nothing printed."""
    request, options, message = REFUSED_WITHOUT_A_SITE[case]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    assert main(["solve", str(path), "--store", *options, *database_url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(REFUSED_WITHOUT_A_SITE))
def test_a_refused_request_leaves_a_database_without_tables_as_it_was(tmp_path, url, capsys, case) -> None:
    solve_refused(case, tmp_path, capsys, "--database-url", url)
    assert tables(url) == []


@pytest.mark.parametrize("case", list(REFUSED_WITHOUT_A_SITE))
def test_a_refused_request_leaves_no_file_in_dagster_home(tmp_path, dagster_home, capsys, case) -> None:
    solve_refused(case, tmp_path, capsys)
    assert list(dagster_home.iterdir()) == []


def test_a_plan_that_cannot_be_stored_leaves_a_database_without_tables_as_it_was(
    tmp_path, url, capsys, monkeypatch
) -> None:
    # Finite inputs of absurd size could overflow a plan's sums; no known request does, so the plan is made to.
    def overflowing(*args, **kwargs):
        result = real_solve_problem(*args, **kwargs)
        first, *rest = result.points
        return result.model_copy(update={"points": [first.model_copy(update={"grid_imp_kw": math.inf}), *rest]})

    real_solve_problem = solve_module.solve_problem
    monkeypatch.setattr(solve_module, "solve_problem", overflowing)

    status, message = solve_stored(sample_request(), tmp_path, url, capsys)

    assert status == 2
    assert (
        "the inputs give a plan that cannot be stored: "
        "results[0] (site 'DEMO' on 2024-03-15).points[0].grid_imp_kw: must be a finite number (got inf)"
    ) in message
    assert tables(url) == []


def test_a_request_accepted_on_a_database_without_tables_creates_them_to_store_its_run(tmp_path, url, capsys) -> None:
    # No site is registered there, so --currency has none to disagree with.
    path = tmp_path / "request.json"
    path.write_text(SAMPLE_REQUEST.read_text())

    assert main(["solve", str(path), "--store", "--currency", "EUR", "--database-url", url]) == 0

    answer = json.loads(capsys.readouterr().out)
    assert get_run(open_database(url), answer["run_id"]).run.source == "cli"


def test_plain_solve_reads_and_writes_no_database(tmp_path, dagster_home, capsys, monkeypatch) -> None:
    database = tmp_path / "dispatch.sqlite"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    path = tmp_path / "request.json"
    path.write_text(SAMPLE_REQUEST.read_text())
    assert main(["solve", str(path)]) == 0
    path.write_text(json.dumps(without(sample_request(), "pv_kw")))
    assert main(["solve", str(path)]) == 2
    assert "pv_kw: missing; without --store, solve reads no database" in capsys.readouterr().err
    assert not database.exists()
    assert list(dagster_home.iterdir()) == []
