"""`dispatch-pipeline sites`: a refused command leaves the database as it found it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from dispatch_pipeline.cli import main
from dispatch_pipeline.cli.sites import _past_tariff_change
from dispatch_pipeline.core.site import parse_site
from dispatch_pipeline.demo import sites_yaml_path
from dispatch_pipeline.storage import get_site, list_site_ids, open_database
from tests.postgres import tables

CASE_CLASH = "site_id: differs only in case from 'KL_MALL', another site given with it"


def sites_file_with_ids_differing_only_in_case(tmp_path: Path) -> Path:
    """The demo's sites, and KL_MALL's entry again as kl_mall, ahead of them: refused with or without
    the tables, the file's ids are compared in id order, so the same one is named."""
    data = yaml.safe_load(sites_yaml_path().read_text(encoding="utf-8"))
    assert data["sites"][0]["site_id"] == "KL_MALL"
    data["sites"].insert(0, {**data["sites"][0], "site_id": "kl_mall"})
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_removing_a_site_from_a_database_without_tables_creates_nothing(url, capsys):
    # A mistyped --database-url: the removal is refused, and leaves no database (or schema) behind.
    assert main(["sites", "remove", "KL_MALL", "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "site_id: is not a registered site, as none is: " in err
    assert "(got 'KL_MALL')" in err
    assert "Traceback" not in err
    assert tables(url) == []


def test_removing_an_unknown_site_from_a_fleet_still_names_it(url, capsys):
    open_database(url)  # the tables, no site
    assert main(["sites", "remove", "KL_MALL", "--database-url", url]) == 2
    assert "site_id: is not a registered site (got 'KL_MALL')" in capsys.readouterr().err
    assert list_site_ids(open_database(url)) == []


def test_importing_ids_differing_only_in_case_into_a_database_without_tables_creates_nothing(url, tmp_path, capsys):
    path = sites_file_with_ids_differing_only_in_case(tmp_path)
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: {CASE_CLASH}" in err and "(got 'kl_mall')" in err
    assert "Traceback" not in err
    assert tables(url) == []


def test_importing_ids_differing_only_in_case_into_a_fleet_is_refused_alike(url, tmp_path, capsys):
    open_database(url)  # the tables, no site
    path = sites_file_with_ids_differing_only_in_case(tmp_path)
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {CASE_CLASH}" in err and "(got 'kl_mall')" in err
    assert list_site_ids(open_database(url)) == []


def test_a_refused_import_leaves_no_file_in_dagster_home(dagster_home, tmp_path, capsys):
    path = sites_file_with_ids_differing_only_in_case(tmp_path)
    assert main(["sites", "import", str(path)]) == 2
    assert CASE_CLASH in capsys.readouterr().err
    assert list(dagster_home.iterdir()) == []


TARIFF_HISTORY = """\
    tariff_history:
      - until: 2024-07-01        # the tariff before this one, oldest first
        tariff:
          demand_charge_per_kw: 1.2
          default: {buy: 0.20, sell: 0.16}
      - until: 2025-07-01
        tariff:
          currency: MYR
          demand_charge_per_kw: 1.4
          default: {buy: 0.21, sell: 0.17}
          periods:
            - {name: peak, start: "08:00", end: "22:00", days: [mon, tue, wed, thu, fri], buy: 0.335, sell: 0.24}
"""


def test_an_imported_tariff_history_is_listed_and_imported_again_unchanged(url, tmp_path, capsys):
    # KL_MALL's entry with its earlier tariffs, as an operator writes them into sites.yaml.
    text = sites_yaml_path().read_text(encoding="utf-8")
    text = text.replace("\n  - site_id: BERLIN_DEPOT", f"{TARIFF_HISTORY}\n  - site_id: BERLIN_DEPOT", 1)
    path = tmp_path / "sites.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["sites", "import", str(path), "--database-url", url]) == 0
    capsys.readouterr()

    assert main(["sites", "list", "--json", "--database-url", url]) == 0
    listed = {site["site_id"]: site for site in json.loads(capsys.readouterr().out)}
    history = listed["KL_MALL"]["tariff_history"]
    assert [(entry["until"], entry["tariff"]["demand_charge_per_kw"]) for entry in history] == [
        ("2024-07-01", 1.2), ("2025-07-01", 1.4),
    ]
    assert history[0]["tariff"]["currency"] == "MYR"  # stated by none: the site's
    assert "tariff_history" not in listed["BERLIN_DEPOT"]  # listed as before the field existed
    site = get_site(open_database(url), "KL_MALL")
    assert site.tariff_on("2024-06-30").demand_charge_per_kw == 1.2
    assert site.tariff_on("2025-07-01") == site.tariff

    # What `sites list --json` prints, imported again, is the same fleet.
    listed_file = tmp_path / "listed.yaml"
    listed_file.write_text(yaml.safe_dump({"sites": list(listed.values())}), encoding="utf-8")
    assert main(["sites", "import", str(listed_file), "--database-url", url]) == 0
    capsys.readouterr()
    assert main(["sites", "list", "--json", "--database-url", url]) == 0
    assert {site["site_id"]: site for site in json.loads(capsys.readouterr().out)} == listed


def test_registering_a_site_again_as_it_is_says_it_is_unchanged(url, tmp_path, capsys):
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"sites": [kl_mall_entry()]}), encoding="utf-8")
    assert main(["sites", "import", str(path), "--database-url", url]) == 0
    assert capsys.readouterr().out.startswith("registered KL_MALL (Asia/Kuala_Lumpur)\n")
    stored = get_site(open_database(url), "KL_MALL")

    assert main(["sites", "import", str(path), "--database-url", url]) == 0

    assert capsys.readouterr().out.startswith("unchanged KL_MALL (Asia/Kuala_Lumpur)\n")
    assert get_site(open_database(url), "KL_MALL") == stored


