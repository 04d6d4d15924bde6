"""POST /dispatch/run, GET /dispatch/latest, GET /dispatch/runs, GET /dispatch/runs/{id}, GET /healthz."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import urlencode

import anyio
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dispatch_pipeline.core.request import Weights
from dispatch_pipeline.core.site import Site, SiteBattery
from dispatch_pipeline.core.solve import solve_dispatch
from dispatch_pipeline.core.tariffs import Prices, TouTariff
from dispatch_pipeline.storage import (
    get_run,
    read_registered_sites,
    save_forecast,
    save_runs,
    upsert_site,
)
from tests.api.conftest import UNREACHABLE_DATABASE_URL
from tests.api.helpers import count_rows

pytestmark = pytest.mark.postgres


def test_quick_start_request_round_trips(client, engine, sample_request):
    before = count_rows(engine)
    response = client.post("/dispatch/run", json=sample_request)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {
        "run_id", "site_id", "date", "timezone", "status", "fallback_used", "fallback_reason", "solver",
        "objective_value", "kpis",
    }
    assert (answer["site_id"], answer["date"], answer["timezone"]) == (
        sample_request["site_id"], sample_request["date"], sample_request["timezone"]
    )
    assert (answer["status"], answer["solver"], answer["fallback_used"], answer["fallback_reason"]) == ("ok", "milp", False, None)
    # The optimum of the same request solved in this process, without the API or the database.
    assert answer["objective_value"] == pytest.approx(solve_dispatch(sample_request).objective_value, rel=1e-6)
    # Nothing curtailed or violated on this day: its cost is the whole objective.
    assert answer["kpis"]["total_cost"] == pytest.approx(answer["objective_value"], rel=1e-9)
    after = count_rows(engine)
    assert after["dispatch_runs"] == before["dispatch_runs"] + 1
    assert after["dispatch_kpis"] == before["dispatch_kpis"] + 1
    assert after["dispatch_schedule"] == before["dispatch_schedule"] + 96
    assert after["dispatch_explanations"] == before["dispatch_explanations"] + 96

    detail = client.get(f"/dispatch/runs/{answer['run_id']}").json()
    assert detail["source"] == "api"
    assert detail["kpis"] == answer["kpis"]
    assert detail["objective_value"] == answer["objective_value"]
    assert detail["timeout_ms"] == 3000 and detail["objective_config"] == Weights().model_dump()
    assert len(detail["points"]) == 96


def test_latest_returns_what_was_stored(client, sample_request):
    posted = client.post("/dispatch/run", json=sample_request).json()

    latest = client.get("/dispatch/latest", params={"site_id": "DEMO", "date": "2024-03-15"})

    assert latest.status_code == 200
    body = latest.json()
    assert body["run_id"] == posted["run_id"]
    assert (body["site_id"], body["date"], body["resolution_minutes"]) == ("DEMO", "2024-03-15", 15)
    assert (body["status"], body["solver"]) == (posted["status"], posted["solver"])
    points = body["points"]
    assert len(points) == 96
    assert points[0]["ts"] == "2024-03-14T16:00:00Z"  # local midnight in Kuala Lumpur (UTC+8)
    assert set(points[0]) == {
        "ts", "pv_set_kw", "batt_ch_kw", "batt_dis_kw", "grid_imp_kw", "grid_exp_kw",
        "curtail_kw", "soc", "reason", "reason_code", "binding", "marginal_cost_per_kwh",
    }
    assert all(p["reason"] and p["reason_code"] for p in points)
    assert all(p["marginal_cost_per_kwh"] is not None for p in points)  # a MILP run
    # The stored plan is the one the KPIs were computed from.
    dt_hours = 0.25
    imported = sum(p["grid_imp_kw"] for p in points) * dt_hours
    assert imported == pytest.approx(posted["kpis"]["total_import_kwh"], abs=1e-3)
    assert points[-1]["soc"] == pytest.approx(posted["kpis"]["final_soc"], abs=1e-6)


def test_runs_are_added_and_latest_is_the_newest(client, sample_request):
    first = client.post("/dispatch/run", json=sample_request).json()["run_id"]
    second = client.post("/dispatch/run", json={**sample_request, "use_milp": False}).json()

    assert second["run_id"] != first
    assert (second["status"], second["solver"]) == ("ok", "rule_based")
    latest = client.get("/dispatch/latest", params={"site_id": "DEMO"}).json()
    assert latest["run_id"] == second["run_id"]
    assert client.get(f"/dispatch/runs/{first}").status_code == 200


def test_latest_404_names_site_and_date(client):
    response = client.get("/dispatch/latest", params={"site_id": "NO_SUCH_SITE", "date": "2024-01-02"})

    assert response.status_code == 404
    assert response.json()["message"] == (
        "no dispatch run stored for site 'NO_SUCH_SITE' on 2024-01-02 (it has none on any day: is the site_id right?)"
    )


@pytest.mark.parametrize(
    ("date", "says"),
    [
        ("15-03-2025", "expected a calendar date YYYY-MM-DD"),
        ("2025-02-30", "expected a calendar date YYYY-MM-DD; there is no such day"),
        ("20250315", "expected a calendar date YYYY-MM-DD"),
        ("0", "expected a calendar date YYYY-MM-DD"),
    ],
)
def test_latest_with_a_date_not_in_the_calendar_format_says_which(client, date, says):
    response = client.get("/dispatch/latest", params={"site_id": "DEMO", "date": date})

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["msg"], problem["input"]) == (["query", "date"], says, date)
    assert says in response.json()["message"] and date in response.json()["message"]


def test_an_impossible_date_is_said_alike_in_a_query_and_in_a_request(client, sample_request):
    query = client.get("/dispatch/latest", params={"site_id": "DEMO", "date": "2025-02-30"}).json()
    body = client.post("/dispatch/run", json={**sample_request, "date": "2025-02-30"}).json()
    assert query["detail"][0]["msg"] == body["detail"][0]["msg"]


@pytest.mark.parametrize("date", ["0001-01-01", "9999-12-31"])
def test_latest_of_a_date_outside_the_supported_range_is_refused_as_the_post_refuses_it(client, date):
    response = client.get("/dispatch/latest", params={"site_id": "DEMO", "date": date})

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["msg"], problem["input"]) == (
        ["query", "date"], "outside the supported range 1678-01-01 to 2261-12-31", date
    )


def test_latest_404_of_a_day_not_planned_does_not_doubt_the_site(client, sample_request):
    assert client.post("/dispatch/run", json={**sample_request, "site_id": "PLANNED_ONCE"}).status_code == 200
    response = client.get("/dispatch/latest", params={"site_id": "PLANNED_ONCE", "date": "2024-01-02"})
    assert response.status_code == 404
    assert response.json()["message"] == (
        "no dispatch run stored for site 'PLANNED_ONCE' on 2024-01-02 (its most recently stored plan is of 2024-03-15)"
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"site_id": "bad site"}, "site_id"),
        ({"site_id": ".."}, "site_id"),  # matches the pattern, but names no site (as POST says)
        ({"site_id": "DEMO", "date": "2024-13-01"}, "date"),
        ({"site_id": "DEMO", "date": "2024-02-30"}, "date"),
        ({"site_id": "DEMO", "date": "0"}, "date"),  # not a Unix timestamp
        ({}, "site_id"),
    ],
)
def test_latest_rejects_bad_query(client, params, field):
    response = client.get("/dispatch/latest", params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]
    if field in params:
        assert params[field] in response.json()["message"]


def test_run_by_id_404_and_malformed_uuid(client):
    missing = uuid.uuid4()
    assert client.get(f"/dispatch/runs/{missing}").status_code == 404
    assert str(missing) in client.get(f"/dispatch/runs/{missing}").json()["message"]
    malformed = client.get("/dispatch/runs/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "run_id"]


RUN_SUMMARY_FIELDS = {
    "run_id", "created_at", "source", "status", "solver", "milp_solver", "fallback_reason", "objective_value",
    "total_cost", "forecast_issued_at", "prices_issued_at",
}


def _unique_site(prefix: str) -> str:
    """A site no other test stores runs of: the session's database is shared."""
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


