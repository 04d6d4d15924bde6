"""DISPATCH_API_TOKENS: 401 without or with an unknown token, 403 off the token's sites."""

from __future__ import annotations

import re

import pytest
from dotenv import dotenv_values
from fastapi.testclient import TestClient

from dispatch_pipeline.api.auth import TokenTable, load_token_table
from tests.api.helpers import count_rows
from tests.conftest import REPO

pytestmark = pytest.mark.postgres

TOKENS = "all-sites-token, kl-token:KL_MALL|KL_OFFICE"
ALL = {"Authorization": "Bearer all-sites-token"}
KL_ONLY = {"Authorization": "Bearer kl-token"}


@pytest.fixture
def secured(make_app):
    with TestClient(make_app(TOKENS)) as client:
        yield client


def test_a_caller_without_a_token_hears_401_before_anything_about_its_query(secured):
    response = secured.get("/dispatch/latest", params={"site_id": "DEMO", "dat": "2099-01-01"})
    assert response.status_code == 401


def test_head_needs_the_token_its_get_needs(secured):
    for method in ("GET", "HEAD"):
        response = secured.request(method, "/dispatch/latest", params={"site_id": "DEMO"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_healthz_needs_no_token(secured):
    assert secured.get("/healthz").status_code == 200
    assert secured.head("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing bearer token"), ({"Authorization": "Bearer nope"}, "unknown bearer token"),
     ({"Authorization": "Basic YWxsLXNpdGVzLXRva2Vu"}, "Authorization of scheme 'Basic', not a bearer token"),
     ({"Authorization": "Bearer"}, "the bearer token is empty"),
     ({"Authorization": "Bearer all-sites-token2"}, "unknown bearer token")],
    ids=["none", "unknown", "basic", "empty", "prefix-of-nothing"],
)
def test_missing_or_unknown_token_is_401(secured, engine, sample_request, headers, message):
    before = count_rows(engine)

    responses = [
        secured.post("/dispatch/run", json=sample_request, headers=headers),
        secured.get("/dispatch/latest", params={"site_id": "DEMO"}, headers=headers),
        secured.get("/dispatch/runs/00000000-0000-0000-0000-000000000000", headers=headers),
        secured.get("/dispatch/runs", params={"site_id": "DEMO", "date": "2024-03-15"}, headers=headers),
    ]

    assert [r.status_code for r in responses] == [401, 401, 401, 401]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses)
    assert all(r.json()["message"].startswith(message) for r in responses), responses[0].json()
    assert "YWxsLXNpdGVzLXRva2Vu" not in responses[0].text
    assert count_rows(engine) == before


