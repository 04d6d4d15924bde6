"""`Idempotency-Key` on POST /dispatch/run: a request sent again answers with the run its key
stored, nothing solved or stored twice; the key with another body, or no key at all, is a 422."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from dispatch_pipeline.api import planning
from dispatch_pipeline.api.errors import field_problem, unprocessable, with_problem_first
from dispatch_pipeline.demo import demo_site
from dispatch_pipeline.storage import remove_sites, upsert_site
from dispatch_pipeline.storage.runs import write as runs_write
from dispatch_pipeline.storage.tables import dispatch_kpis, dispatch_runs, sites
from tests.api.helpers import count_rows

pytestmark = pytest.mark.postgres

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def new_key() -> str:
    # Tests share the session's database: a key of one must not be met by another.
    return f"test-{uuid.uuid4()}"


def runs_under(engine, key: str) -> list[str]:
    with engine.connect() as connection:
        return [str(run_id) for run_id in connection.scalars(
            select(dispatch_runs.c.id).where(dispatch_runs.c.idempotency_key == key)
        )]


def scopes_under(engine, key: str) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(
            select(dispatch_runs.c.idempotency_scope).where(dispatch_runs.c.idempotency_key == key)
        ))


def register_demo_site(engine, sample_request) -> str:
    """A registered site of the sample request's timezone, under an id no other test uses."""
    site_id = f"KEYED_{uuid.uuid4().hex[:8].upper()}"
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    assert site.timezone == sample_request["timezone"]
    upsert_site(engine, site)
    return site_id


def no_solving(*_args, **_kwargs):
    raise AssertionError("a request sent again with its key was solved again")


def test_a_request_sent_again_with_its_key_answers_with_the_stored_run(client, engine, sample_request, monkeypatch):
    key = new_key()
    before = count_rows(engine)
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    stored = count_rows(engine)
    assert stored["dispatch_runs"] == before["dispatch_runs"] + 1

    monkeypatch.setattr(planning, "solve_problem", no_solving)
    again = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})

    assert again.status_code == 200, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content  # the same answer, byte for byte
    assert count_rows(engine) == stored
    assert runs_under(engine, key) == [first.json()["run_id"]]
    detail = client.get(f"/dispatch/runs/{first.json()['run_id']}").json()
    assert detail["source"] == "api"
    assert "idempotency_key" not in detail  # the key is the client's, not part of the run's record


def test_the_same_body_spaced_or_ordered_otherwise_is_the_same_request(client, engine, sample_request, monkeypatch):
    key = new_key()
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    assert first.status_code == 200, first.text
    stored = count_rows(engine)
    monkeypatch.setattr(planning, "solve_problem", no_solving)

    reordered = json.dumps(dict(reversed(list(sample_request.items()))), indent=2)
    again = client.post("/dispatch/run", content=reordered,
                        headers={HEADER: key, "Content-Type": "application/json"})

    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true")
    assert again.json() == first.json()
    assert count_rows(engine) == stored


def test_the_key_with_another_body_is_a_422_naming_key_and_run(client, engine, sample_request, monkeypatch):
    key = new_key()
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key}).json()
    stored = count_rows(engine)
    monkeypatch.setattr(planning, "solve_problem", no_solving)

    other = client.post("/dispatch/run", json={**sample_request, "use_milp": False}, headers={HEADER: key})

    assert other.status_code == 422
    [problem] = other.json()["detail"]
    assert (problem["loc"], problem["input"], problem["type"]) == (["header", HEADER], key, "idempotency_key_reused")
    message = other.json()["message"]
    assert message.startswith(f"{HEADER}: this key was sent before with another request")
    assert first["run_id"] in message and key in message
    assert count_rows(engine) == stored
    assert runs_under(engine, key) == [first["run_id"]]


def test_the_key_with_another_body_that_is_bad_too_names_both(client, engine, sample_request):
    key = new_key()
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key}).json()
    stored = count_rows(engine)

    other = client.post("/dispatch/run", json={**sample_request, "load_kw": [1.0] * 95}, headers={HEADER: key})

    assert other.status_code == 422
    locs = [problem["loc"] for problem in other.json()["detail"]]
    assert locs == [["header", HEADER], ["body", "load_kw"]]
    assert first["run_id"] in other.json()["message"]
    assert count_rows(engine) == stored