def test_the_runs_of_a_day_are_listed_newest_first_with_their_summaries(client, engine, sample_request):
    site_id = _unique_site("LISTED")
    request = {**sample_request, "site_id": site_id}
    milp = client.post("/dispatch/run", json=request).json()
    rule_based = client.post("/dispatch/run", json={**request, "use_milp": False}).json()
    issued = dt.datetime(2024, 3, 14, 6, tzinfo=dt.UTC)
    backfilled = solve_dispatch(request).model_copy(update={"run_id": uuid.uuid4(), "forecast_issued_at": issued})
    save_runs(engine, [backfilled], source="dagster", dagster_run_id="backfill-run")
    # Not of the day asked for: another day of the site, the same day of another site.
    client.post("/dispatch/run", json={**request, "date": "2024-03-16"}).raise_for_status()
    client.post("/dispatch/run", json={**request, "site_id": _unique_site("NEIGHBOUR")}).raise_for_status()

    response = client.get("/dispatch/runs", params={"site_id": site_id, "date": "2024-03-15"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["site_id"], body["date"], body["more"]) == (site_id, "2024-03-15", False)
    runs = body["runs"]
    assert [run["run_id"] for run in runs] == [str(backfilled.run_id), rule_based["run_id"], milp["run_id"]]
    assert all(set(run) == RUN_SUMMARY_FIELDS for run in runs)  # no points
    assert [run["source"] for run in runs] == ["dagster", "api", "api"]
    assert [(run["status"], run["solver"], run["milp_solver"], run["fallback_reason"]) for run in runs] == [
        ("ok", "milp", "highs", None), ("ok", "rule_based", None, None), ("ok", "milp", "highs", None),
    ]
    assert [run["forecast_issued_at"] for run in runs] == ["2024-03-14T06:00:00Z", None, None]
    assert all(run["prices_issued_at"] is None for run in runs)
    created = [dt.datetime.fromisoformat(run["created_at"]) for run in runs]
    assert created == sorted(created, reverse=True)
    for run in runs:
        stored = get_run(engine, run["run_id"])
        assert run["total_cost"] == stored.kpis.total_cost
        assert run["objective_value"] == stored.run.objective_value
        assert run["created_at"] == client.get(f"/dispatch/runs/{run['run_id']}").json()["created_at"]
    assert runs[0]["run_id"] == client.get(
        "/dispatch/latest", params={"site_id": site_id, "date": "2024-03-15"}
    ).json()["run_id"]


def test_limit_bounds_the_list_and_more_says_older_runs_are_left_out(client, sample_request):
    site_id = _unique_site("LIMITED")
    posted = [client.post("/dispatch/run", json={**sample_request, "site_id": site_id}).json()["run_id"] for _ in range(3)]
    newest_first = posted[::-1]

    def listed(limit: int) -> dict:
        response = client.get("/dispatch/runs", params={"site_id": site_id, "date": "2024-03-15", "limit": limit})
        assert response.status_code == 200, response.text
        return response.json()

    assert [([run["run_id"] for run in body["runs"]], body["more"]) for body in (listed(1), listed(2), listed(3), listed(1000))] == [
        (newest_first[:1], True), (newest_first[:2], True), (newest_first, False), (newest_first, False),
    ]


@pytest.mark.parametrize(("limit", "listed"), [("01", 1), ("0001000", 2), ("0" * 5000 + "1", 1)])
def test_a_limit_with_leading_zeros_is_read_as_its_number(client, sample_request, limit, listed):
    site_id = _unique_site("ZEROS")
    for _ in range(2):
        client.post("/dispatch/run", json={**sample_request, "site_id": site_id})

    response = client.get("/dispatch/runs", params={"site_id": site_id, "date": "2024-03-15", "limit": limit})

    assert response.status_code == 200, response.text
    assert len(response.json()["runs"]) == listed


def test_a_limit_of_zeros_only_is_out_of_range(client):
    response = client.get("/dispatch/runs", params={"site_id": "DEMO", "date": "2024-03-15", "limit": "0000"})

    assert response.status_code == 422
    assert response.json()["message"] == 'limit: must be from 1 to 1000 (got "0000")'


def _page(client, site_id: str, limit: int, before: str | None = None, date: str = "2024-03-15") -> dict:
    params = {"site_id": site_id, "date": date, "limit": limit, **({"before": before} if before else {})}
    response = client.get("/dispatch/runs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _stored_batch(engine, sample_request, site_id: str, count: int, date: str = "2024-03-15") -> list[str]:
    """`count` runs of the site-day stored in one batch, their run_ids newest first."""
    planned = solve_dispatch({**sample_request, "site_id": site_id, "date": date})
    results = [planned.model_copy(update={"run_id": uuid.uuid4()}) for _ in range(count)]
    save_runs(engine, results, source="cli")
    return [str(result.run_id) for result in results[::-1]]  # a later entry of a batch is newer


def test_the_runs_of_a_day_are_paged_with_before_and_next_before(client, engine, sample_request):
    site_id = _unique_site("PAGED")
    newest_first = _stored_batch(engine, sample_request, site_id, 5)

    first = _page(client, site_id, 2)
    second = _page(client, site_id, 2, first["next_before"])
    third = _page(client, site_id, 2, second["next_before"])

    pages = [first, second, third]
    assert [[run["run_id"] for run in page["runs"]] for page in pages] == [
        newest_first[0:2], newest_first[2:4], newest_first[4:5],
    ]
    assert [(page["more"], page["next_before"]) for page in pages] == [
        (True, newest_first[1]), (True, newest_first[3]), (False, None),
    ]
    assert all((page["site_id"], page["date"]) == (site_id, "2024-03-15") for page in pages)
    # The page after the last run is empty; a page that holds the rest says there is no more.
    assert _page(client, site_id, 2, newest_first[4]) == {
        "site_id": site_id, "date": "2024-03-15", "runs": [], "more": False, "next_before": None,
    }
    rest = _page(client, site_id, 3, newest_first[1])
    assert ([run["run_id"] for run in rest["runs"]], rest["more"], rest["next_before"]) == (
        newest_first[2:], False, None,
    )
    whole = _page(client, site_id, 5)
    assert (len(whole["runs"]), whole["more"], whole["next_before"]) == (5, False, None)
    # HEAD pages as GET does.
    params = {"site_id": site_id, "date": "2024-03-15", "limit": 2, "before": first["next_before"]}
    head = client.head("/dispatch/runs", params=params)
    assert (head.status_code, head.headers["content-length"]) == (
        200, str(len(client.get("/dispatch/runs", params=params).content)),
    )


def test_runs_stored_at_the_same_instant_are_paged_without_loss_or_repeats(client, engine, sample_request):
    from dispatch_pipeline.storage.tables import dispatch_runs

    site_id = _unique_site("TIED")
    newest_first = _stored_batch(engine, sample_request, site_id, 7)
    # A batch's runs get distinct ticks: ties (runs of other processes stored at one instant) are
    # made by hand, all but the newest and the oldest.
    tie = dt.datetime(2024, 3, 14, 12, 0, 0, 500000, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            dispatch_runs.update()
            .where(dispatch_runs.c.id.in_([uuid.UUID(run_id) for run_id in newest_first[1:6]]))
            .values(created_at=tie)
        )
        connection.execute(
            dispatch_runs.update().where(dispatch_runs.c.id == uuid.UUID(newest_first[6]))
            .values(created_at=tie - dt.timedelta(microseconds=1))
        )
    expected = [newest_first[0], *sorted(newest_first[1:6], key=uuid.UUID, reverse=True), newest_first[6]]

    for limit in (1, 2, 3):
        paged, before, more = [], None, True
        while more:
            page = _page(client, site_id, limit, before)
            paged += [run["run_id"] for run in page["runs"]]
            more, before = page["more"], page["next_before"]
            assert (before is None) == (not more)
        assert paged == expected, limit
    assert [run["run_id"] for run in _page(client, site_id, 1000)["runs"]] == expected


def test_a_before_of_another_day_or_site_or_of_no_run_is_refused_naming_it(client, engine, sample_request):
    site_id, neighbour = _unique_site("BEFORE"), _unique_site("BEFORE_NEIGHBOUR")
    [own] = _stored_batch(engine, sample_request, site_id, 1)
    [other_day] = _stored_batch(engine, sample_request, site_id, 1, date="2024-03-16")
    [other_site] = _stored_batch(engine, sample_request, neighbour, 1)
    unknown = str(uuid.uuid4())
    expected = f"must be a run of site {site_id!r} on 2024-03-15, as next_before names; "

    for before, why in [
        (other_day, f"it is a run of site {site_id!r} on 2024-03-16"),
        (other_site, f"it is a run of site {neighbour!r} on 2024-03-15"),
        (unknown, "no stored run has this id"),
        (unknown.upper(), "no stored run has this id"),  # echoed as sent
    ]:
        response = client.get("/dispatch/runs", params={"site_id": site_id, "date": "2024-03-15", "before": before})

        assert response.status_code == 422, response.text
        assert response.json()["detail"] == [
            {"loc": ["query", "before"], "msg": expected + why, "type": "value_error", "input": before}
        ]
        assert response.json()["message"] == f'before: {expected}{why} (got "{before}")'
    assert _page(client, site_id, 5, own)["runs"] == []


def test_a_day_without_runs_is_an_empty_list_without_hints(client, sample_request):
    site_id = _unique_site("PLANNED_ELSEWHEN")
    client.post("/dispatch/run", json={**sample_request, "site_id": site_id}).raise_for_status()

    for params in ({"site_id": site_id, "date": "2024-03-16"}, {"site_id": "NO_SUCH_SITE", "date": "2024-03-15"}):
        response = client.get("/dispatch/runs", params=params)

        assert response.status_code == 200, response.text
        assert response.json() == {**params, "runs": [], "more": False, "next_before": None}


@pytest.mark.parametrize(
    ("params", "field", "msg"),
    [
        ({"site_id": "DEMO"}, "date", "Field required"),
        ({"date": "2024-03-15"}, "site_id", "Field required"),
        ({"site_id": "bad site", "date": "2024-03-15"}, "site_id", None),
        ({"site_id": "DEMO", "date": "2024-02-30"}, "date", "expected a calendar date YYYY-MM-DD; there is no such day"),
        ({"site_id": "DEMO", "date": "0"}, "date", "expected a calendar date YYYY-MM-DD"),
        ({"site_id": "DEMO", "date": "9999-12-31"}, "date", "outside the supported range 1678-01-01 to 2261-12-31"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": "0"}, "limit", "must be from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": "1001"}, "limit", "must be from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": "-1"}, "limit", "must be a whole number from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": "1.0"}, "limit", "must be a whole number from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": "ten"}, "limit", "must be a whole number from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "limit": ""}, "limit", "must be a whole number from 1 to 1000"),
        ({"site_id": "DEMO", "date": "2024-03-15", "before": "not-a-uuid"}, "before", None),
        ({"site_id": "DEMO", "date": "2024-03-15", "before": "1234"}, "before", None),
        ({"site_id": "DEMO", "date": "2024-03-15", "before": ""}, "before", None),
        ({"site_id": "DEMO", "date": "2024-03-15", "dat": "2024-03-16"}, "dat",
         "unknown query parameter (this endpoint takes site_id, date, limit, before)"),
    ],
)
def test_the_run_list_refuses_a_bad_query_naming_the_parameter_and_value(client, params, field, msg):
    response = client.get("/dispatch/runs", params=params)

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", field]
    if msg is not None:
        assert problem["msg"] == msg
    message = response.json()["message"]
    assert message.startswith(f"{field}: ")
    if field in params and field != "dat":  # an unknown parameter is named, its value not needed
        assert problem["input"] == params[field]
        assert message.endswith(f'(got "{params[field]}")')


def test_a_limit_given_twice_is_refused(client):
    response = client.get("/dispatch/runs?site_id=DEMO&date=2024-03-15&limit=5&limit=500")

    assert response.status_code == 422
    assert response.json()["message"] == "limit: given 2 times ('5', '500'); give it once"


def test_the_run_list_with_a_trailing_slash_is_redirected_with_its_query(client, sample_request):
    site_id = _unique_site("SLASHED")
    run_id = client.post("/dispatch/run", json={**sample_request, "site_id": site_id}).json()["run_id"]
    query = f"site_id={site_id}&date=2024-03-15&limit=5"

    redirect = client.get(f"/dispatch/runs/?{query}", follow_redirects=False)

    # As every endpoint answers a trailing slash: no run id is empty, so it is no run's path.
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"http://testserver/dispatch/runs?{query}"
    followed = client.get(f"/dispatch/runs/?{query}")
    assert [run["run_id"] for run in followed.json()["runs"]] == [run_id]


def test_head_of_the_run_list_is_its_get_without_the_content(client, sample_request):
    site_id = _unique_site("HEADED")
    client.post("/dispatch/run", json={**sample_request, "site_id": site_id}).raise_for_status()
    params = {"site_id": site_id, "date": "2024-03-15"}

    get = client.get("/dispatch/runs", params=params)
    head = client.head("/dispatch/runs", params=params)

    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(get.content)) and len(get.json()["runs"]) == 1
    sent = _asgi_exchange(client.app, "HEAD", "/dispatch/runs", params)
    assert sent[0]["status"] == 200
    assert b"".join(message.get("body", b"") for message in sent[1:]) == b""