def kl_mall_entry() -> dict:
    data = yaml.safe_load(sites_yaml_path().read_text(encoding="utf-8"))
    assert data["sites"][0]["site_id"] == "KL_MALL"
    return data["sites"][0]


def register_again(url: str, tmp_path: Path, capsys, entry: dict) -> str:
    """KL_MALL registered as the demo has it, then `entry` imported over it: the second import's stderr."""
    first, again = tmp_path / "first.yaml", tmp_path / "again.yaml"
    first.write_text(yaml.safe_dump({"sites": [kl_mall_entry()]}), encoding="utf-8")
    again.write_text(yaml.safe_dump({"sites": [entry]}), encoding="utf-8")
    assert main(["sites", "import", str(first), "--database-url", url]) == 0
    capsys.readouterr()
    assert main(["sites", "import", str(again), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert f"{'unchanged' if entry == kl_mall_entry() else 'replaced'} KL_MALL" in out
    return err


def kl_mall_today() -> dt.date:
    return dt.datetime.now(ZoneInfo("Asia/Kuala_Lumpur")).date()


def test_a_tariff_replaced_without_history_is_noted_and_stored(url, tmp_path, capsys):
    # The pitfall: the new tariff written over the old one, which no history entry keeps.
    entry = kl_mall_entry()
    entry["tariff"] = {**entry["tariff"], "demand_charge_per_kw": 1.8}
    err = register_again(url, tmp_path, capsys, entry)
    assert "site KL_MALL: its tariff changes for every day before " in err
    assert "(no tariff_history entry keeps the one registered until now)" in err
    assert "list it under tariff_history with until: <first day of the new one>" in err
    assert get_site(open_database(url), "KL_MALL").tariff.demand_charge_per_kw == 1.8  # a note, not a refusal


def test_a_tariff_whose_predecessor_moves_into_history_is_not_noted(url, tmp_path, capsys):
    entry = kl_mall_entry()
    until = kl_mall_today() + dt.timedelta(days=2)  # announced ahead: no past day changes
    entry["tariff_history"] = [{"until": until.isoformat(), "tariff": entry["tariff"]}]
    entry["tariff"] = {**entry["tariff"], "demand_charge_per_kw": 1.8}
    assert "tariff" not in register_again(url, tmp_path, capsys, entry)
    assert get_site(open_database(url), "KL_MALL").tariff_on(until).demand_charge_per_kw == 1.8


def test_an_identical_import_or_a_battery_change_is_not_noted(url, tmp_path, capsys):
    assert register_again(url, tmp_path, capsys, kl_mall_entry()) == ""
    entry = kl_mall_entry()
    entry["bess"] = {**entry["bess"], "capacity_kwh": 1200}
    assert register_again(url, tmp_path, capsys, entry) == ""


def test_the_note_names_the_past_days_a_history_prices_otherwise():
    # Pure: the days before the site's today whose tariff in force changes, and only those.
    entry = kl_mall_entry()
    old = parse_site(entry)
    moved = {**entry, "tariff": {**entry["tariff"], "demand_charge_per_kw": 1.8}}
    today = dt.date(2026, 12, 6)
    for until in ("2026-12-06", "2027-01-01"):  # from today, or later: no past day changes
        new = parse_site({**moved, "tariff_history": [{"until": until, "tariff": entry["tariff"]}]})
        assert _past_tariff_change(old, new, today) is None
    # Recorded late: the days since the change are billed anew, the earlier ones are kept.
    late = parse_site({**moved, "tariff_history": [{"until": "2026-11-01", "tariff": entry["tariff"]}]})
    note = _past_tariff_change(old, late, today)
    assert note is not None and "for the days 2026-11-01 to 2026-12-05 too" in note
    assert "(on 2026-11-01: tariff as registered until now, tariff (since 2026-11-01) now)" in note


def test_what_sites_list_json_prints_is_what_sites_import_takes(url, tmp_path, capsys):
    # The documented export: `sites list --json > all.json`, then `sites import all.json`.
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    capsys.readouterr()
    assert main(["sites", "list", "--json", "--database-url", url]) == 0
    exported = capsys.readouterr().out
    path = tmp_path / "all.json"
    path.write_text(exported, encoding="utf-8")

    # `sites add` refuses the list, pointing at the command that takes it...
    assert main(["sites", "add", str(path), "--database-url", url]) == 2
    assert f"`sites import {path}` takes several: such a list" in capsys.readouterr().err
    # ...which does.
    assert main(["sites", "import", str(path), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [
        "unchanged BERLIN_DEPOT (Europe/Berlin)",
        "unchanged KL_MALL (Asia/Kuala_Lumpur)",
        "unchanged PHOENIX_OFFICE (America/Phoenix)",
    ]
    assert main(["sites", "list", "--json", "--database-url", url]) == 0
    assert capsys.readouterr().out == exported


def test_a_list_of_sites_is_checked_whole_naming_every_bad_entry(url, tmp_path, capsys):
    entries = [kl_mall_entry(), {**kl_mall_entry(), "site_id": "B", "pv_kwp": -1}, 3, kl_mall_entry()]
    path = tmp_path / "all.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: [1] ('B'): pv_kwp: " in err
    assert f"{path}: [2]: must be a mapping (got int)" in err
    assert f"{path}: [3] ('KL_MALL'): site_id 'KL_MALL' already used by [0]" in err
    assert list_site_ids(open_database(url)) == []

    path.write_text("[]\n", encoding="utf-8")
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    assert f"{path}: is an empty list: list at least one site" in capsys.readouterr().err
