"""Every bad-input rule of the contract: HTTP 422 naming the field (and value), nothing written."""

from __future__ import annotations

import codecs
import copy
import json
from typing import Any

import pytest

from tests.api.helpers import count_rows

pytestmark = pytest.mark.postgres


def _set(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    *parents, last = path.split(".")
    target = changed
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = value
    return changed


# (case id, field path, value, loc the error must name, text the message must show)
BAD_FIELDS = [
    ("unequal-lengths", "tariff.buy", [0.4] * 95, ["tariff", "buy"], "95"),
    ("load-too-short-for-day", "load_kw", [80.0] * 95, ["load_kw"], "95"),
    ("negative-load", "load_kw", [-1.0] + [80.0] * 95, ["load_kw", 0], "-1.0"),
    ("negative-pv", "pv_kw", [-0.5] + [0.0] * 95, ["pv_kw", 0], "-0.5"),
    ("string-in-load", "load_kw", ["80"] + [80.0] * 95, ["load_kw", 0], '"80"'),
    ("string-price", "tariff.sell", ["cheap"] + [0.2] * 95, ["tariff", "sell", 0], "cheap"),
    ("resolution-7", "resolution_minutes", 7, ["resolution_minutes"], "7"),
    ("resolution-string", "resolution_minutes", "15", ["resolution_minutes"], '"15"'),
    ("resolution-float", "resolution_minutes", 15.0, ["resolution_minutes"], "15.0"),
    ("capacity-zero", "bess.capacity_kwh", 0, ["bess", "capacity_kwh"], "0"),
    ("capacity-negative", "bess.capacity_kwh", -10.0, ["bess", "capacity_kwh"], "-10.0"),
    ("negative-charge-rating", "bess.max_charge_kw", -1.0, ["bess", "max_charge_kw"], "-1.0"),
    ("negative-discharge-rating", "bess.max_discharge_kw", -1.0, ["bess", "max_discharge_kw"], "-1.0"),
    ("soc-min-negative", "bess.soc_min", -0.1, ["bess", "soc_min"], "-0.1"),
    ("soc-max-above-1", "bess.soc_max", 1.2, ["bess", "soc_max"], "1.2"),
    ("soc-min-above-max", "bess", {"soc_min": 0.95, "soc_max": 0.9}, ["bess", "soc_max"], "0.95"),
    ("soc-initial-above-1", "bess.soc_initial", 1.5, ["bess", "soc_initial"], "1.5"),
    ("soc-initial-negative", "bess.soc_initial", -0.2, ["bess", "soc_initial"], "-0.2"),
    ("soc-final-below-band", "bess.soc_final_min", 0.05, ["bess", "soc_final_min"], "0.05"),
    ("soc-final-above-band", "bess.soc_final_min", 0.95, ["bess", "soc_final_min"], "0.95"),
    ("charge-efficiency-zero", "bess.charge_efficiency", 0.0, ["bess", "charge_efficiency"], "0.0"),
    ("discharge-efficiency-above-1", "bess.discharge_efficiency", 1.01, ["bess", "discharge_efficiency"], "1.01"),
    ("negative-import-limit", "limits.grid_import_max_kw", -5.0, ["limits", "grid_import_max_kw"], "-5.0"),
    ("negative-export-limit", "limits.grid_export_max_kw", -5.0, ["limits", "grid_export_max_kw"], "-5.0"),
    ("negative-transformer-limit", "limits.transformer_max_kw", -1.0, ["limits", "transformer_max_kw"], "-1.0"),
    ("negative-cost-weight", "weights.cost", -1.0, ["weights", "cost"], "-1.0"),
    ("negative-curtail-weight", "weights.curtail", -0.2, ["weights", "curtail"], "-0.2"),
    ("negative-violation-weight", "weights.violation", -1.0, ["weights", "violation"], "-1.0"),
    ("negative-cycle-cost", "bess.cycle_cost_per_kwh", -0.01, ["bess", "cycle_cost_per_kwh"], "-0.01"),
    ("negative-demand-charge", "tariff.demand_charge_per_kw", -2.0, ["tariff", "demand_charge_per_kw"], "-2.0"),
    ("site-id-space", "site_id", "DEMO SITE", ["site_id"], "DEMO SITE"),
    ("site-id-empty", "site_id", "", ["site_id"], '""'),
    ("site-id-too-long", "site_id", "S" * 65, ["site_id"], "SSSS"),
    ("site-id-injection", "site_id", "x'; DROP TABLE dispatch_runs; --", ["site_id"], "DROP TABLE"),
    ("site-id-number", "site_id", 42, ["site_id"], "42"),
    ("timeout-too-small", "timeout_ms", 99, ["timeout_ms"], "99"),
    ("timeout-too-large", "timeout_ms", 600_001, ["timeout_ms"], "600001"),
    ("timeout-float", "timeout_ms", 3000.5, ["timeout_ms"], "3000.5"),
    ("unknown-field", "surprise", 1, ["surprise"], "1"),
    ("unknown-battery-field", "bess.voltage", 800, ["bess", "voltage"], "800"),
    ("unknown-timezone", "timezone", "Mars/Olympus", ["timezone"], "Mars/Olympus"),
    # The zone database opens names as files: a directory, or a name no file system allows.
    ("timezone-is-a-region", "timezone", "Asia", ["timezone"], "Asia"),
    ("timezone-too-long", "timezone", "A" * 5000, ["timezone"], "AAAA"),
    ("bad-date", "date", "2024-02-30", ["date"], "2024-02-30"),
    # Real dates whose local day cannot be written as UTC timestamps.
    ("date-last-of-calendar", "date", "9999-12-31", ["date"], "9999-12-31"),
    ("date-first-of-calendar", "date", "0001-01-01", ["date"], "0001-01-01"),
    ("use-milp-string", "use_milp", "yes", ["use_milp"], "yes"),
    ("too-many-intervals", "load_kw", [80.0] * 2017, ["load_kw"], "has 2017 values; at most 2016 intervals are accepted"),
]


@pytest.mark.parametrize(("path", "value", "loc", "shown"), [c[1:] for c in BAD_FIELDS],
                         ids=[c[0] for c in BAD_FIELDS])
def test_bad_field_is_422_naming_field_and_value(client, engine, sample_request, path, value, loc, shown):
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=_set(sample_request, path, value))

    assert response.status_code == 422, response.text
    body = response.json()
    assert ["body", *loc] in [problem["loc"] for problem in body["detail"]]
    assert shown in body["message"]
    assert count_rows(engine) == before