def test_a_problem_put_first_keeps_the_count_of_those_not_listed():
    error = unprocessable([field_problem(["load_kw", i], "bad") for i in range(60)])
    assert (len(error.problems), error.unlisted) == (51, 10)

    both = with_problem_first(error, {"loc": ["header", HEADER], "msg": "reused", "type": "idempotency_key_reused"})

    assert both.problems[0]["loc"] == ["header", HEADER]
    assert [p["loc"] for p in both.problems[1:50]] == [["body", "load_kw", i] for i in range(49)]
    assert both.problems[50] == {
        "loc": ["body"], "msg": "and 11 more problems, not listed", "type": "too_many_problems"
    }


@pytest.mark.parametrize(
    ("value", "says", "shown"),
    [
        ("", "is empty: a key is 1 to 255 printable ASCII characters", ""),
        ("k" * 256, "has 256 characters; a key has at most 255", "k" * 117 + "..."),
        ("tab\there", "character 4 ('\\t') is not printable ASCII", "tab\there"),
        # Header bytes arrive as Latin-1, where UTF-8's "é" is two characters: named as sent.
        ("café".encode(), "character 4 ('é') is not printable ASCII", "café"),
        # Bytes that are no UTF-8: named as they arrive.
        ("caf\xe9".encode("latin-1"), "character 4 ('é') is not printable ASCII", "café"),
        ("x\xff\xfe".encode("latin-1"), "character 2 ('ÿ') is not printable ASCII", "xÿþ"),
        # DEL, just past "~": a control character, though ASCII.
        ("del\x7f", "character 4 ('\\x7f') is not printable ASCII", "del\x7f"),
    ],
)
def test_a_value_that_is_no_key_is_a_422_naming_header_and_value(client, engine, sample_request, value, says, shown):
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=sample_request, headers={HEADER: value})

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["header", HEADER]
    assert problem["msg"].startswith(says)
    assert problem["input"] == shown
    assert response.json()["message"].startswith(f"{HEADER}: {says}")
    assert count_rows(engine) == before


@pytest.mark.parametrize(
    "spell",
    [
        lambda unique: unique.rjust(255, "k"),
        lambda unique: f"retry 2 of order {unique}",
        lambda unique: f"!{unique}~",
    ],
    ids=["255-characters", "inner-spaces", "first-and-last-printable"],
)
def test_every_key_of_printable_ascii_up_to_255_characters_is_one(client, engine, sample_request, spell):
    key = spell(uuid.uuid4().hex)
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    again = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})

    assert (first.status_code, again.status_code) == (200, 200), first.text
    assert (REPLAYED in first.headers, again.headers.get(REPLAYED)) == (False, "true")
    assert runs_under(engine, key) == [first.json()["run_id"]] == [again.json()["run_id"]]


def test_whitespace_around_a_key_is_no_part_of_it(client, engine, sample_request):
    # HTTP servers strip it from a field value; the test client sends it as given.
    key = new_key()
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    again = client.post("/dispatch/run", json=sample_request, headers={HEADER: f" \t{key}  "})

    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true"), again.text
    assert again.content == first.content
    assert runs_under(engine, key) == [first.json()["run_id"]]


def test_a_key_sent_twice_is_a_422(client, engine, sample_request):
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=sample_request, headers=[(HEADER, "one"), (HEADER, "two")])

    assert response.status_code == 422
    assert response.json()["message"] == f"{HEADER}: sent 2 times ('one', 'two'); send one key"
    assert response.json()["detail"][0]["type"] == "repeated_header"
    assert count_rows(engine) == before


