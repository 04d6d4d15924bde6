"""A site's tariff history: which tariff prices a local date, and how a history is checked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dispatch_pipeline.core.site import Site, SiteConfigError, load_sites_yaml, site_request
from dispatch_pipeline.core.tariffs import TouTariff, expand_tariff
from dispatch_pipeline.demo import demo_site

SPRING_FORWARD = dt.date(2025, 3, 30)  # Berlin: 92 quarter-hours
FIRST_CHANGE = dt.date(2025, 1, 1)
OLDEST = {
    "demand_charge_per_kw": 0.05,
    "default": {"buy": 0.15, "sell": 0.05},
    "periods": [{"name": "evening", "start": "17:00", "end": "20:00", "days": ["mon", "tue", "wed", "thu", "fri"],
                 "buy": 0.40, "sell": 0.05}],
}
WINTER = {"demand_charge_per_kw": 0.10, "default": {"buy": 0.18, "sell": 0.06}}


def berlin(history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """BERLIN_DEPOT as a sites.yaml entry, with `history` as its tariff_history."""
    entry = demo_site("BERLIN_DEPOT").model_dump(mode="json")
    if history is not None:
        entry["tariff_history"] = history
    return entry


TWO_CHANGES = [{"until": "2025-01-01", "tariff": OLDEST}, {"until": "2025-03-30", "tariff": WINTER}]


def site_with_history(history: list[dict[str, Any]] = TWO_CHANGES) -> Site:
    return Site.model_validate(berlin(history))


def problems_of(tmp_path: Path, *entries: dict[str, Any]) -> list[str]:
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"sites": list(entries)}, sort_keys=False))
    with pytest.raises(SiteConfigError) as caught:
        load_sites_yaml(path)
    return [problem.removeprefix(f"{path}: ") for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("date", "field", "demand_charge"),
    [
        (dt.date(2024, 12, 31), "tariff_history[0]", 0.05),  # the day before the first change
        (FIRST_CHANGE, "tariff_history[1]", 0.10),  # `until` is the next tariff's first day
        (dt.date(2025, 3, 29), "tariff_history[1]", 0.10),
        (SPRING_FORWARD, "tariff", 0.30),  # a DST day is priced by its date like any other
        (dt.date(2030, 1, 1), "tariff", 0.30),
    ],
)
def test_the_tariff_in_force_changes_on_the_until_date(date, field, demand_charge):
    site = site_with_history()
    in_force = site.tariff_in_force(date)
    assert in_force.field == field
    assert site.tariff_on(date) == in_force.tariff
    assert in_force.tariff.demand_charge_per_kw == demand_charge


def test_the_tariff_in_force_says_when_it_applies():
    site = site_with_history()
    assert site.tariff_in_force("2024-06-01").describe() == "tariff_history[0] (until 2025-01-01)"
    assert site.tariff_in_force("2025-02-01").describe() == "tariff_history[1] (since 2025-01-01, until 2025-03-30)"
    assert site.tariff_in_force("2025-04-01").describe() == "tariff (since 2025-03-30)"


def test_a_site_without_history_has_one_tariff_on_every_date():
    site = demo_site("BERLIN_DEPOT")
    assert site.tariff_history == ()
    for date in (dt.date(1990, 1, 1), SPRING_FORWARD, dt.date(2200, 12, 31)):
        in_force = site.tariff_in_force(date)
        assert (in_force.tariff, in_force.describe()) == (site.tariff, "tariff")


def test_a_request_is_priced_and_billed_by_the_tariff_of_its_local_day():
    site = site_with_history()
    winter = TouTariff.model_validate({**WINTER, "currency": "EUR"})
    before = site_request(site, "2025-03-29", np.zeros(96), np.zeros(96))
    day = site.local_day("2025-03-29")
    assert before["tariff"] == {
        "buy": expand_tariff(winter, day)[0].tolist(), "sell": expand_tariff(winter, day)[1].tolist(),
        "demand_charge_per_kw": 0.10,
    }
    # Every interval of the 92-interval DST day on which the site's `tariff` took over is on it.
    after = site_request(site, SPRING_FORWARD, np.zeros(92), np.zeros(92))
    buy, sell = expand_tariff(site.tariff, site.local_day(SPRING_FORWARD))
    assert len(buy) == 92
    assert after["tariff"] == {"buy": buy.tolist(), "sell": sell.tolist(), "demand_charge_per_kw": 0.30}


def test_history_tariffs_take_the_sites_currency_and_round_trip_through_a_dump():
    site = site_with_history()
    assert {entry.tariff.currency for entry in site.tariff_history} == {"EUR"}
    dumped = site.model_dump(mode="json")
    assert [entry["until"] for entry in dumped["tariff_history"]] == ["2025-01-01", "2025-03-30"]
    assert Site.model_validate(dumped) == site


def test_a_site_without_history_is_dumped_without_the_field():
    # Stored and listed as before the field existed, so a release without it still reads the site.
    assert "tariff_history" not in demo_site("BERLIN_DEPOT").model_dump(mode="json")
    assert "tariff_history" not in site_with_history([]).model_dump(mode="json")


def test_an_until_date_that_is_not_after_the_previous_one_is_named(tmp_path):
    history = [
        {"until": "2025-03-30", "tariff": OLDEST},
        {"until": "2025-01-01", "tariff": WINTER},
        {"until": "2025-01-01", "tariff": WINTER},
    ]
    assert problems_of(tmp_path, berlin(history)) == [
        "sites[0] ('BERLIN_DEPOT'): tariff_history[1].until: must be after tariff_history[0].until "
        "2025-03-30 (got 2025-01-01); list the tariffs oldest first",
        "sites[0] ('BERLIN_DEPOT'): tariff_history[2].until: must be after tariff_history[1].until "
        "2025-01-01 (got 2025-01-01); list the tariffs oldest first",
    ]


def test_a_history_tariff_in_another_currency_is_named_with_the_order(tmp_path):
    history = [{"until": "2025-03-30", "tariff": OLDEST}, {"until": "2025-01-01", "tariff": {**WINTER, "currency": "USD"}}]
    assert problems_of(tmp_path, berlin(history)) == [
        "sites[0] ('BERLIN_DEPOT'): tariff_history[1].until: must be after tariff_history[0].until "
        "2025-03-30 (got 2025-01-01); list the tariffs oldest first",
        "sites[0] ('BERLIN_DEPOT'): tariff_history[1].tariff: currency 'USD' differs from the site's currency 'EUR'",
    ]


def test_a_history_tariff_is_checked_as_the_sites_tariff_is(tmp_path):
    off_grid = {**OLDEST, "periods": [{**OLDEST["periods"][0], "start": "17:10"}]}
    overlapping = {**WINTER, "periods": [
        {"name": "a", "start": "08:00", "end": "12:00", "days": ["mon"], "buy": 0.3, "sell": 0.1},
        {"name": "b", "start": "11:00", "end": "13:00", "days": ["mon"], "buy": 0.3, "sell": 0.1},
    ]}
    history = [{"until": "2024-01-01", "tariff": off_grid}, {"until": "2025-01-01", "tariff": overlapping}]
    assert problems_of(tmp_path, berlin(history)) == [
        "sites[0] ('BERLIN_DEPOT'): tariff_history[0].tariff: periods[0].start '17:10': not on a quarter-hour, "
        "the interval sites are planned in, so part of an interval would pay another period's price",
        "sites[0] ('BERLIN_DEPOT'): tariff_history[1].tariff: periods[0] 'a' (08:00-12:00 on mon) overlaps "
        "periods[1] 'b' (11:00-13:00 on mon) on mon",
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"until": 20250101, "tariff": WINTER},
         "tariff_history[0].until: expected a calendar date YYYY-MM-DD, not a number (got 20250101)"),
        ({"until": "2025-02-30", "tariff": WINTER},
         "tariff_history[0].until: expected a calendar date YYYY-MM-DD; there is no such day (got '2025-02-30')"),
        ({"until": "1500-01-01", "tariff": WINTER},
         "tariff_history[0].until: must lie within 1678-01-01 to 2261-12-31 (got 1500-01-01)"),
        ({"tariff": WINTER}, "tariff_history[0].until: field required"),
        ({"until": "2025-01-01"}, "tariff_history[0].tariff: field required"),
        ({"until": "2025-01-01", "tariff": WINTER, "since": "2024-01-01"},
         "tariff_history[0].since: Extra inputs are not permitted (got '2024-01-01')"),
    ],
)
def test_a_bad_history_entry_names_its_field_and_value(tmp_path, entry, problem):
    assert problems_of(tmp_path, berlin([entry])) == [f"sites[0] ('BERLIN_DEPOT'): {problem}"]


def test_an_unquoted_yaml_date_is_read_as_the_date(tmp_path):
    path = tmp_path / "sites.yaml"
    entry = yaml.safe_dump({"sites": [berlin()]}, sort_keys=False)
    history = "  tariff_history:\n  - until: 2025-03-30\n    tariff: {default: {buy: 0.18, sell: 0.06}}\n"
    path.write_text(entry + history)
    [site] = load_sites_yaml(path)
    assert site.tariff_history[0].until == SPRING_FORWARD


@pytest.mark.parametrize(("key", "shown"), [("true", "True"), ("1", "1"), ("~", "None")])
def test_a_key_that_yaml_reads_as_no_text_is_named_at_its_mapping(tmp_path, key, shown):
    # `true:` (or `1:`) is read as a boolean (an integer): the key is the value at fault, and the
    # tariff the field, not an item "[1]" of it.
    path = tmp_path / "sites.yaml"
    entry = yaml.safe_dump({"sites": [berlin()]}, sort_keys=False)
    path.write_text(entry.replace("  tariff:\n", f"  tariff:\n    {key}: 0.3\n", 1))
    with pytest.raises(SiteConfigError) as caught:
        load_sites_yaml(path)
    assert caught.value.problems == [f"{path}: sites[0] ('BERLIN_DEPOT'): tariff: has a key that is not text (got {shown})"]