@pytest.mark.parametrize(("path", "value", "loc", "shown"), [c[1:] for c in BAD_FIELDS],
                         ids=[c[0] for c in BAD_FIELDS])
def test_bad_field_is_the_same_422_while_the_database_is_down(
    client, client_without_database, sample_request, path, value, loc, shown
):
    # The client's own mistake comes first: a 503 would have it retry the same request.
    request = _set(sample_request, path, value)

    response = client_without_database.post("/dispatch/run", json=request)

    assert response.status_code == 422, response.text
    assert ["body", *loc] in [problem["loc"] for problem in response.json()["detail"]]
    assert shown in response.json()["message"]
    assert response.json() == client.post("/dispatch/run", json=request).json()


@pytest.mark.parametrize("missing", ["site_id", "load_kw", "tariff"])
def test_missing_required_field_is_422_while_the_database_is_down(client_without_database, sample_request, missing):
    request = {k: v for k, v in sample_request.items() if k != missing}

    response = client_without_database.post("/dispatch/run", json=request)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", missing]


def test_wrong_length_for_a_dst_day_is_422_while_the_database_is_down(client_without_database, sample_request):
    request = {**sample_request, "date": "2024-03-31", "timezone": "Europe/Berlin"}

    response = client_without_database.post("/dispatch/run", json=request)

    assert response.status_code == 422, response.text
    assert "92" in response.json()["message"] and "96" in response.json()["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["load_kw", "pv_kw"])
def test_non_finite_numbers_are_422(client, engine, sample_request, field, literal):
    # json.dumps cannot write these as the contract's bad input; splice the literal in.
    text = json.dumps(sample_request).replace(f'"{field}": [', f'"{field}": [{literal}, ', 1)
    text = text.replace(f"[{literal}, {sample_request[field][0]}, ", f"[{literal}, ", 1)
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=text, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field, 0]
    assert literal in response.json()["message"]
    assert count_rows(engine) == before


def test_wrong_length_for_a_dst_day(client, engine, sample_request):
    # Berlin springs forward on 2024-03-31: 92 quarter-hours, not the 96 sent.
    request = {**sample_request, "date": "2024-03-31", "timezone": "Europe/Berlin"}
    before = count_rows(engine)

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    assert "92" in response.json()["message"] and "96" in response.json()["message"]
    assert count_rows(engine) == before


def test_a_missing_field_and_an_array_of_the_wrong_length_are_named_together(client, engine, sample_request):
    request = {k: v for k, v in sample_request.items() if k != "tariff"} | {"load_kw": [1.0, 2.0]}

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["loc"], d["msg"][:22]) for d in detail] == [
        (["body", "tariff"], "Field required"),
        (["body", "load_kw"], "has 2 values, but 2024"),
    ]
    assert detail[1]["msg"].endswith("has 96 intervals")