def test_the_run_list_is_503_while_the_database_is_down(client_without_database):
    params = {"site_id": "DEMO", "date": "2024-03-15"}
    get = client_without_database.get("/dispatch/runs", params=params)
    head = client_without_database.head("/dispatch/runs", params=params)

    assert (get.status_code, head.status_code) == (503, 503)
    assert get.headers["retry-after"] == head.headers["retry-after"] == "5"
    assert get.json()["message"] == "database unavailable; try again later"
    # A client's own mistake is told to it while the database is down.
    bad_date = client_without_database.get("/dispatch/runs", params={**params, "date": "2024-02-30"})
    assert bad_date.status_code == 422


def test_a_run_without_its_kpi_row_makes_the_run_list_a_json_500_naming_it(client, engine, sample_request):
    from dispatch_pipeline.storage.tables import dispatch_kpis

    site_id = _unique_site("KPI_DELETED")
    run_id = client.post("/dispatch/run", json={**sample_request, "site_id": site_id}).json()["run_id"]
    with engine.begin() as connection:
        connection.execute(dispatch_kpis.delete().where(dispatch_kpis.c.run_id == uuid.UUID(run_id)))

    response = client.get("/dispatch/runs", params={"site_id": site_id, "date": "2024-03-15"})

    assert response.status_code == 500
    assert response.json()["message"].startswith(
        f"internal error: run_id: stored run {run_id} (site {site_id}, 2024-03-15) lacks its KPI row; "
    )