def test_a_body_with_a_number_python_cannot_read_is_a_422_with_a_key_too(client, engine, sample_request):
    # The request's fingerprint is taken before the body is judged: it must not fail on one.
    before = count_rows(engine)
    body = json.dumps(sample_request).replace('"resolution_minutes": 15', f'"resolution_minutes": {"1" * 5000}')
    assert len(body) > 5000

    response = client.post("/dispatch/run", content=body,
                           headers={HEADER: new_key(), "Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "resolution_minutes"]
    assert count_rows(engine) == before


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda body: body.replace('"timeout_ms": 3000', '"timeout_ms": NaN'), ["body", "timeout_ms"]),
        (lambda body: body.replace('"timeout_ms": 3000', '"timeout_ms": 1e999'), ["body", "timeout_ms"]),
        (lambda body: body.replace('"timeout_ms": 3000', '"timeout_ms": 1e-999'), ["body", "timeout_ms"]),
        (lambda body: body[:-1] + ', "note": "\\ud800"}', ["body", "note"]),
        (lambda body: body[:-1] + ', "note": ' + "[" * 500 + "{}" + "]" * 500 + "}", ["body", "note"]),
    ],
    ids=["nan", "overflowing-float", "underflowing-float", "lone-surrogate", "nested-500-deep"],
)
def test_odd_bodies_with_a_key_are_422s_naming_the_field(client, engine, sample_request, change, loc):
    # The request's fingerprint is taken before the body is judged: none of these may fail it.
    before = count_rows(engine)
    body = change(json.dumps(sample_request))

    response = client.post("/dispatch/run", content=body,
                           headers={HEADER: new_key(), "Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert count_rows(engine) == before


def test_two_callers_with_one_key_get_a_run_each(make_app, engine, sample_request):
    key = new_key()
    a, b = ({"Authorization": f"Bearer {token}", HEADER: key} for token in ("token-a", "token-b"))
    before = count_rows(engine)
    with TestClient(make_app("token-a,token-b")) as client:
        first_a = client.post("/dispatch/run", json=sample_request, headers=a)
        first_b = client.post("/dispatch/run", json=sample_request, headers=b)
        assert (first_a.status_code, first_b.status_code) == (200, 200)
        assert first_a.json()["run_id"] != first_b.json()["run_id"]
        assert count_rows(engine)["dispatch_runs"] == before["dispatch_runs"] + 2
        # Each caller is answered with its own run; another body is refused to each alike.
        again_a = client.post("/dispatch/run", json=sample_request, headers=a)
        again_b = client.post("/dispatch/run", json=sample_request, headers=b)
    assert (again_a.json()["run_id"], again_b.json()["run_id"]) == (first_a.json()["run_id"], first_b.json()["run_id"])
    assert again_a.headers[REPLAYED] == again_b.headers[REPLAYED] == "true"
    assert count_rows(engine)["dispatch_runs"] == before["dispatch_runs"] + 2


def test_a_callers_keys_are_kept_under_a_digest_other_than_its_tokens(make_app, engine, sample_request):
    # The token's own SHA-256 is what authenticates it: the stored scope is derived otherwise.
    key = new_key()
    with TestClient(make_app("token-a")) as client:
        for _ in range(2):
            answer = client.post("/dispatch/run", json=sample_request,
                                 headers={"Authorization": "Bearer token-a", HEADER: key})
            assert answer.status_code == 200, answer.text
    [scope] = scopes_under(engine, key)
    assert len(scope) == 64 and scope != hashlib.sha256(b"token-a").hexdigest()


def test_a_number_python_cannot_read_is_not_the_null_sent_before_under_the_key(client, engine, sample_request):
    # Such a number is fingerprinted by what it is, not as null: the bodies differ.
    key = new_key()
    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    assert first.status_code == 200, first.text
    assert sample_request["limits"]["grid_import_max_kw"] is None
    body = json.dumps(sample_request).replace('"grid_import_max_kw": null', f'"grid_import_max_kw": {"9" * 5000}')

    again = client.post("/dispatch/run", content=body, headers={HEADER: key, "Content-Type": "application/json"})

    assert again.status_code == 422, again.text
    assert [p["loc"] for p in again.json()["detail"]] == [["header", HEADER], ["body", "limits", "grid_import_max_kw"]]
    assert runs_under(engine, key) == [first.json()["run_id"]]


def test_a_site_stored_broken_since_a_key_stored_its_run_is_a_500_for_another_body(client, engine, sample_request):
    # Only the 422s of a request are named beside the key's: the operator's fault stays a 500.
    key = new_key()
    request = {**sample_request, "site_id": register_demo_site(engine, sample_request)}
    first = client.post("/dispatch/run", json=request, headers={HEADER: key})
    assert first.status_code == 200, first.text
    with engine.begin() as connection:
        connection.execute(update(sites).where(sites.c.site_id == request["site_id"]).values(currency="??"))

    other = client.post("/dispatch/run", json={**request, "use_milp": False}, headers={HEADER: key})
    again = client.post("/dispatch/run", json=request, headers={HEADER: key})

    assert other.status_code == 500, other.text
    assert other.json()["message"].startswith(f"cannot plan: stored site '{request['site_id']}' is not a valid site")
    # The request the key stored is answered from its run, whatever the site holds now.
    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true")
    assert again.content == first.content


def test_a_request_whose_site_was_removed_since_is_answered_with_its_run(client, engine, sample_request):
    key = new_key()
    request = {**sample_request, "site_id": register_demo_site(engine, sample_request)}
    first = client.post("/dispatch/run", json=request, headers={HEADER: key})
    assert first.status_code == 200, first.text
    assert client.get(f"/dispatch/runs/{first.json()['run_id']}").json()["site_updated_at"] is not None
    remove_sites(engine, [request["site_id"]])
    stored = count_rows(engine)

    again = client.post("/dispatch/run", json=request, headers={HEADER: key})

    assert (again.status_code, again.headers.get(REPLAYED)) == (200, "true"), again.text
    assert again.content == first.content
    assert count_rows(engine) == stored


def test_a_request_the_database_failed_to_store_leaves_its_key_free(client, engine, sample_request, monkeypatch):
    # The database goes away after the run's row (and its key) was written, before its KPIs.
    real_insert = runs_write.bulk_insert

    def failing_insert(connection, table, columns, rows):
        if table is dispatch_kpis:
            raise OperationalError("COPY dispatch_kpis", None, Exception("server closed the connection unexpectedly"))
        return real_insert(connection, table, columns, rows)

    key = new_key()
    before = count_rows(engine)
    monkeypatch.setattr(runs_write, "bulk_insert", failing_insert)

    failed = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})

    assert failed.status_code == 503, failed.text
    assert count_rows(engine) == before
    assert runs_under(engine, key) == []

    monkeypatch.setattr(runs_write, "bulk_insert", real_insert)
    retried = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    assert retried.status_code == 200, retried.text
    assert REPLAYED not in retried.headers
    assert runs_under(engine, key) == [retried.json()["run_id"]]