@pytest.mark.parametrize("missing", ["site_id", "load_kw", "tariff"])
def test_missing_required_field_is_422(client, engine, sample_request, missing):
    request = {k: v for k, v in sample_request.items() if k != missing}

    response = client.post("/dispatch/run", json=request)

    assert response.status_code == 422
    problem = response.json()["detail"][0]
    assert problem["loc"] == ["body", missing]
    # The input of a missing field would be the whole enclosing request: not echoed.
    assert "input" not in problem and "(got " not in response.json()["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00", b"", b'"text"'])
def test_body_that_is_not_a_json_object_is_422(client, engine, body):
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["message"]
    assert count_rows(engine) == before


@pytest.mark.parametrize("field", ["site_id", "timezone", "date"])
def test_lone_surrogate_is_422_echoing_it(client, engine, sample_request, field):
    # Valid JSON text ("\\ud800"), yet no UTF-8 string: the answer must still be encodable.
    text = json.dumps({**sample_request, field: "\ud800"})
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=text, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["loc"] == ["body", field]
    assert problem["input"] == "\ud800"
    assert count_rows(engine) == before


@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_past_pythons_digit_limit_is_named_at_its_field(client, engine, sample_request, sign):
    text = json.dumps(sample_request).replace('"load_kw": [', f'"load_kw": [{sign}{"9" * 5000}, ', 1)
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=text, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "load_kw", 0]
    assert "an integer of 5000 digits" in response.json()["message"]
    assert count_rows(engine) == before


@pytest.mark.parametrize(("old", "new", "loc"), [
    ('"cost": 1.0', '"cost": 1e-400', ["body", "weights", "cost"]),
    ('"load_kw": [', '"load_kw": [-1e-400, ', ["body", "load_kw", 0]),
])
def test_a_number_a_float_holds_only_as_zero_is_422_not_zero(client, engine, sample_request, old, new, loc):
    # As 0, a weight of 1e-400 would slip past "0 or at least 1e-9", and -1e-400 past "load_kw >= 0".
    text = json.dumps({**sample_request, "weights": {"cost": 1.0, "curtail": 0.2, "violation": 1000.0}})
    assert old in text
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=text.replace(old, new, 1), headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert "e-400, too close to 0 for a number to hold: write 0" in response.json()["message"]
    assert count_rows(engine) == before


def test_a_repeated_key_is_422_not_the_last_value_silently(client, engine, sample_request):
    text = json.dumps(sample_request).replace('"site_id": ', '"site_id": "FIRST", "site_id": ', 1)
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=text, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["message"] == "request: body repeats the key 'site_id' in one object"
    assert count_rows(engine) == before


def test_thousands_of_problems_are_counted_past_the_first_fifty(client, engine, sample_request):
    weights = {f"unknown_{n}": 1 for n in range(5000)}
    before = count_rows(engine)

    response = client.post("/dispatch/run", json={**sample_request, "weights": weights})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 51 and detail[0]["loc"] == ["body", "weights", "unknown_0"]
    assert detail[-1]["msg"] == "and 4950 more problems, not listed"
    assert len(response.content) < 20_000
    assert count_rows(engine) == before


def test_body_over_one_megabyte_is_413(client, engine, sample_request):
    padded = json.dumps({**sample_request, "padding": "x" * 1_000_001})
    before = count_rows(engine)

    by_length = client.post("/dispatch/run", content=padded, headers={"content-type": "application/json"})
    streamed = client.post(
        "/dispatch/run",
        content=(padded[i : i + 65536].encode() for i in range(0, len(padded), 65536)),
        headers={"content-type": "application/json"},
    )

    assert by_length.status_code == 413
    assert streamed.status_code == 413
    assert count_rows(engine) == before


def test_a_site_id_outside_its_pattern_is_refused_and_an_odd_valid_one_round_trips(client, engine, sample_request):
    # That SQL sees site ids only as bound parameters is
    # tests/storage/test_storage_runs.py::test_text_reaches_sql_only_as_parameters.
    request = {**sample_request, "site_id": "a'b"}
    assert client.post("/dispatch/run", json=request).status_code == 422
    assert client.get("/dispatch/latest", params={"site_id": "x' OR '1'='1"}).status_code == 422
    odd_but_valid = {**sample_request, "site_id": "--.._"}
    assert client.post("/dispatch/run", json=odd_but_valid).status_code == 200
    assert client.get("/dispatch/latest", params={"site_id": "--.._"}).json()["site_id"] == "--.._"


