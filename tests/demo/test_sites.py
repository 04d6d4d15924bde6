"""Site definitions: the YAML file, its error messages, and requests built from a site."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.site import (
    Site,
    SiteConfigError,
    load_sites_yaml,
    site_request,
)
from dispatch_pipeline.demo import demo_site, demo_sites, sites_yaml_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def demo_yaml_data() -> dict:
    return yaml.safe_load(sites_yaml_path().read_text())


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SiteConfigError) as caught:
        load_sites_yaml(path)
    return caught.value.problems


def test_the_demo_sites_are_three_sites_in_three_timezones_and_currencies():
    sites = demo_sites()
    assert [site.site_id for site in sites] == ["KL_MALL", "BERLIN_DEPOT", "PHOENIX_OFFICE"]
    assert {site.timezone for site in sites} == {"Asia/Kuala_Lumpur", "Europe/Berlin", "America/Phoenix"}
    assert {site.currency for site in sites} == {"MYR", "EUR", "USD"}
    assert demo_site("BERLIN_DEPOT").limits.grid_export_max_kw == 100.0


def test_example_yaml_equals_demo_sites():
    assert load_sites_yaml(EXAMPLES / "sites.yaml") == demo_sites()


def test_round_trip_through_yaml_dump(tmp_path):
    data = {"sites": [site.model_dump(mode="json") for site in demo_sites()]}
    assert load_sites_yaml(write(tmp_path, data)) == demo_sites()


def test_errors_name_file_site_and_field(tmp_path):
    data = demo_yaml_data()
    data["sites"][1]["bess"]["soc_min"] = 1.5
    data["sites"][2]["tariff"]["periods"][0]["end"] = "25:00"
    data["sites"][2]["latitude"] = 123.0
    path = write(tmp_path, data)
    problems = problems_of(path)
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}: sites[1] ('BERLIN_DEPOT'): bess.soc_min:")
    assert "(got 1.5)" in problems[0]
    assert problems[1].startswith(f"{path}: sites[2] ('PHOENIX_OFFICE'): latitude:")
    assert "(got 123.0)" in problems[1]
    assert problems[2].startswith(f"{path}: sites[2] ('PHOENIX_OFFICE'): tariff.periods[0].end:")
    assert "'25:00'" in problems[2]


def test_an_unquoted_clock_time_is_read_as_the_time_not_a_base_60_number(tmp_path):
    text = sites_yaml_path().read_text().replace('end: "22:00"', "end: 22:00", 1)
    assert load_sites_yaml(write(tmp_path, text)) == demo_sites()


@pytest.mark.parametrize("written", ["16:40", "0x3E8", "1_000", "0o1750"])
def test_numbers_only_yaml_1_1_reads_as_numbers_are_refused_as_written(tmp_path, written):
    text = sites_yaml_path().read_text().replace("capacity_kwh: 1000", f"capacity_kwh: {written}", 1)
    assert f"capacity_kwh: {written}" in text
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'sites.yaml'}: sites[0] ('KL_MALL'): bess.capacity_kwh:")
    assert f"(got {written!r})" in problems[0]


def test_a_leading_zero_does_not_make_a_yaml_number_octal(tmp_path):
    text = sites_yaml_path().read_text().replace("capacity_kwh: 1000", "capacity_kwh: 01000", 1)
    (site, *_) = load_sites_yaml(write(tmp_path, text))
    assert site.site_id == "KL_MALL" and site.bess.capacity_kwh == 1000.0


def test_tariff_problems_are_reported_per_site(tmp_path):
    data = demo_yaml_data()
    data["sites"][0]["tariff"]["periods"].append(
        {"name": "shoulder", "start": "07:00", "end": "09:00", "days": ["mon"], "buy": 0.3, "sell": 0.2}
    )
    data["sites"][0]["tariff"]["currency"] = "USD"
    problems = problems_of(write(tmp_path, data))
    assert any("sites[0] ('KL_MALL'): tariff: periods[0] 'peak'" in p and "periods[1] 'shoulder'" in p for p in problems)


def test_a_tariff_period_off_the_quarter_hour_is_refused_at_registration_beside_other_faults(tmp_path):
    data = demo_yaml_data()
    data["sites"][0]["tariff"]["periods"][0]["start"] = "08:10"
    data["sites"][0]["bess"]["capacity_kwh"] = -1
    problems = problems_of(write(tmp_path, data))
    assert problems == [
        f"{tmp_path / 'sites.yaml'}: sites[0] ('KL_MALL'): bess.capacity_kwh: Input should be greater than 0 (got -1)",
        f"{tmp_path / 'sites.yaml'}: sites[0] ('KL_MALL'): tariff: periods[0].start '08:10': not on a quarter-hour, "
        "the interval sites are planned in, so part of an interval would pay another period's price",
    ]


def test_currency_mismatch_and_bad_timezone(tmp_path):
    data = demo_yaml_data()
    data["sites"][0]["tariff"]["currency"] = "USD"
    data["sites"][1]["timezone"] = "Europe/Berlinn"
    problems = problems_of(write(tmp_path, data))
    assert problems[0].endswith("sites[0] ('KL_MALL'): tariff: currency 'USD' differs from the site's currency 'MYR'")
    assert problems[1].endswith("sites[1] ('BERLIN_DEPOT'): timezone: unknown IANA timezone (got 'Europe/Berlinn')")


def test_a_battery_rule_names_the_value_it_refused(tmp_path):
    data = demo_yaml_data()
    data["sites"][0]["bess"]["soc_final_min"] = 0.99
    path = write(tmp_path, data)
    assert problems_of(path) == [
        f"{path}: sites[0] ('KL_MALL'): bess.soc_final_min: "
        "must lie within [soc_min, soc_max] = [0.1, 0.95] (got 0.99)"
    ]


def test_duplicate_ids_unknown_fields_and_missing_fields(tmp_path):
    data = demo_yaml_data()
    data["sites"].append(dict(data["sites"][0]))
    data["sites"].append({"site_id": "bad id!", "pv_kw": 3})
    problems = problems_of(write(tmp_path, data))
    assert "sites[3] ('KL_MALL'): site_id 'KL_MALL' already used by sites[0]" in problems[0]
    rest = "\n".join(problems[1:])
    assert "sites[4] ('bad id!'): site_id: String should match pattern" in rest
    assert "sites[4] ('bad id!'): pv_kw: Extra inputs are not permitted (got 3)" in rest
    assert "sites[4] ('bad id!'): timezone: field required" in rest
    assert "sites[4] ('bad id!'): tariff: field required" in rest


@pytest.mark.parametrize("broken", [0, 1], ids=["first_broken", "repeat_broken"])
def test_a_repeated_id_is_named_beside_the_entries_other_faults(tmp_path, broken):
    # Not only once the other faults are fixed: every bad entry of the file in one message.
    data = demo_yaml_data()
    data["sites"] = [data["sites"][0], dict(data["sites"][0])]
    data["sites"][broken]["timezone"] = "Asia/Kuala_Lumpurr"
    path = write(tmp_path, data)
    assert problems_of(path) == [
        f"{path}: sites[{broken}] ('KL_MALL'): timezone: unknown IANA timezone (got 'Asia/Kuala_Lumpurr')",
        f"{path}: sites[1] ('KL_MALL'): site_id 'KL_MALL' already used by sites[0]",
    ]


@pytest.mark.parametrize("field", ["bess", "currency"])
def test_a_site_without_a_battery_or_currency_is_refused_not_defaulted(tmp_path, field):
    data = demo_yaml_data()
    del data["sites"][1][field]
    site_id = data["sites"][1]["site_id"]
    path = write(tmp_path, data)
    assert problems_of(path) == [f"{path}: sites[1] ({site_id!r}): {field}: field required"]


def test_a_tariff_without_a_currency_is_in_the_sites(tmp_path):
    data = demo_yaml_data()
    berlin = data["sites"][1]
    assert berlin["currency"] == "EUR"
    del berlin["tariff"]["currency"]
    sites = {site.site_id: site for site in load_sites_yaml(write(tmp_path, data))}
    assert sites[berlin["site_id"]].tariff.currency == "EUR"


def test_an_invalid_site_currency_is_reported_once(tmp_path):
    data = demo_yaml_data()
    data["sites"][1]["currency"] = "eur"
    del data["sites"][1]["tariff"]["currency"]
    path = write(tmp_path, data)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: sites[1] ('BERLIN_DEPOT'): currency: String should match pattern")


def test_a_site_built_in_python_takes_a_request_battery_that_states_its_size():
    from dispatch_pipeline.core.request import Battery

    site = demo_site("KL_MALL")
    rebuilt = Site.model_validate({**site.model_dump(), "bess": Battery(**site.bess.model_dump())})
    assert rebuilt == site


def test_a_tariff_in_another_currency_than_the_sites_is_refused(tmp_path):
    data = demo_yaml_data()
    data["sites"][1]["tariff"]["currency"] = "USD"
    path = write(tmp_path, data)
    assert problems_of(path) == [
        f"{path}: sites[1] ('BERLIN_DEPOT'): tariff: currency 'USD' differs from the site's currency 'EUR'"
    ]


@pytest.mark.parametrize(
    ("bess", "missing"),
    [
        ({}, ["capacity_kwh", "max_charge_kw", "max_discharge_kw"]),
        ({"capacity_kwh": 400.0}, ["max_charge_kw", "max_discharge_kw"]),
    ],
)
def test_a_battery_without_its_size_and_ratings_is_refused(tmp_path, bess, missing):
    data = demo_yaml_data()
    data["sites"][1]["bess"] = bess
    site_id = data["sites"][1]["site_id"]
    path = write(tmp_path, data)
    assert problems_of(path) == [f"{path}: sites[1] ({site_id!r}): bess.{name}: field required" for name in missing]


def test_a_batterys_operating_settings_keep_the_contract_defaults(tmp_path):
    data = demo_yaml_data()
    data["sites"][1]["bess"] = {"capacity_kwh": 400.0, "max_charge_kw": 200.0, "max_discharge_kw": 150.0}
    (site,) = [s for s in load_sites_yaml(write(tmp_path, data)) if s.site_id == data["sites"][1]["site_id"]]
    assert site.bess.model_dump() == {
        "capacity_kwh": 400.0, "max_charge_kw": 200.0, "max_discharge_kw": 150.0,
        "soc_min": 0.1, "soc_max": 0.9, "soc_initial": 0.5, "soc_final_min": None,
        "charge_efficiency": 0.95, "discharge_efficiency": 0.95, "cycle_cost_per_kwh": 0.0,
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sites: [a: 1\n", "not valid YAML"),
        ("", "must be a list of sites, or a mapping with a 'sites' list (got nothing)"),
        ("- site_id: X\n", "[0] ('X'): timezone: field required"),
        ("[]\n", "is an empty list: list at least one site"),
        ("3\n", "must be a list of sites, or a mapping with a 'sites' list (got int)"),
        ("site_id: X\n", "has no top-level 'sites' list (one site's fields: `sites add` registers a single site)"),
        ("site: {site_id: X}\n", "has no top-level 'sites' list"),
        ("sites: {}\n", "'sites' must be a list (got dict)"),
        ("sites: []\nextra: 1\n", "unknown top-level key(s) ['extra']"),
        ("sites: []\n", "'sites' is empty: list at least one site"),
        ("sites: [3]\n", "sites[0]: must be a mapping (got int)"),
    ],
)
def test_malformed_files(tmp_path, text, fragment):
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert problems[0].startswith(str(path)) and fragment in problems[0], problems


def test_an_integer_too_long_to_read_is_named_with_its_field(tmp_path):
    site = demo_site("KL_MALL").model_dump(mode="json")
    text = yaml.safe_dump({"sites": [{**site, "pv_kwp": "PV"}]}).replace("pv_kwp: PV", "pv_kwp: " + "9" * 5001)
    assert "9" * 5001 in text
    problems = problems_of(write(tmp_path, text))
    assert problems == [f"{tmp_path / 'sites.yaml'}: sites[0] ('KL_MALL'): pv_kwp: Input should be a valid number (got an integer of 5001 digits)"]


def test_missing_file_names_the_path(tmp_path):
    problems = problems_of(tmp_path / "nope.yaml")
    assert problems == [f"{tmp_path / 'nope.yaml'}: cannot read (No such file or directory)"]


def test_site_field_rules():
    base = demo_site("KL_MALL").model_dump()
    for field, value, fragment in [
        ("longitude", 181.0, "longitude"),
        ("pv_kwp", -1.0, "pv_kwp"),
        ("site_id", "x" * 65, "site_id"),
        ("currency", "RM", "currency"),
        ("altitude_m", float("inf"), "altitude_m"),
    ]:
        with pytest.raises(ValidationError, match=fragment):
            Site.model_validate(base | {field: value})


def test_site_request_expands_the_tariff_on_the_local_day():
    site = demo_site("BERLIN_DEPOT")
    day = site.local_day("2024-10-28")  # Monday after the clocks went back
    load = np.full(day.intervals, 100.0)
    request = site_request(site, dt.date(2024, 10, 28), load, np.zeros(day.intervals))
    assert request["date"] == "2024-10-28" and request["timezone"] == "Europe/Berlin"
    buy = request["tariff"]["buy"]
    assert buy[6 * 4] == 0.27 and buy[6 * 4 - 1] == 0.21 and buy[17 * 4] == 0.34 and buy[20 * 4] == 0.21
    assert request["tariff"]["demand_charge_per_kw"] == 0.30
    assert request["bess"]["capacity_kwh"] == 400.0 and request["limits"]["grid_export_max_kw"] == 100.0
    assert build_problem(request).intervals == 96


def test_site_request_takes_given_prices_and_merges_overrides():
    site = demo_site("KL_MALL")
    n = 100 - 4  # KL has no DST
    request = site_request(
        site, "2024-03-15", [50.0] * n, None, buy=[0.1] * n, sell=[-0.05] * n,
        timeout_ms=1000, bess={"soc_initial": 0.25}, weights={"curtail": 0.0},
    )
    assert "pv_kw" not in request
    assert request["tariff"]["buy"] == [0.1] * n and request["tariff"]["sell"] == [-0.05] * n
    assert request["timeout_ms"] == 1000
    assert request["bess"]["soc_initial"] == 0.25 and request["bess"]["capacity_kwh"] == 1000.0
    assert request["weights"] == {"cost": 1.0, "curtail": 0.0, "violation": 1000.0}
    problem = build_problem(request, pv_kw=[0.0] * n)
    assert problem.sell[0] == -0.05


def test_site_request_rejects_arrays_of_the_wrong_length():
    site = demo_site("BERLIN_DEPOT")
    with pytest.raises(ValueError, match=r"load_kw: has 96 values, but 2024-03-31 in Europe/Berlin .* has 92"):
        site_request(site, "2024-03-31", [1.0] * 96, [0.0] * 92)
    with pytest.raises(ValueError, match="sell: has 3 values"):
        site_request(site, "2024-03-30", [1.0] * 24, [0.0] * 24, sell=[0.0] * 3, resolution_minutes=60)