def test_a_refused_request_stores_no_key_and_may_be_corrected_under_it(client, engine, sample_request):
    key = new_key()
    before = count_rows(engine)

    refused = client.post("/dispatch/run", json={**sample_request, "load_kw": [1.0] * 95}, headers={HEADER: key})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "load_kw"]
    assert count_rows(engine) == before
    assert runs_under(engine, key) == []

    corrected = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    assert corrected.status_code == 200, corrected.text
    assert REPLAYED not in corrected.headers
    assert runs_under(engine, key) == [corrected.json()["run_id"]]


def test_a_bad_body_with_a_key_is_a_422_while_the_database_is_down(client_without_database, sample_request):
    response = client_without_database.post(
        "/dispatch/run", json={**sample_request, "load_kw": [1.0] * 95}, headers={HEADER: new_key()}
    )
    assert response.status_code == 422
    ok = client_without_database.post("/dispatch/run", json=sample_request, headers={HEADER: new_key()})
    assert ok.status_code == 503


def test_a_key_stored_while_its_repeat_was_solving_answers_the_repeat_with_the_first_run(
    client, engine, sample_request, monkeypatch
):
    # Both requests find the key free and solve; the database's unique index lets one store.
    monkeypatch.setattr(planning, "keyed_run", lambda *_args: None)
    key = new_key()
    before = count_rows(engine)

    first = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    second = client.post("/dispatch/run", json=sample_request, headers={HEADER: key})
    other = client.post("/dispatch/run", json={**sample_request, "use_milp": False}, headers={HEADER: key})

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.content == first.content and second.headers[REPLAYED] == "true"
    assert other.status_code == 422 and first.json()["run_id"] in other.json()["message"]
    assert count_rows(engine)["dispatch_runs"] == before["dispatch_runs"] + 1
    assert runs_under(engine, key) == [first.json()["run_id"]]


CONCURRENT_POSTS = 6


async def _post_at_once(app, request: dict, key: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as client:
        return await asyncio.gather(*(
            client.post("/dispatch/run", json=request, headers={HEADER: key}) for _ in range(CONCURRENT_POSTS)
        ))


def test_requests_sent_at_once_with_one_key_store_one_run(make_app, engine, sample_request):
    key = new_key()
    with engine.connect() as connection:
        before = connection.scalar(select(func.count()).select_from(dispatch_runs))

    responses = asyncio.run(_post_at_once(make_app(), sample_request, key))

    assert [r.status_code for r in responses] == [200] * CONCURRENT_POSTS, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert sorted(r.headers.get(REPLAYED, "") for r in responses) == [""] + ["true"] * (CONCURRENT_POSTS - 1)
    assert runs_under(engine, key) == [responses[0].json()["run_id"]]
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(dispatch_runs)) == before + 1


def test_the_header_is_in_the_openapi_description(client):
    operation = client.get("/openapi.json").json()["paths"]["/dispatch/run"]["post"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == HEADER]
    assert (parameter["in"], parameter["required"]) == ("header", False)
    assert parameter["schema"]["maxLength"] == 255
    assert REPLAYED in operation["responses"]["200"]["headers"]