@pytest.mark.parametrize(
    ("method", "path", "params", "loc", "fragment"),
    [
        ("get", "/dispatch/latest", [("site_id", "DEMO"), ("dat", "2099-01-01")], ["query", "dat"],
         "unknown query parameter (this endpoint takes site_id, date)"),
        ("get", "/dispatch/latest", [("site_id", "DEMO"), ("site_id", "OTHER")], ["query", "site_id"],
         "given 2 times ('DEMO', 'OTHER'); give it once"),
        ("get", "/dispatch/runs/00000000-0000-0000-0000-000000000000", [("verbose", "1")], ["query", "verbose"],
         "unknown query parameter (this endpoint takes none)"),
        ("post", "/dispatch/run", [("use_milp", "false")], ["query", "use_milp"],
         "unknown query parameter (this endpoint takes none)"),
    ],
    ids=["typo", "repeated", "runs-takes-none", "post-takes-none"],
)
def test_a_query_parameter_the_endpoint_does_not_take_is_422_not_ignored(
    client, engine, sample_request, method, path, params, loc, fragment
):
    before = count_rows(engine)

    if method == "post":
        response = client.post(path, params=params, json=sample_request)
    else:
        response = client.get(path, params=params)

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["msg"]) == (loc, fragment)
    assert count_rows(engine) == before


@pytest.mark.parametrize("path", ["/dispatch/latest?site_id=DEMO", "/dispatch/runs/00000000-0000-0000-0000-000000000000"])
def test_a_body_sent_with_a_get_is_422_not_ignored(client, path):
    # {"date": ...} in the body would otherwise answer with the latest run of any day.
    response = client.request("GET", path, content=b'{"date": "2024-03-15"}', headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["msg"]) == (["body"], "this endpoint takes no body: send its parameters in the query")


def test_a_chunked_get_without_a_body_is_answered(client):
    def nothing():
        yield b""

    response = client.request("GET", "/dispatch/latest?site_id=NO_RUNS_CHUNKED", content=nothing())

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 404, response.text  # no run stored: not a 422 for a body


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16"],
)
def test_a_body_not_sent_as_json_is_415_and_writes_nothing(client, engine, sample_request, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    before = count_rows(engine)

    response = client.post("/dispatch/run", content=json.dumps(sample_request), headers=headers)

    assert response.status_code == 415, response.text
    shown = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
    assert response.json()["message"] == (
        f"the body must be sent as Content-Type: application/json in UTF-8 (got {shown})"
    )
    assert count_rows(engine) == before


def test_a_content_type_sent_twice_is_415(client, engine, sample_request):
    before = count_rows(engine)

    response = client.post(
        "/dispatch/run", content=json.dumps(sample_request),
        headers=[("content-type", "application/json"), ("content-type", "text/plain")],
    )

    assert response.status_code == 415, response.text
    assert response.json()["message"] == (
        "Content-Type is sent 2 times ('application/json', 'text/plain'): send it once"
    )
    assert count_rows(engine) == before


@pytest.mark.parametrize(("body", "got"), [(b"[1, 2, 3]", "an array"), (b"null", "null"), (b'"text"', "a string")])
def test_a_body_that_is_json_but_not_an_object_names_its_json_type(client, body, got):
    response = client.post("/dispatch/run", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["message"].endswith(f"must be a JSON object (got {got})")


def test_a_json_body_in_utf_16_is_422_naming_the_encoding(client, engine, sample_request):
    before = count_rows(engine)

    response = client.post(
        "/dispatch/run", content=json.dumps(sample_request).encode("utf-16"),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["message"] == "request: body is not UTF-8 text (line 1, byte 0: 0xff)"
    assert count_rows(engine) == before


def test_a_json_body_after_a_utf_8_byte_order_mark_is_accepted(client, sample_request):
    response = client.post(
        "/dispatch/run", content=codecs.BOM_UTF8 + json.dumps(sample_request).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_a_declared_utf_8_charset_is_accepted(client, sample_request):
    response = client.post(
        "/dispatch/run", content=json.dumps(sample_request),
        headers={"content-type": "Application/JSON; Charset=\"UTF-8\""},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("date", [20240315, 2024.0315])
def test_a_message_that_words_its_value_shows_it_once(client, client_without_database, sample_request, date):
    expected = f"date: expected a calendar date YYYY-MM-DD, not a number (got {date})"

    for answered_by in (client, client_without_database):
        response = answered_by.post("/dispatch/run", json={**sample_request, "date": date})

        assert response.status_code == 422, response.text
        assert response.json()["message"] == expected
        assert response.json()["detail"][0]["input"] == date
