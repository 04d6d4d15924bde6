"""`dispatch-pipeline sites`, `forecasts` and `prices`: stored on success, rejected whole with a clear message."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import uuid

import pandas as pd
import pytest
import yaml

from dispatch_pipeline.cli import main
from dispatch_pipeline.demo import demo_forecast, demo_sites, sites_yaml_path
from dispatch_pipeline.storage import (
    get_site,
    list_sites,
    load_forecast,
    load_price_series,
    open_database,
    upsert_site,
)
from dispatch_pipeline.storage.tables import sites
from tests.pipeline.conftest import price_table


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.sqlite'}"


def forecast_table(site_id: str = "KL_MALL") -> pd.DataFrame:
    frame = demo_forecast("KL_MALL", dt.date(2025, 3, 11))
    frame.insert(0, "site_id", site_id)
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def test_sites_import_and_list(url, capsys):
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    # The database may come from --database-url, DATABASE_URL, .env or the demo's default.
    assert capsys.readouterr().out.endswith(f"3 site(s) imported\ndatabase: {url}\n")
    assert [s.site_id for s in list_sites(open_database(url))] == ["BERLIN_DEPOT", "KL_MALL", "PHOENIX_OFFICE"]
    assert main(["sites", "list", "--database-url", url]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["site_id", "timezone", "pv_kwp", "bess_kwh", "currency", "name"]
    assert [line.split()[:5] for line in listing[1:]] == [
        [site.site_id, site.timezone, repr(site.pv_kwp), repr(site.bess.capacity_kwh), site.currency]
        for site in list_sites(open_database(url))
    ]


def test_sites_list_shows_sizes_as_stored_not_rounded(url, capsys):
    site = demo_sites()[0]
    small = site.model_copy(update={"pv_kwp": 0.04, "bess": site.bess.model_copy(update={"capacity_kwh": 0.01})})
    upsert_site(open_database(url), small)
    assert main(["sites", "list", "--database-url", url]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[2:4] == ["0.04", "0.01"]


def test_sites_remove_names_what_stays_and_refuses_an_unknown_id_whole(url, capsys):
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    capsys.readouterr()
    assert main(["sites", "remove", "KL_MALL", "kl_mall", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "site_id: is not a registered site; the registered site 'KL_MALL' differs from it only in case (got 'kl_mall')" in err
    assert len(list_sites(open_database(url))) == 3

    assert main(["sites", "remove", "KL_MALL", "PHOENIX_OFFICE", "--database-url", url]) == 0
    removal = capsys.readouterr()
    assert "removed KL_MALL: no longer planned; its 0 stored plan(s), forecasts and prices stay" in removal.err
    assert "their Dagster partitions stay" in removal.err
    assert removal.err.endswith(f"database: {url}\n")
    # stdout holds the definitions alone, one JSON object per line.
    assert [json.loads(line)["site_id"] for line in removal.out.splitlines()] == ["KL_MALL", "PHOENIX_OFFICE"]
    assert [s.site_id for s in list_sites(open_database(url))] == ["BERLIN_DEPOT"]


def test_a_removed_sites_definition_is_printed_even_when_it_no_longer_validates(url, tmp_path, capsys):
    # `sites list --json` leaves such a site out: the removal's own output is its last copy.
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    engine = open_database(url)
    with engine.begin() as connection:
        connection.execute(sites.update().where(sites.c.site_id == "KL_MALL").values(pv_kwp=-1.0))
    capsys.readouterr()

    assert main(["sites", "remove", "KL_MALL", "--database-url", url]) == 0

    printed = capsys.readouterr().out
    expected = demo_sites()[0].model_dump(mode="json") | {"pv_kwp": -1.0}
    assert json.loads(printed) == expected

    path = tmp_path / "restored.json"
    path.write_text(printed.replace('"pv_kwp": -1.0', '"pv_kwp": 500.0'))
    assert main(["sites", "add", str(path), "--database-url", url]) == 0
    assert get_site(engine, "KL_MALL") == demo_sites()[0]


def test_a_site_whose_config_was_edited_into_text_that_is_no_json_is_named_and_removable(tmp_path, capsys):
    # SQLite keeps whatever text a hand edit writes; PostgreSQL's jsonb would refuse it.
    url = f"sqlite:///{tmp_path / 'hand_edited.sqlite'}"
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    with sqlite3.connect(tmp_path / "hand_edited.sqlite") as connection:
        connection.execute("UPDATE sites SET config = '{bad json' WHERE site_id = 'KL_MALL'")
    capsys.readouterr()

    assert main(["sites", "list", "--database-url", url]) == 1
    listed = capsys.readouterr()
    assert "stored site 'KL_MALL' is not a valid site (config: expected a JSON object, got '{bad json')" in listed.err
    assert "BERLIN_DEPOT" in listed.out and "Traceback" not in listed.err

    assert main(["sites", "remove", "KL_MALL", "--database-url", url]) == 0
    assert '"config": "{bad json"' in capsys.readouterr().out


@pytest.mark.parametrize("as_json", [False, True])
def test_listing_a_database_without_tables_creates_none(tmp_path, capsys, as_json):
    path = tmp_path / "empty.sqlite"
    url = f"sqlite:///{path}"
    listing = ["sites", "list", "--database-url", url, *(["--json"] if as_json else [])]
    assert main(listing) == 0
    out = capsys.readouterr().out
    assert out.strip() == "[]" if as_json else f"no sites registered: the file {path} does not exist" in out
    assert not path.exists()

    sqlite3.connect(path).close()  # an empty database
    assert main(listing) == 0
    out = capsys.readouterr().out
    assert out.strip() == "[]" if as_json else f"no sites registered: {url} has no dispatch-pipeline tables yet" in out
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == []


def test_db_current_of_a_missing_sqlite_file_creates_none(tmp_path, capsys):
    path = tmp_path / "missing.sqlite"
    assert main(["db", "current", "--database-url", f"sqlite:///{path}"]) == 0
    assert "revision: none (head: " in capsys.readouterr().out
    assert not path.exists()


SITE_WITHOUT_PV_SIZE = (
    "site_id: X\ntimezone: Asia/Kuala_Lumpur\nlatitude: 3.1\nlongitude: 101.7\ncurrency: MYR\n"
    "bess: {capacity_kwh: 200, max_charge_kw: 100, max_discharge_kw: 100}\n"
    "tariff: {currency: MYR, default: {buy: 0.4, sell: 0.2}}\n"
)
A_SITE = SITE_WITHOUT_PV_SIZE + "pv_kwp: 0\n"


def test_moving_a_site_to_another_timezone_or_currency_warns(url, tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(A_SITE)
    assert main(["sites", "add", str(path), "--database-url", url]) == 0
    first = capsys.readouterr()
    assert "warning" not in first.err and first.out.startswith("registered X (Asia/Kuala_Lumpur)\n")
    path.write_text(A_SITE.replace("Asia/Kuala_Lumpur", "Asia/Singapore").replace("MYR", "SGD"))
    assert main(["sites", "add", str(path), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("replaced X (Asia/Singapore)\n")
    assert "site X: timezone changed from Asia/Kuala_Lumpur to Asia/Singapore; its stored plans keep" in err
    assert "site X: currency changed from MYR to SGD; its stored price series are now read as SGD" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(SITE_WITHOUT_PV_SIZE + "pv_kwp: 500\npv_kwp: 5\n", "found key 'pv_kwp' again (first at line 8)",
                     id="duplicate-key"),
        pytest.param((A_SITE + "name: Caf\xe9\n").encode("latin-1"), f"not UTF-8 text (line {A_SITE.count(chr(10)) + 1}, byte {len(A_SITE) + 9}: 0xe9)",
                     id="latin-1"),
        pytest.param("a: " + "[" * 5000, "nested too deeply", id="deep-nesting"),
        pytest.param(A_SITE + "altitude_m: " + "9" * 5000 + "\n", "altitude_m: Input should be a valid number (got an integer of 5000 digits)", id="huge-integer"),
        pytest.param(SITE_WITHOUT_PV_SIZE + "pv_kwp: 1.0e-400\n", "pv_kwp: Input should be a valid number (got 1.0e-400, too close to 0 for a number to hold: write 0)", id="underflow"),
        pytest.param(A_SITE + 'name: "a\\0b"\n', "name: contains a NUL character", id="nul-in-name"),
        pytest.param(A_SITE + 'name: "\\ud800"\n', "name: contains '\\ud800', a lone surrogate", id="surrogate"),
        pytest.param(A_SITE.replace("Asia/Kuala_Lumpur", "localtime"),
                     "site.yaml ('X'): timezone: unknown IANA timezone", id="host-zone"),
        pytest.param(SITE_WITHOUT_PV_SIZE + "pv_kwp: 1.0e+308\n", "pv_kwp: Input should be less than or equal to", id="huge-pv"),
        pytest.param(SITE_WITHOUT_PV_SIZE, "site.yaml ('X'): pv_kwp: field required", id="no-pv-size"),
        pytest.param("- " + A_SITE.replace("\n", "\n  "), "site.yaml: holds a list of 1 entry; `sites add` takes one site "
                     "as a mapping (drop the leading `- ` of a pasted sites.yaml entry", id="pasted-entry"),
    ],
)
def test_sites_add_refuses_what_a_parser_would_settle_quietly(url, tmp_path, capsys, content, expected):
    path = tmp_path / "site.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["sites", "add", str(path), "--database-url", url]) == 2
    assert expected in capsys.readouterr().err
    assert list_sites(open_database(url)) == []


def test_a_site_from_stdin_is_named_so_in_its_errors(url, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"site_id: X\ntimezone: UTC\n")))
    assert main(["sites", "add", "-", "--database-url", url]) == 2
    assert "  - stdin ('X'): currency: field required" in capsys.readouterr().err
    assert list_sites(open_database(url)) == []


def test_sites_import_refuses_a_repeated_sites_key(url, tmp_path, capsys):
    # Last one wins in a plain YAML load: KL_MALL would vanish without a word.
    entries = yaml.safe_load(sites_yaml_path().read_text())["sites"]
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"sites": entries[:1]}) + yaml.safe_dump({"sites": entries[1:]}))
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    assert "found key 'sites' again (first at line 1)" in capsys.readouterr().err
    assert list_sites(open_database(url)) == []


@pytest.mark.parametrize(
    ("database_url", "status", "expected"),
    [
        ("nonsense", 2, "is not a URL SQLAlchemy can use"),
        ("foo://x", 2, "is not a URL SQLAlchemy can use"),
        ("postgresql+psycopg://postgres:secret@127.0.0.1:abc/db", 2,
         "--database-url 'postgresql+psycopg://postgres:***@127.0.0.1:abc/db' is not a URL SQLAlchemy can use: its port 'abc' is not a number"),
        pytest.param("postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=abc", 2,
                     "is not a URL SQLAlchemy can use: bad value for connect_timeout: 'abc'", marks=pytest.mark.postgres),
        pytest.param("postgresql://postgres@127.0.0.1:5432/postgres?no_such_option=1", 2,
                     'is not a URL SQLAlchemy can use: invalid connection option "no_such_option"', marks=pytest.mark.postgres),
        # SQLAlchemy would warn and drop it: the file would open without what the URL asked for.
        ("sqlite:////tmp/x.sqlite?no_such_option=1", 2, "Query string argument(s) 'no_such_option' are not accepted"),
        ("mysql+mysqldb://user@host/db", 2, "--database-url 'mysql+mysqldb://user@host/db' is not a URL SQLAlchemy can use: the driver of 'mysql+mysqldb' is not installed"),
    ],
)
def test_an_unusable_database_url_is_named_without_a_traceback(capsys, database_url, status, expected):
    assert main(["sites", "list", "--database-url", database_url]) == status
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("database_url", ["postgresql://postgres@127.0.0.1:5432/", "postgresql+psycopg2://"])
def test_a_postgresql_url_naming_no_database_is_refused(capsys, monkeypatch, database_url):
    # libpq would connect to the database named after the user: the server's own `postgres`.
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert main(["db", "upgrade", "--database-url", database_url]) == 2
    assert f"{database_url!r} is not a URL SQLAlchemy can use: it names no database" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["sites", "list"], ["db", "upgrade"], ["forecasts", "load", "f.csv"]])
def test_an_empty_database_url_is_refused_not_taken_for_the_default(command, capsys, tmp_path, monkeypatch):
    # `--database-url "$UNSET"` must not write to DATABASE_URL's database or the demo's file.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--database-url", " "])
    assert exit_.value.code == 2
    assert "--database-url: expected an SQLAlchemy URL such as postgresql://host/db (got ' ')" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_stored_site_that_is_no_longer_valid_is_named(url, capsys):
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    with open_database(url).begin() as connection:
        connection.execute(sites.update().where(sites.c.site_id == "KL_MALL").values(pv_kwp=1e12))
    capsys.readouterr()
    assert main(["sites", "list", "--database-url", url]) == 1
    out, err = capsys.readouterr()
    assert "stored site 'KL_MALL' is not a valid site (pv_kwp: Input should be less than or equal to" in err
    assert "Traceback" not in err
    # The other sites are still listed.
    assert "BERLIN_DEPOT" in out and "PHOENIX_OFFICE" in out and "KL_MALL" not in out


@pytest.mark.parametrize("site_id", [".", ".."])
def test_a_site_id_naming_a_relative_directory_is_refused(url, tmp_path, capsys, site_id):
    entry = yaml.safe_load(sites_yaml_path().read_text())["sites"][0]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({**entry, "site_id": site_id}))
    assert main(["sites", "add", str(path), "--database-url", url]) == 2
    assert f"site_id: '.' and '..' cannot name the directory a site's files are kept in (got {site_id!r})" in (
        capsys.readouterr().err
    )
    assert list_sites(open_database(url)) == []


def test_sites_add_rejects_a_bad_site(url, tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text("site_id: X\ntimezone: Mars/Olympus\nlatitude: 1\nlongitude: 2\n"
                    "tariff: {default: {buy: 0.2, sell: 0.1}}\n")
    assert main(["sites", "add", str(path), "--database-url", url]) == 2
    assert "Mars/Olympus" in capsys.readouterr().err
    assert list_sites(open_database(url)) == []


def test_sites_import_refuses_an_id_differing_only_in_case_naming_file_and_both_ids(url, tmp_path, capsys):
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    path = tmp_path / "lower.yaml"
    path.write_text(sites_yaml_path().read_text().replace("site_id: KL_MALL", "site_id: kl_mall"))
    capsys.readouterr()
    assert main(["sites", "import", str(path), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "differs only in case from the registered site 'KL_MALL'" in err and "'kl_mall'" in err
    assert [s.site_id for s in list_sites(open_database(url))] == ["BERLIN_DEPOT", "KL_MALL", "PHOENIX_OFFICE"]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_forecasts_load_stores_every_interval(url, tmp_path, suffix):
    path = tmp_path / f"forecast.{suffix}"
    table = forecast_table()
    table.to_csv(path, index=False) if suffix == "csv" else table.to_parquet(path)
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    stored = load_forecast(
        open_database(url), "KL_MALL",
        dt.datetime(2025, 3, 10, 16, tzinfo=dt.UTC), dt.datetime(2025, 3, 11, 16, tzinfo=dt.UTC),
    )
    assert len(stored) == 96
    assert stored["load_kw"].tolist() == pytest.approx(table["load_kw"].tolist())


# command, the file it is given, the reader of what it stored, the site in the file
SERIES_FILES = {
    "forecasts": (forecast_table, load_forecast, "KL_MALL"),
    "prices": (price_table, load_price_series, "BERLIN_DEPOT"),
}


@pytest.mark.parametrize(
    ("command", "row", "column", "value", "expected"),
    [
        ("forecasts", 7, "load_kw", "-1", "row 7 (line 8), column load_kw: must be >= 0"),
        ("forecasts", 3, "pv_kw", "abc", "row 3 (line 4), column pv_kw: not a number"),
        ("forecasts", 5, "ts", "2025-03-10T17:00:00", "row 5 (line 6), column ts: needs a UTC offset"),
        ("forecasts", 2, "site_id", "bad id!", "row 2 (line 3), column site_id"),
        ("forecasts", 9, "load_kw", "nan", "row 9 (line 10), column load_kw: must be finite"),
        ("prices", 4, "buy", "cheap", "row 4 (line 5), column buy: not a number"),
        ("prices", 8, "sell", "inf", "row 8 (line 9), column sell: must be finite"),
        ("prices", 2, "ts", "2025-03-10 23:15", "row 2 (line 3), column ts: needs a UTC offset"),
        # Finite, yet a day of them sums past the largest float.
        ("forecasts", 6, "load_kw", "1e308", "row 6 (line 7), column load_kw: must lie within"),
        ("prices", 6, "buy", "-1e308", "row 6 (line 7), column buy: must lie within"),
        # Before year 1 in UTC, and a year no nanosecond timestamp holds.
        ("forecasts", 1, "ts", "0001-01-01T00:00:00+01:00", "row 1 (line 2), column ts: outside the supported range"),
        ("prices", 1, "ts", "9999-12-31T23:45:00Z", "row 1 (line 2), column ts: outside the supported range"),
        # Within the range in UTC, yet on a local day past it (Kuala Lumpur's 2262-01-01).
        ("prices", 1, "ts", "2261-12-31T16:00:00Z", "row 1 (line 2), column ts: outside the supported range "
         "1678-01-02T00:00Z to 2261-12-30T23:45Z, whose local days lie within 1678-01-01 to 2261-12-31"),
        ("forecasts", 1, "ts", "1678-01-01T00:00:00Z", "row 1 (line 2), column ts: outside the supported range"),
        # float() reads these as 0: a negative load would pass as none.
        ("forecasts", 4, "load_kw", "-1e-400", "row 4 (line 5), column load_kw: too close to 0 for a number to hold"),
        ("prices", 3, "sell", "1e-400", "row 3 (line 4), column sell: too close to 0 for a number to hold"),
    ],
)
def test_a_malformed_series_file_is_rejected_whole(url, tmp_path, capsys, command, row, column, value, expected):
    make_table, read_stored, site_id = SERIES_FILES[command]
    table = make_table().astype(str)
    table.loc[row - 1, column] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    assert main([command, "load", str(path), "--database-url", url]) == 2
    assert expected in capsys.readouterr().err
    stored = read_stored(
        open_database(url), site_id,
        dt.datetime(2025, 3, 10, tzinfo=dt.UTC), dt.datetime(2025, 3, 12, tzinfo=dt.UTC),
    )
    assert stored.empty


def test_an_issue_time_in_the_future_is_refused(url, tmp_path, capsys):
    # As the most recent issue it would hide every real forecast issued before 2199.
    path = tmp_path / "forecast.csv"
    forecast_table().to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--issued-at", "2199-01-01T00:00:00Z", "--database-url", url]) == 2
    assert "--issued-at: '2199-01-01T00:00:00Z' lies in the future" in capsys.readouterr().err
    window = (dt.datetime(2025, 3, 10, tzinfo=dt.UTC), dt.datetime(2025, 3, 12, tzinfo=dt.UTC))
    assert load_forecast(open_database(url), "KL_MALL", *window).empty


def test_forecasts_load_rejects_missing_columns_and_repeats(url, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    forecast_table().drop(columns=["pv_kw"]).to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 2
    assert "missing column(s) pv_kw" in capsys.readouterr().err
    path.write_text("site_id;ts;load_kw;pv_kw\nKL_MALL;2025-03-10T16:00:00Z;1;0\n")
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 2
    assert ("missing column(s) site_id, ts, load_kw, pv_kw (need site_id, ts, load_kw, pv_kw; "
            "found 'site_id;ts;load_kw;pv_kw')") in capsys.readouterr().err
    table = forecast_table()
    pd.concat([table, table.iloc[[3]]]).to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 2
    assert "row 97 (line 98), column ts" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_prices_load_stores_every_interval_negative_prices_included(url, tmp_path, suffix, capsys):
    path = tmp_path / f"prices.{suffix}"
    table = price_table()
    table.to_csv(path, index=False) if suffix == "csv" else table.to_parquet(path)
    assert main(["prices", "load", str(path), "--database-url", url]) == 0
    assert "BERLIN_DEPOT: 96 interval(s) stored" in capsys.readouterr().out
    stored = load_price_series(
        open_database(url), "BERLIN_DEPOT",
        dt.datetime(2025, 3, 10, 23, tzinfo=dt.UTC), dt.datetime(2025, 3, 11, 23, tzinfo=dt.UTC),
    )
    assert stored["buy"].tolist() == pytest.approx(table["buy"].tolist())
    assert stored["sell"].tolist() == pytest.approx(table["sell"].tolist())
    assert (stored["sell"] < 0).any()


def test_a_forecast_file_of_several_sites_stores_each(url, tmp_path, capsys):
    path = tmp_path / "fleet.csv"
    pd.concat([forecast_table("KL_MALL"), forecast_table("KL_ANNEX")]).to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "KL_ANNEX: 96 interval(s) stored" in out and "(site not registered yet)" in out
    engine = open_database(url)
    day = (dt.datetime(2025, 3, 10, 16, tzinfo=dt.UTC), dt.datetime(2025, 3, 11, 16, tzinfo=dt.UTC))
    assert len(load_forecast(engine, "KL_MALL", *day)) == len(load_forecast(engine, "KL_ANNEX", *day)) == 96


def _register_demo_sites(url: str) -> None:
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0


@pytest.mark.parametrize("command", ["forecasts", "prices"])
def test_a_registered_sites_local_day_left_incomplete_is_noted_and_a_later_issue_completes_it(
    url, tmp_path, capsys, command
):
    make_table, _, site_id = SERIES_FILES[command]
    _register_demo_sites(url)
    table = make_table()  # one whole local day of the site
    path = tmp_path / "series.csv"
    table.drop(index=[10, 11]).to_csv(path, index=False)
    capsys.readouterr()
    assert main([command, "load", str(path), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert f"{site_id}: 94 interval(s) stored" in out
    date = "2025-03-11"
    assert f"{site_id}: the stored " in err and "still misses intervals of 1 local day(s)" in err
    first, second = (ts.removesuffix(":00Z") + "Z" for ts in table["ts"].iloc[[10, 11]])
    assert (
        f"{date} (has 94 of 96 intervals; lacks {first}..{second} (2 of the day's intervals, starts in "
        "UTC)); such a day cannot be planned until they are loaded"
    ) in err

    table.iloc[[10, 11]].to_csv(path, index=False)
    assert main([command, "load", str(path), "--database-url", url]) == 0
    assert capsys.readouterr().err == ""


def test_a_local_day_no_quarter_hour_grid_fits_is_noted_not_a_crash(url, tmp_path, capsys):
    # Monrovia moved its clocks by 44 min 30 s on 1972-01-07: a day of 23:15:30.
    site = tmp_path / "site.yaml"
    site.write_text(A_SITE.replace("Asia/Kuala_Lumpur", "Africa/Monrovia"))
    assert main(["sites", "add", str(site), "--database-url", url]) == 0
    path = tmp_path / "forecast.csv"
    path.write_text("site_id,ts,load_kw,pv_kw\nX,1972-01-07T12:00:00Z,10,0\nX,1972-01-09T12:00:00Z,10,0\n")
    capsys.readouterr()
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert "X: 2 interval(s) stored" in out
    assert ("X: 1 local day(s) cannot be planned at all: resolution_minutes: 15 does not divide the "
            "23 h 15 min 30 s local day 1972-01-07 in Africa/Monrovia") in err
    assert "still misses intervals of 1 local day(s) in Africa/Monrovia: 1972-01-09 (has 1 of 96 intervals; lacks " in err


def test_a_pv_forecast_far_above_the_sites_size_is_noted(url, tmp_path, capsys):
    _register_demo_sites(url)  # KL_MALL: 500 kWp
    table = forecast_table()
    table["pv_kw"] = table["pv_kw"] * 1000  # written in W
    path = tmp_path / "watts.csv"
    table.to_csv(path, index=False)
    capsys.readouterr()
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    err = capsys.readouterr().err
    assert f"KL_MALL: pv_kw peaks at {table['pv_kw'].max():g} kW" in err
    assert "times the site's pv_kwp of 500: is the file in kW (not W), and for this site?" in err


def test_pv_at_a_site_registered_without_pv_is_noted(url, tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_text(A_SITE)  # pv_kwp: 0
    assert main(["sites", "add", str(site), "--database-url", url]) == 0
    path = tmp_path / "forecast.csv"
    path.write_text("site_id,ts,load_kw,pv_kw\nX,2025-01-01T04:00:00Z,10,0\nX,2025-01-01T04:15:00Z,10,42.5\n")
    capsys.readouterr()
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    assert ("X: pv_kw peaks at 42.5 kW, but the site's pv_kwp is 0 (no PV): is the file for this site, "
            "or is its pv_kwp out of date?") in capsys.readouterr().err


def test_an_unregistered_sites_series_is_stored_without_notes(url, tmp_path, capsys):
    path = tmp_path / "forecast.csv"
    forecast_table("NOT_YET").drop(index=[3]).to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert "NOT_YET: 95 interval(s) stored" in out and "(site not registered yet)" in out
    assert err == ""


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["db", "upgrade"], ["sites", "list"]])
def test_a_role_the_database_refuses_is_told_so_without_a_traceback(command, capsys, tmp_path):
    """A role allowed to connect but granted nothing on the tables: the permission error, not a
    traceback from a migration that went ahead as if the database were new."""
    from psycopg import sql

    from dispatch_pipeline.storage import close_engines
    from tests.postgres import postgres_admin, scratch_database

    role = f"dispatch_test_role_{uuid.uuid4().hex[:8]}"
    with scratch_database("postgresql", tmp_path) as url, postgres_admin() as admin:
        open_database(url)  # migrated by the owner
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        try:
            assert main([*command, "--database-url", url.replace("//postgres@", f"//{role}@", 1)]) == 1
            err = capsys.readouterr().err
            assert (
                f"dispatch-pipeline {command[0]}: cannot use the database: permission denied for table alembic_version"
            ) in err
            assert "Traceback" not in err
        finally:
            close_engines()
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