def test_healthz_reports_database_and_solvers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["database"] == {"ok": True, "error": None}
    assert response.json()["solvers"]["highs"] is True
    head = client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")


def _asgi_exchange(app, method: str, path: str, params: dict | None = None) -> list[dict]:
    """The ASGI messages `app` sends for one request: what a server receives, before any HTTP
    client (TestClient's too) drops a HEAD answer's content."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": urlencode(params or {}).encode(),
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)
    return sent


@pytest.mark.parametrize("database", ["up", "down"])
def test_head_of_healthz_is_its_get_without_the_content(database_url, monkeypatch, database):
    from dispatch_pipeline.api import create_app

    monkeypatch.delenv("DISPATCH_API_TOKENS", raising=False)
    app = create_app(database_url if database == "up" else UNREACHABLE_DATABASE_URL)

    get, head = _asgi_exchange(app, "GET", "/healthz"), _asgi_exchange(app, "HEAD", "/healthz")

    assert head[0]["type"] == "http.response.start"
    assert (head[0]["status"], head[0]["headers"]) == (get[0]["status"], get[0]["headers"])
    assert get[0]["status"] == (200 if database == "up" else 503)
    assert b"".join(m.get("body", b"") for m in head[1:]) == b""


def test_every_get_endpoint_answers_head_with_its_status_and_headers(client, sample_request):
    run_id = client.post("/dispatch/run", json=sample_request).json()["run_id"]
    requests = [
        ("/healthz", {}),
        ("/dispatch/latest", {"site_id": "DEMO", "date": "2024-03-15"}),
        ("/dispatch/latest", {"site_id": "NO_SUCH_SITE"}),  # 404
        ("/dispatch/latest", {"site_id": "DEMO", "dat": "2024-03-15"}),  # 422
        ("/dispatch/runs", {"site_id": "DEMO", "date": "2024-03-15"}),
        ("/dispatch/runs", {"site_id": "DEMO", "date": "2024-03-15", "limit": "0"}),  # 422
        (f"/dispatch/runs/{run_id}", {}),
        (f"/dispatch/runs/{uuid.uuid4()}", {}),  # 404
        ("/openapi.json", {}),
    ]
    for path, params in requests:
        get, head = client.get(path, params=params), client.head(path, params=params)

        assert head.status_code == get.status_code, (path, params)
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["content-length"] == str(len(get.content))
        # TestClient drops a HEAD answer's content itself: what the app sends is asked directly.
        sent = _asgi_exchange(client.app, "HEAD", path, params)
        assert sent[0]["status"] == get.status_code
        assert b"".join(message.get("body", b"") for message in sent[1:]) == b"", (path, params)


@pytest.mark.parametrize(
    "path", ["/healthz", "/dispatch/latest", "/dispatch/run", "/dispatch/runs", f"/dispatch/runs/{uuid.UUID(int=0)}"]
)
def test_a_405_names_every_method_the_endpoint_answers(client, path):
    answers = {method: client.request(method, path) for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

    answered = [method for method, response in answers.items() if response.status_code != 405]
    refused = [response for response in answers.values() if response.status_code == 405]
    assert {response.headers["allow"] for response in refused} == {", ".join(sorted(answered))}
    assert ("HEAD" in answered) == ("GET" in answered)


def test_healthz_503_without_the_milp_solver(client, monkeypatch):
    from dispatch_pipeline.api import routes

    monkeypatch.setattr(routes, "_highspy_present", lambda: False)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["solvers"]["highs"] is False
    assert "retry-after" not in response.headers  # a missing solver does not come back by waiting
    assert client.head("/healthz").status_code == 503


def test_healthz_503_when_database_is_unreachable(client_without_database):
    client = client_without_database
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == {"ok": False, "error": "OperationalError (the server's log has the details)"}
    assert "127.0.0.1" not in response.text  # answered without a token: no host, database or user
    assert response.headers["retry-after"] == "5"
    assert client.head("/healthz").headers["retry-after"] == "5"
    latest = client.get("/dispatch/latest", params={"site_id": "DEMO"})
    assert latest.status_code == 503
    assert latest.headers["retry-after"] == "5"


def test_a_valid_request_is_503_while_the_database_is_down(client_without_database, sample_request):
    response = client_without_database.post("/dispatch/run", json=sample_request)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


def _left_to_a_site(sample_request, case: str) -> dict:
    """A request valid or not depending on what the registered site it names stores."""
    if case == "no-pv":  # the site's stored forecast
        return {key: value for key, value in sample_request.items() if key != "pv_kw"}
    if case == "no-timezone-on-a-dst-day":  # 92 quarter-hours in Berlin that day, 96 in UTC
        request = {key: value for key, value in sample_request.items() if key != "timezone"}
        request["tariff"] = {"buy": request["tariff"]["buy"][:92], "sell": request["tariff"]["sell"][:92]}
        return {**request, "date": "2024-03-31", "load_kw": request["load_kw"][:92], "pv_kw": request["pv_kw"][:92]}
    # Against the contract's soc_min (0.1) and soc_max (0.9); a site may store others.
    bess = {"target-below-soc-min": {"soc_final_min": 0.05}, "soc-min-above-soc-max": {"soc_min": 0.95}}[case]
    return {**sample_request, "bess": bess}


LEFT_TO_A_SITE = ["no-pv", "no-timezone-on-a-dst-day", "target-below-soc-min", "soc-min-above-soc-max"]


@pytest.mark.parametrize("case", LEFT_TO_A_SITE)
def test_a_request_a_site_may_complete_is_503_not_422_while_the_database_is_down(
    client_without_database, sample_request, case
):
    response = client_without_database.post("/dispatch/run", json=_left_to_a_site(sample_request, case))

    assert response.status_code == 503, response.text


@pytest.mark.parametrize(
    "database_url",
    ["postgresql+psycopg://postgres@127.0.0.1:abc/x", "postgresql+psycopg://postgres@127.0.0.1:5432/x?connect_timeout=abc"],
)
def test_a_database_url_the_server_cannot_use_is_503_json_not_a_500(database_url, monkeypatch):

    from dispatch_pipeline.api import create_app

    monkeypatch.delenv("DISPATCH_API_TOKENS", raising=False)
    with TestClient(create_app(database_url), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 503
        response = client.get("/dispatch/latest", params={"site_id": "DEMO"})
        assert response.status_code == 503
        assert response.json()["message"] == "database unavailable; try again later"


def _register_site(engine, site_id: str, demand_charge_per_kw: float = 0.0, currency: str = "MYR",
                   timezone: str = "Asia/Kuala_Lumpur", soc_min: float = 0.1, soc_max: float = 0.9) -> Site:
    site = Site(
        site_id=site_id,
        timezone=timezone,
        latitude=3.1,
        pv_kwp=0.0,
        longitude=101.7,
        currency=currency,
        bess=SiteBattery(capacity_kwh=200.0, max_charge_kw=80.0, max_discharge_kw=80.0, soc_initial=0.4,
                         soc_min=soc_min, soc_max=soc_max),
        weights=Weights(cost=1.0, curtail=0.5, violation=500.0),
        tariff=TouTariff(
            currency=currency, demand_charge_per_kw=demand_charge_per_kw, default=Prices(buy=0.4, sell=0.2)
        ),
    )
    upsert_site(engine, site)
    return site


def _store_forecast(engine, site_id: str, pv_kw: list[float], load_kw: list[float]) -> None:
    start = dt.datetime(2024, 3, 14, 16, tzinfo=dt.UTC)  # 2024-03-15 00:00 in Kuala Lumpur
    frame = pd.DataFrame({
        "ts": pd.date_range(start, periods=96, freq="15min"),
        "load_kw": load_kw,
        "pv_kw": pv_kw,
    })
    save_forecast(engine, site_id, frame, issued_at=dt.datetime(2024, 3, 14, 6, tzinfo=dt.UTC))


@pytest.mark.parametrize("case", LEFT_TO_A_SITE[1:])  # no-pv: test_registered_site_supplies_...
def test_a_request_valid_only_with_its_sites_stored_values_is_planned(client, engine, sample_request, case):
    site_id = f"COMPLETES_{case.replace('-', '_').upper()}"
    timezone = "Europe/Berlin" if case == "no-timezone-on-a-dst-day" else sample_request["timezone"]
    _register_site(engine, site_id, timezone=timezone, soc_min=0.0, soc_max=1.0)

    response = client.post("/dispatch/run", json={**_left_to_a_site(sample_request, case), "site_id": site_id})

    assert response.status_code == 200, response.text


def test_registered_site_supplies_battery_weights_timezone_and_forecast(client, engine, sample_request):
    _register_site(engine, "REG_SITE")
    _store_forecast(engine, "REG_SITE", sample_request["pv_kw"], sample_request["load_kw"])
    # The contract's minimal request: no battery, limits, weights, timezone or PV.
    minimal = {
        "site_id": "REG_SITE",
        "date": "2024-03-15",
        "resolution_minutes": 15,
        "load_kw": sample_request["load_kw"],
        "tariff": sample_request["tariff"],
    }

    answer = client.post("/dispatch/run", json=minimal)

    assert answer.status_code == 200, answer.text
    detail = client.get(f"/dispatch/runs/{answer.json()['run_id']}").json()
    assert detail["timezone"] == "Asia/Kuala_Lumpur"
    assert detail["objective_config"] == {"cost": 1.0, "curtail": 0.5, "violation": 500.0}
    points = detail["points"]
    assert [p["pv_set_kw"] + p["curtail_kw"] for p in points] == pytest.approx(sample_request["pv_kw"], abs=1e-6)
    # Full cycles are discharged energy over the site's 200 kWh, not the contract default 100.
    discharged = sum(p["batt_dis_kw"] for p in points) * 0.25
    assert discharged > 0
    assert detail["kpis"]["equivalent_full_cycles"] == pytest.approx(discharged / 200.0, abs=1e-4)
    assert max(p["batt_dis_kw"] for p in points) > 50.0  # the site's 80 kW rating, not 50
    # The PV came from the stored issue, the load and prices from the request.
    assert (detail["forecast_issued_at"], detail["prices_issued_at"]) == ("2024-03-14T06:00:00Z", None)
    latest = client.get("/dispatch/latest", params={"site_id": "REG_SITE", "date": "2024-03-15"}).json()
    assert (latest["forecast_issued_at"], latest["prices_issued_at"]) == ("2024-03-14T06:00:00Z", None)

    with_own_pv = client.post("/dispatch/run", json={**minimal, "pv_kw": sample_request["pv_kw"]})
    detail = client.get(f"/dispatch/runs/{with_own_pv.json()['run_id']}").json()
    assert (detail["forecast_issued_at"], detail["prices_issued_at"]) == (None, None)
    # Both planned with the site's registration, and keep when it last changed.
    [registered] = read_registered_sites(engine, ["REG_SITE"])[0]
    for run_id in (answer.json()["run_id"], with_own_pv.json()["run_id"]):
        assert get_run(engine, run_id).run.site_updated_at == registered.updated_at
        shown = client.get(f"/dispatch/runs/{run_id}").json()["site_updated_at"]
        assert dt.datetime.fromisoformat(shown) == registered.updated_at
    # The stored PV's row was written when the forecast was saved; the request's own PV read none.
    [forecast_run, own_pv_run] = (
        client.get(f"/dispatch/runs/{run['run_id']}").json() for run in (answer.json(), with_own_pv.json())
    )
    assert forecast_run["forecast_stored_at"] is not None and forecast_run["prices_stored_at"] is None
    assert (own_pv_run["forecast_stored_at"], own_pv_run["prices_stored_at"]) == (None, None)


def test_a_registered_sites_plan_is_explained_in_its_currency(client, engine, sample_request):
    _register_site(engine, "REG_EUR", currency="EUR")

    answer = client.post("/dispatch/run", json={**sample_request, "site_id": "REG_EUR"})

    assert answer.status_code == 200, answer.text
    reasons = [p["reason"] for p in client.get(f"/dispatch/runs/{answer.json()['run_id']}").json()["points"]]
    assert any("EUR/kWh" in reason for reason in reasons) and not any("MYR" in reason for reason in reasons)


def test_a_registered_site_is_planned_on_its_own_local_day_only(client, engine, sample_request):
    # A Berlin day stored under the Kuala Lumpur site's date would be read back as that day's plan.
    _register_site(engine, "REG_TZ")
    before = count_rows(engine)
    answer = client.post("/dispatch/run", json={**sample_request, "site_id": "REG_TZ", "timezone": "Europe/Berlin"})
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "timezone"]
    assert problem["msg"] == (
        "site 'REG_TZ' is registered in Asia/Kuala_Lumpur, and a date is its local day there; leave timezone "
        "out or send 'Asia/Kuala_Lumpur' (got 'Europe/Berlin')"
    )
    assert count_rows(engine) == before
    same = client.post("/dispatch/run", json={**sample_request, "site_id": "REG_TZ", "timezone": "Asia/Kuala_Lumpur"})
    assert same.status_code == 200, same.text


def test_partial_battery_object_patches_the_sites(client, engine, sample_request):
    _register_site(engine, "REG_PATCH")
    request = {**sample_request, "site_id": "REG_PATCH", "bess": {"soc_initial": 0.8}}
    del request["timezone"]

    answer = client.post("/dispatch/run", json=request)

    assert answer.status_code == 200, answer.text
    detail = client.get(f"/dispatch/runs/{answer.json()['run_id']}").json()
    # soc_final_min null means "end at least as full as it started": 0.8 of the site's 200 kWh.
    assert detail["kpis"]["final_soc"] >= 0.8 - 1e-6
    discharged = sum(p["batt_dis_kw"] for p in detail["points"]) * 0.25
    assert discharged > 0
    assert detail["kpis"]["equivalent_full_cycles"] == pytest.approx(discharged / 200.0, abs=1e-4)


@pytest.mark.parametrize(("sent", "charged"), [(None, 2.5), (0.0, 0.0), (1.0, 1.0)])
def test_registered_site_supplies_its_demand_charge_unless_the_tariff_states_one(
    client, engine, sample_request, sent, charged
):
    _register_site(engine, "REG_PEAK", demand_charge_per_kw=2.5)
    tariff = {"buy": sample_request["tariff"]["buy"], "sell": sample_request["tariff"]["sell"]}
    if sent is not None:
        tariff["demand_charge_per_kw"] = sent
    request = {**sample_request, "site_id": "REG_PEAK", "tariff": tariff}

    answer = client.post("/dispatch/run", json=request)

    assert answer.status_code == 200, answer.text
    kpis = answer.json()["kpis"]
    assert kpis["total_cost"] == pytest.approx(
        kpis["import_cost"] - kpis["export_revenue"] + charged * kpis["peak_grid_import_kw"], abs=1e-6
    )


@pytest.mark.parametrize(
    ("date", "until", "charged"),
    [
        ("2024-03-15", "2024-03-16", 0.5),  # the day before the change: the earlier tariff's
        ("2024-03-15", "2024-03-15", 2.5),  # the change's own day: the site's tariff's
        (None, "2200-01-01", 0.5),  # the site's tomorrow, before a change registered ahead
    ],
)
def test_registered_site_supplies_the_demand_charge_of_the_tariff_in_force_on_the_day(
    client, engine, sample_request, date, until, charged
):
    site = _register_site(engine, "REG_HISTORY", demand_charge_per_kw=2.5)
    earlier = {"demand_charge_per_kw": 0.5, "default": {"buy": 0.3, "sell": 0.1}}
    upsert_site(engine, Site.model_validate({**site.model_dump(), "tariff_history": [{"until": until, "tariff": earlier}]}))
    tariff = {"buy": sample_request["tariff"]["buy"], "sell": sample_request["tariff"]["sell"]}
    request = {**sample_request, "site_id": "REG_HISTORY", "tariff": tariff, "date": date}

    answer = client.post("/dispatch/run", json=request)

    assert answer.status_code == 200, answer.text
    kpis = answer.json()["kpis"]
    assert kpis["peak_grid_import_kw"] > 0
    assert kpis["total_cost"] == pytest.approx(
        kpis["import_cost"] - kpis["export_revenue"] + charged * kpis["peak_grid_import_kw"], abs=1e-6
    )


@pytest.mark.parametrize(
    ("sent", "loc", "theirs"),
    [
        ({"soc_min": 0.95}, "soc_max", "bess.soc_max"),  # the site's soc_max 0.9, below what was sent
        ({"soc_max": 0.05}, "soc_max", "bess.soc_min"),  # what was sent, below the site's soc_min 0.1
        ({"soc_final_min": 0.95}, "soc_final_min", "bess.soc_min, bess.soc_max"),  # outside the site's band
    ],
)
def test_a_rule_broken_against_the_sites_stored_value_says_whose_value_it_is(
    client, engine, sample_request, sent, loc, theirs
):
    _register_site(engine, "REG_BLAME")  # stores the default band 0.1..0.9
    request = {**sample_request, "site_id": "REG_BLAME", "bess": sent}
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "bess", loc]
    assert problem["msg"].endswith(f" (stored for site 'REG_BLAME', as the request left it out: {theirs})")
    assert count_rows(engine) == before


def test_one_answer_names_the_requests_own_faults_and_those_against_its_site(client, engine, sample_request):
    _register_site(engine, "REG_ALL_AT_ONCE")  # stores the default band 0.1..0.9
    load_kw = [-5.0, *sample_request["load_kw"][1:]]
    request = {**sample_request, "site_id": "REG_ALL_AT_ONCE", "load_kw": load_kw, "bess": {"soc_min": 0.95}}
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    assert {tuple(problem["loc"][1:2]) + tuple(problem["loc"][2:3]) for problem in response.json()["detail"]} >= {
        ("load_kw", 0), ("bess", "soc_max"),
    }
    assert count_rows(engine) == before


def test_registered_site_without_forecast_for_the_day_is_422(client, engine, sample_request):
    _register_site(engine, "REG_NOFC")
    request = {**sample_request, "site_id": "REG_NOFC"}
    del request["pv_kw"]
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "pv_kw"]
    assert "REG_NOFC" in response.json()["message"]
    assert count_rows(engine) == before


def test_an_hourly_request_plans_with_the_mean_of_each_hour_of_a_quarter_hour_forecast(client, engine, sample_request):
    _register_site(engine, "REG_HOURLY")
    _store_forecast(engine, "REG_HOURLY", sample_request["pv_kw"], sample_request["load_kw"])
    hourly = {
        "site_id": "REG_HOURLY", "date": "2024-03-15", "resolution_minutes": 60,
        "load_kw": sample_request["load_kw"][::4],
        "tariff": {"buy": sample_request["tariff"]["buy"][::4], "sell": sample_request["tariff"]["sell"][::4]},
    }

    response = client.post("/dispatch/run", json=hourly)

    assert response.status_code == 200, response.text
    quarter_hours = sample_request["pv_kw"]
    hourly_means = [sum(quarter_hours[i:i + 4]) / 4 for i in range(0, 96, 4)]
    plan = client.get("/dispatch/latest", params={"site_id": "REG_HOURLY", "date": "2024-03-15"}).json()
    available = [point["pv_set_kw"] + point["curtail_kw"] for point in plan["points"]]
    assert available == pytest.approx(hourly_means, abs=1e-6)
    assert max(hourly_means) > 0 and hourly_means != quarter_hours[::4]  # the mean, not a sample


def test_a_five_minute_request_on_a_quarter_hour_forecast_says_why_it_cannot_use_it(client, engine, sample_request):
    _register_site(engine, "REG_FINE")
    _store_forecast(engine, "REG_FINE", sample_request["pv_kw"], sample_request["load_kw"])
    before = count_rows(engine)
    fine = {
        "site_id": "REG_FINE", "date": "2024-03-15", "resolution_minutes": 5,
        "load_kw": [v for v in sample_request["load_kw"] for _ in range(3)],
        "tariff": {side: [v for v in sample_request["tariff"][side] for _ in range(3)] for side in ("buy", "sell")},
    }

    response = client.post("/dispatch/run", json=fine)

    assert response.status_code == 422
    message = response.json()["message"]
    assert message == (
        "pv_kw: missing, and stored forecasts are quarter-hourly: a 5-minute request of site 'REG_FINE' "
        "needs a PV value for each of its intervals (none is invented between stored ones); send pv_kw"
    )
    assert count_rows(engine) == before


def test_unknown_site_without_pv_is_422_saying_so(client, engine, sample_request):
    request = {**sample_request, "site_id": "NOT_REGISTERED"}
    del request["pv_kw"]
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    message = response.json()["message"]
    assert "NOT_REGISTERED" in message and "not registered" in message and "pv_kw" in message
    assert count_rows(engine) == before


def test_openapi_documents_request_response_and_example(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/dispatch/run"]["post"]
    body = operation["requestBody"]["content"]["application/json"]

    assert body["schema"] == {"$ref": "#/components/schemas/DispatchRequest"}
    assert len(body["examples"]["quick_start"]["value"]["load_kw"]) == 96
    components = schema["components"]["schemas"]
    assert {"DispatchRequest", "Battery", "Tariff", "DispatchResponse", "Kpis", "Point"} <= set(components)
    assert client.get("/docs").status_code == 200


def test_openapi_example_is_accepted(client):
    example = client.get("/openapi.json").json()["paths"]["/dispatch/run"]["post"]["requestBody"]
    value = example["content"]["application/json"]["examples"]["quick_start"]["value"]

    assert client.post("/dispatch/run", json=value).status_code == 200


def test_a_request_without_date_takes_its_stored_pv_from_the_day_it_plans(client, engine, sample_request, monkeypatch):
    # One clock reading decides both: at 23:59:59.9 in Kuala Lumpur the planned day is the 15th,
    # and a second reading a moment later would have taken the 16th's PV for it.
    from dispatch_pipeline.api import planning

    _register_site(engine, "REG_MIDNIGHT")
    _store_forecast(engine, "REG_MIDNIGHT", sample_request["pv_kw"], sample_request["load_kw"])
    readings = iter([dt.datetime(2024, 3, 14, 15, 59, 59, 900000, tzinfo=dt.UTC)])
    monkeypatch.setattr(planning, "clock", lambda: next(readings))
    request = {"site_id": "REG_MIDNIGHT", "resolution_minutes": 15,
               "load_kw": sample_request["load_kw"], "tariff": sample_request["tariff"]}

    answer = client.post("/dispatch/run", json=request)

    assert answer.status_code == 200, answer.text
    detail = client.get(f"/dispatch/runs/{answer.json()['run_id']}").json()
    assert detail["date"] == "2024-03-15"
    assert [p["pv_set_kw"] + p["curtail_kw"] for p in detail["points"]] == pytest.approx(sample_request["pv_kw"], abs=1e-6)


def test_a_registered_site_stored_invalid_is_a_server_error_naming_it(client, engine, sample_request):
    from sqlalchemy import update

    from dispatch_pipeline.storage.tables import sites

    _register_site(engine, "REG_BROKEN")
    with engine.begin() as connection:
        connection.execute(update(sites).where(sites.c.site_id == "REG_BROKEN").values(currency="??"))
    before = count_rows(engine)

    response = client.post("/dispatch/run", json={**sample_request, "site_id": "REG_BROKEN"})

    assert response.status_code == 500
    assert response.json()["message"].startswith("cannot plan: stored site 'REG_BROKEN' is not a valid site (currency")
    assert count_rows(engine) == before


def test_a_run_that_fell_back_says_so_in_its_details(client, engine, sample_request, monkeypatch):
    from dispatch_pipeline.api import planning
    from dispatch_pipeline.core.runner import MilpRunner
    from tests import fakes

    crashing = MilpRunner(size=1, solve_function=fakes.crash)
    real_solve = planning.solve_problem
    monkeypatch.setattr(planning, "solve_problem", lambda problem, **kwargs: real_solve(problem, runner=crashing, **kwargs))
    try:
        answer = client.post("/dispatch/run", json={**sample_request, "site_id": "FELL_BACK"})
    finally:
        crashing.close()

    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["solver"]) == ("fallback", "fallback_rule")
    detail = client.get(f"/dispatch/runs/{answer.json()['run_id']}").json()
    assert detail["fallback_used"] is True and detail["status"] == "fallback"
    assert "crashed" in detail["fallback_reason"]
    assert answer.json()["fallback_reason"] == detail["fallback_reason"]


def test_the_openapi_example_for_a_registered_site_plans_its_tomorrow_from_storage(client, engine, monkeypatch):
    from dispatch_pipeline.api import planning
    from dispatch_pipeline.api.schemas import REGISTERED_SITE_REQUEST
    from dispatch_pipeline.demo import demo_forecast, demo_site, demo_sites

    # As `dispatch-pipeline demo` leaves KL_MALL (under an id of this test's own).
    assert REGISTERED_SITE_REQUEST["site_id"] in {site.site_id for site in demo_sites()}
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": "EXAMPLE_KL"}))
    save_forecast(engine, "EXAMPLE_KL", demo_forecast("KL_MALL", dt.date(2024, 3, 15)),
                  issued_at=dt.datetime(2024, 3, 14, tzinfo=dt.UTC))
    monkeypatch.setattr(planning, "clock", lambda: dt.datetime(2024, 3, 14, 6, tzinfo=dt.UTC))  # 14:00 there

    response = client.post("/dispatch/run", json={**REGISTERED_SITE_REQUEST, "site_id": "EXAMPLE_KL"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["site_id"], answer["date"], answer["timezone"]) == ("EXAMPLE_KL", "2024-03-15", "Asia/Kuala_Lumpur")


def test_a_site_id_differing_only_in_case_from_a_registered_one_is_a_422(client, engine, sample_request):
    _register_site(engine, "CASE_SITE")
    before = count_rows(engine)

    response = client.post("/dispatch/run", json={**sample_request, "site_id": "case_site"})

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "site_id"]
    assert problem["msg"] == "differs only in case from the registered site 'CASE_SITE' (got 'case_site'); site ids are compared exactly"
    assert count_rows(engine) == before


def test_a_case_variant_is_named_only_to_a_token_that_may_access_the_registered_site(make_app, engine, sample_request):
    _register_site(engine, "CASE_SITE_3")
    request = {**sample_request, "site_id": "case_site_3"}
    before = count_rows(engine)

    with TestClient(make_app("case-token:case_site_3, all-token")) as secured:
        narrow = secured.post("/dispatch/run", json=request, headers={"Authorization": "Bearer case-token"})
        wide = secured.post("/dispatch/run", json=request, headers={"Authorization": "Bearer all-token"})

    assert (narrow.status_code, wide.status_code) == (422, 422)
    assert narrow.json()["detail"][0]["msg"] == (
        "differs only in case from a registered site (got 'case_site_3'); site ids are compared exactly"
    )
    assert "CASE_SITE_3" in wide.json()["detail"][0]["msg"]
    assert count_rows(engine) == before


@pytest.mark.parametrize("date", [None, "2024-01-02"])
def test_latest_of_a_site_id_differing_only_in_case_from_a_registered_one_names_it(client, engine, date):
    _register_site(engine, "CASE_SITE_2")
    params = {"site_id": "case_site_2", **({"date": date} if date else {})}

    response = client.get("/dispatch/latest", params=params)

    assert response.status_code == 404
    on_date = f" on {date}" if date else ""
    assert response.json()["message"] == (
        f"no dispatch run stored for site 'case_site_2'{on_date} (the registered site 'CASE_SITE_2' differs from it only in case)"
    )


def test_latest_404_without_a_date_tells_a_registered_site_from_a_mistyped_id(client, engine):
    _register_site(engine, "REG_NO_DATE")

    registered = client.get("/dispatch/latest", params={"site_id": "REG_NO_DATE"})
    unknown = client.get("/dispatch/latest", params={"site_id": "NO_SUCH_SITE"})

    assert (registered.status_code, unknown.status_code) == (404, 404)
    assert registered.json()["message"] == (
        "no dispatch run stored for site 'REG_NO_DATE' (the site is registered, and none of its days is planned yet)"
    )
    assert unknown.json()["message"] == (
        "no dispatch run stored for site 'NO_SUCH_SITE' (nor is a site of that id registered: is the site_id right?)"
    )


def test_latest_404_of_a_registered_site_not_planned_yet_does_not_doubt_its_id(client, engine, sample_request):
    _register_site(engine, "REG_UNPLANNED")
    params = {"site_id": "REG_UNPLANNED", "date": "2024-01-02"}

    response = client.get("/dispatch/latest", params=params)

    assert response.status_code == 404
    assert response.json()["message"] == (
        "no dispatch run stored for site 'REG_UNPLANNED' on 2024-01-02 "
        "(the site is registered, and none of its days is planned yet)"
    )
    # Once one of its days is planned, another day's 404 says so, as for any planned site.
    planned = client.post("/dispatch/run", json={**sample_request, "site_id": "REG_UNPLANNED"})
    assert planned.status_code == 200, planned.text
    assert client.get("/dispatch/latest", params=params).json()["message"] == (
        "no dispatch run stored for site 'REG_UNPLANNED' on 2024-01-02 (its most recently stored plan is of 2024-03-15)"
    )


def test_a_run_whose_rows_were_deleted_by_hand_answers_a_json_500_naming_it(client, engine, sample_request):
    from dispatch_pipeline.storage.tables import dispatch_explanations

    request = {**sample_request, "site_id": "HAND_DELETED_ROWS"}
    run_id = client.post("/dispatch/run", json=request).json()["run_id"]
    with engine.begin() as connection:
        connection.execute(dispatch_explanations.delete().where(dispatch_explanations.c.run_id == uuid.UUID(run_id)))

    for response in (
        client.get(f"/dispatch/runs/{run_id}"),
        client.get("/dispatch/latest", params={"site_id": "HAND_DELETED_ROWS", "date": request["date"]}),
    ):
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        message = response.json()["message"]
        assert message.startswith(f"internal error: run_id: stored run {run_id} (site HAND_DELETED_ROWS, ")
        assert "lacks explanation rows for some of its intervals" in message


@pytest.mark.parametrize("weights", [
    {"cost": 1e-12, "curtail": 0.2, "violation": 1000.0},  # stored before weights under 1e-9 were refused
    {"cost": 1.0, "curtail": 0.2, "violation": 1e12},  # stored before weights over 1e9 were refused
])
def test_a_run_stored_with_weights_todays_requests_may_not_send_is_still_read(client, engine, sample_request, weights):
    from dispatch_pipeline.storage.tables import dispatch_runs

    request = {**sample_request, "site_id": "OLDER_WEIGHTS"}
    run_id = client.post("/dispatch/run", json=request).json()["run_id"]
    with engine.begin() as connection:
        connection.execute(
            dispatch_runs.update().where(dispatch_runs.c.id == uuid.UUID(run_id)).values(objective_config=weights)
        )

    detail = client.get(f"/dispatch/runs/{run_id}")
    latest = client.get("/dispatch/latest", params={"site_id": "OLDER_WEIGHTS", "date": request["date"]})

    assert detail.status_code == 200, detail.text
    assert detail.json()["objective_config"] == weights
    assert latest.status_code == 200, latest.text
    assert latest.json()["run_id"] == run_id


def test_an_unexpected_failure_answers_in_the_one_error_shape(make_app, monkeypatch, sample_request):

    from dispatch_pipeline.api import routes

    def broken(*_args, **_kwargs):
        raise RuntimeError("a defect, not the client's fault")

    monkeypatch.setattr(routes, "get_run", broken)
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        response = client.get(f"/dispatch/runs/{uuid.uuid4()}")

    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error; the server's log has the details",
        "message": "internal error; the server's log has the details",
    }


@pytest.mark.parametrize("date", ["\uff12\uff10\uff12\uff15-03-15", "\u0662\u0660\u0662\u0665-\u0660\u0663-\u0661\u0665"])
def test_a_date_in_digits_of_another_script_is_said_to_be_no_calendar_date(client, sample_request, date):
    # Not "there is no such day": the format is what is wrong.
    query = client.get("/dispatch/latest", params={"site_id": "DEMO", "date": date})
    body = client.post("/dispatch/run", json={**sample_request, "date": date})

    for response in (query, body):
        assert response.status_code == 422
        [problem] = response.json()["detail"]
        assert (problem["msg"], problem["input"]) == ("expected a calendar date YYYY-MM-DD", date)