@pytest.mark.parametrize(
    ("header", "message"),
    [("all-sites-token", "Authorization without a scheme (a token needs 'Bearer ' before it)"),
     ("Bearer\tall-sites-token", "'Bearer' and the token must be separated by one space"),
     ("Token all-sites-token", "Authorization of another scheme, not a bearer token")],
    ids=["no-scheme", "tab", "unregistered-scheme"],
)
def test_a_401_never_repeats_what_may_be_the_token(secured, header, message):
    response = secured.get("/dispatch/latest", params={"site_id": "DEMO"}, headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["message"] == f"{message}: send 'Authorization: Bearer <token>'"
    assert "all-sites" not in response.text


@pytest.mark.parametrize("second", ["Bearer nope", "Bearer all-sites-token"])
def test_two_authorization_headers_are_401_whichever_comes_first(secured, second):
    for headers in ([("Authorization", ALL["Authorization"]), ("Authorization", second)],
                    [("Authorization", second), ("Authorization", ALL["Authorization"])]):
        response = secured.get("/dispatch/latest", params={"site_id": "DEMO"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["message"] == "Authorization is sent 2 times: send one bearer token"


def test_token_limited_to_other_sites_is_403(secured, engine, sample_request):
    before = count_rows(engine)

    assert secured.post("/dispatch/run", json=sample_request, headers=KL_ONLY).status_code == 403
    assert count_rows(engine) == before
    assert secured.get("/dispatch/latest", params={"site_id": "DEMO"}, headers=KL_ONLY).status_code == 403


@pytest.mark.parametrize("site_id", ["bad id", ".."])
def test_a_site_id_no_site_can_have_is_a_422_to_a_scoped_token_too(secured, engine, sample_request, site_id):
    before = count_rows(engine)

    posted = secured.post("/dispatch/run", json={**sample_request, "site_id": site_id}, headers=KL_ONLY)
    read = secured.get("/dispatch/latest", params={"site_id": site_id}, headers=KL_ONLY)

    assert (posted.status_code, read.status_code) == (422, 422)
    assert posted.json()["detail"][0]["loc"] == ["body", "site_id"]
    assert count_rows(engine) == before


def test_allowed_tokens_get_200_and_run_reads_check_the_site(secured, sample_request):
    posted = secured.post("/dispatch/run", json=sample_request, headers=ALL)
    assert posted.status_code == 200
    run_path = f"/dispatch/runs/{posted.json()['run_id']}"

    assert secured.get(run_path, headers=ALL).status_code == 200
    assert secured.get(run_path, headers=KL_ONLY).status_code == 404  # not 403: nothing on other sites' runs
    assert secured.get("/dispatch/latest", params={"site_id": "DEMO"}, headers=ALL).status_code == 200
    kl_request = {**sample_request, "site_id": "KL_MALL"}
    assert secured.post("/dispatch/run", json=kl_request, headers=KL_ONLY).status_code == 200
    assert secured.get("/dispatch/latest", params={"site_id": "KL_MALL"}, headers=KL_ONLY).status_code == 200


def test_the_run_list_of_another_site_is_403_and_tells_nothing_of_its_runs(secured, sample_request):
    planned = {"site_id": "LISTED_SECRET", "date": "2024-03-15"}
    assert secured.post("/dispatch/run", json={**sample_request, **planned}, headers=ALL).status_code == 200
    assert len(secured.get("/dispatch/runs", params=planned, headers=ALL).json()["runs"]) == 1

    answers = [
        secured.request(method, "/dispatch/runs", params=params, headers=KL_ONLY)
        for method in ("GET", "HEAD")
        # A site-day with a run, one without, a site with none, a date no day has: all alike.
        for params in (planned, {**planned, "date": "2024-03-16"}, {**planned, "site_id": "NEVER_PLANNED"},
                       {**planned, "date": "2024-02-30"})
    ]

    assert [answer.status_code for answer in answers] == [403] * 8
    messages = [answer.json()["message"] for answer in answers[:4]]
    assert messages[:3] == ["this token may not access site 'LISTED_SECRET'"] * 2 + [
        "this token may not access site 'NEVER_PLANNED'"
    ]
    assert messages[3] == messages[0]
    kl_request = {**sample_request, "site_id": "KL_OFFICE"}
    run_id = secured.post("/dispatch/run", json=kl_request, headers=KL_ONLY).json()["run_id"]
    own = secured.get("/dispatch/runs", params={"site_id": "KL_OFFICE", "date": "2024-03-15"}, headers=KL_ONLY)
    assert own.status_code == 200 and own.json()["runs"][0]["run_id"] == run_id


def test_a_page_after_a_run_tells_a_restricted_token_nothing_of_other_sites(secured, sample_request):
    secret = {"site_id": "PAGED_SECRET", "date": "2024-03-15"}
    secret_run = secured.post("/dispatch/run", json={**sample_request, **secret}, headers=ALL).json()["run_id"]
    office_run = secured.post("/dispatch/run", json={**sample_request, "site_id": "KL_OFFICE"}, headers=KL_ONLY).json()["run_id"]
    unknown = "00000000-0000-4000-8000-000000000000"

    # Another site's listing is 403 first, whatever before names, even a malformed one.
    for before in (secret_run, office_run, unknown, "not-a-uuid"):
        answer = secured.get("/dispatch/runs", params={**secret, "before": before}, headers=KL_ONLY)
        assert (answer.status_code, answer.json()["message"]) == (403, "this token may not access site 'PAGED_SECRET'")
    # Its own listing after a run of a site it may not access: as after no run at all.
    own = {"site_id": "KL_MALL", "date": "2024-03-15"}
    answers = [secured.get("/dispatch/runs", params={**own, "before": before}, headers=KL_ONLY)
               for before in (secret_run, unknown)]
    assert [answer.status_code for answer in answers] == [422, 422]
    assert [answer.json()["detail"][0]["msg"] for answer in answers] == [
        "must be a run of site 'KL_MALL' on 2024-03-15, as next_before names; no stored run has this id"
    ] * 2
    assert "PAGED_SECRET" not in answers[0].text
    # One of its own other sites is named.
    mine = secured.get("/dispatch/runs", params={**own, "before": office_run}, headers=KL_ONLY)
    assert mine.status_code == 422
    assert mine.json()["detail"][0]["msg"].endswith("; it is a run of site 'KL_OFFICE' on 2024-03-15")
    # The token of every site hears whose run it is.
    named = secured.get("/dispatch/runs", params={**own, "before": secret_run}, headers=ALL)
    assert named.json()["detail"][0]["msg"].endswith("; it is a run of site 'PAGED_SECRET' on 2024-03-15")


def test_token_table_format():
    table = TokenTable.parse(" a , b:S1|S2 ,, c:S3 ")

    assert table.find("a").sites is None
    assert table.find("b").sites == frozenset({"S1", "S2"})
    assert table.find("c").allows("S3") and not table.find("c").allows("S1")
    assert table.find("d") is None
    assert load_token_table(None) is None and load_token_table("  ") is None


SITE_IDS_AFTER_COLON = "entry 1 needs site ids matching ^[A-Za-z0-9_.-]{1,64}$ after ':'"
NOT_VISIBLE_ASCII = "entry 1 has a token with a space or a character outside visible ASCII"


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        (":S1", "entry 1 has an empty token"),
        ("tok:", f"{SITE_IDS_AFTER_COLON} (got '')"),
        ("tok:bad site", f"{SITE_IDS_AFTER_COLON} (got 'bad site')"),
        (",", "no token in ','"),
        ("tok:KL_MALL|", f"{SITE_IDS_AFTER_COLON} (got 'KL_MALL|')"),
        ("tok:S1||S2", f"{SITE_IDS_AFTER_COLON} (got 'S1||S2')"),
        ("tök", NOT_VISIBLE_ASCII),
        ("two words", NOT_VISIBLE_ASCII),
    ],
)
def test_token_table_rejects_bad_entries(text, fault):
    # Every refusal names the variable: each entry must be refused for its own fault, named with
    # the part of it at fault, not for whatever else the parser trips over first.
    with pytest.raises(ValueError, match=re.escape(f"DISPATCH_API_TOKENS: {fault}")):
        load_token_table(text)


def test_the_placeholders_of_the_example_env_file_are_refused():
    example = dotenv_values(REPO / ".env.example")["DISPATCH_API_TOKENS"]
    with pytest.raises(ValueError, match=r"DISPATCH_API_TOKENS: entry 1 is the placeholder of \.env\.example \('change-me-token-1'\)"):
        load_token_table(example)
    with pytest.raises(ValueError, match=r"entry 2 is the placeholder of \.env\.example \('Change-Me'\)"):
        load_token_table("kl-9c2e, Change-Me:KL_MALL")


@pytest.mark.parametrize(("text", "repeat"), [("kl-9c2e:KL_MALL,kl-9c2e", 2), ("kl-9c2e,other,kl-9c2e:KL_MALL", 3)])
def test_a_token_listed_twice_is_refused_whatever_the_order(text, repeat):
    with pytest.raises(ValueError, match=f"DISPATCH_API_TOKENS: entry {repeat} repeats the token of entry 1"):
        TokenTable.parse(text)


def test_a_damaged_run_of_another_site_is_not_found_to_a_restricted_token(secured, engine, sample_request):
    import uuid

    from dispatch_pipeline.storage.tables import dispatch_explanations

    posted = secured.post("/dispatch/run", json={**sample_request, "site_id": "DAMAGED_SECRET"}, headers=ALL)
    run_id = posted.json()["run_id"]
    with engine.begin() as connection:
        connection.execute(dispatch_explanations.delete().where(dispatch_explanations.c.run_id == uuid.UUID(run_id)))

    hidden = secured.get(f"/dispatch/runs/{run_id}", headers=KL_ONLY)
    assert hidden.status_code == 404 and "DAMAGED_SECRET" not in hidden.text
    assert secured.get(f"/dispatch/runs/{run_id}", headers=ALL).status_code == 500
