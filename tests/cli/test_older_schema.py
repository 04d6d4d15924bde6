"""The data commands on a database at an older schema revision (0005 of this release's newer
ones): a refused command leaves it at that revision and writes no row; an accepted one migrates
it to head and writes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from alembic import command
from sqlalchemy import text

from dispatch_pipeline.cli import main
from dispatch_pipeline.demo import sites_yaml_path
from dispatch_pipeline.storage.database import (
    HEAD_REVISION,
    close_engines,
    make_engine,
    stored_revisions,
    write_transaction,
)
from dispatch_pipeline.storage.migrate import alembic_config

OLDER_REVISION = "0005"
# Tables of every revision, whose rows a refused command must leave as they were.
TABLES = ("sites", "forecasts", "price_series", "dispatch_runs")
REPO = Path(__file__).resolve().parents[2]
SAMPLE_REQUEST = REPO / "examples" / "sample_request.json"
FORECAST_CSV = "site_id,ts,load_kw,pv_kw\n{site_id},2024-03-15T00:00:00Z,1.5,0.0\n"
PRICES_CSV = "site_id,ts,buy,sell\n{site_id},2024-03-15T00:00:00Z,0.3,0.1\n"


@pytest.fixture
def older_url(url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The demo's sites registered, and the schema taken back to OLDER_REVISION; the process then
    forgets it opened the database, as a new command process would not know it."""
    assert main(["sites", "import", str(sites_yaml_path()), "--database-url", url]) == 0
    with write_transaction(make_engine(url)) as connection:
        command.downgrade(alembic_config(connection), OLDER_REVISION)
    close_engines(url)
    capsys.readouterr()
    assert revisions(url) == [OLDER_REVISION]
    return url


def revisions(url: str) -> list[str]:
    try:
        return stored_revisions(make_engine(url))
    finally:
        close_engines(url)  # read without the process marking the database migrated


def row_counts(url: str) -> dict[str, int]:
    with make_engine(url).connect() as connection:
        counts = {name: connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() for name in TABLES}
    close_engines(url)
    return counts


def kl_mall() -> dict:
    [site] = [s for s in yaml.safe_load(sites_yaml_path().read_text(encoding="utf-8"))["sites"] if s["site_id"] == "KL_MALL"]
    return site


def request(**changes: object) -> dict:
    """The sample request for the registered KL_MALL (its timezone, Asia/Kuala_Lumpur)."""
    data = {**json.loads(SAMPLE_REQUEST.read_text()), "site_id": "KL_MALL", **changes}
    return {name: value for name, value in data.items() if value is not None}


def write(folder: Path, name: str, content: object) -> str:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def in_an_hour() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()


# name: (the command's arguments given a folder for its files, what its message says)
REFUSALS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "sites add, an id differing only in case from a registered one": (
        lambda d: ["sites", "add", write(d, "site.json", {**kl_mall(), "site_id": "kl_mall"})],
        "differs only in case from the registered site 'KL_MALL'",
    ),
    "sites add, a bad field": (
        lambda d: ["sites", "add", write(d, "site.json", {**kl_mall(), "pv_kwp": -1})],
        "pv_kwp: ",
    ),
    "sites import, two ids differing only in case": (
        lambda d: ["sites", "import", write(d, "sites.yaml", yaml.safe_dump(
            {"sites": [{**kl_mall(), "site_id": "NEW_SITE"}, {**kl_mall(), "site_id": "new_site"}]}
        ))],
        "differs only in case from 'NEW_SITE'",
    ),
    "sites remove, an unknown site": (
        lambda d: ["sites", "remove", "KL_MALL", "NO_SUCH_SITE"],
        "site_id: is not a registered site (got 'NO_SUCH_SITE')",
    ),
    "sites remove, a registered site's id in another case": (
        lambda d: ["sites", "remove", "kl_mall"],
        "the registered site 'KL_MALL' differs from it only in case (got 'kl_mall')",
    ),
    "forecasts load, a registered site's id in another case": (
        lambda d: ["forecasts", "load", write(d, "forecast.csv", FORECAST_CSV.format(site_id="kl_mall"))],
        "column site_id: differs only in case from the registered site 'KL_MALL'",
    ),
    "forecasts load, a bad cell": (
        lambda d: ["forecasts", "load", write(d, "forecast.csv", FORECAST_CSV.format(site_id="KL_MALL").replace("1.5", "-1"))],
        "column load_kw: must be >= 0 (got '-1')",
    ),
    "forecasts load, a future --issued-at": (
        lambda d: ["forecasts", "load", write(d, "forecast.csv", FORECAST_CSV.format(site_id="KL_MALL")), "--issued-at", in_an_hour()],
        "lies in the future",
    ),
    "prices load, a registered site's id in another case": (
        lambda d: ["prices", "load", write(d, "prices.csv", PRICES_CSV.format(site_id="kl_mall"))],
        "column site_id: differs only in case from the registered site 'KL_MALL'",
    ),
    "solve --store, a bad field of a registered site's request": (
        lambda d: ["solve", write(d, "request.json", request(resolution_minutes=7)), "--store"],
        "resolution_minutes: ",
    ),
    "solve --store, arrays of the wrong length": (
        lambda d: ["solve", write(d, "request.json", request(load_kw=[1.0, 2.0, 3.0])), "--store"],
        "load_kw: has 3 values",
    ),
    "solve --store, a registered site's id in another case": (
        lambda d: ["solve", write(d, "request.json", request(site_id="kl_mall")), "--store"],
        "site_id: differs only in case from the registered site 'KL_MALL'",
    ),
    "solve --store, a --currency other than the site's": (
        lambda d: ["solve", write(d, "request.json", request()), "--store", "--currency", "JPY"],
        "--currency JPY: site 'KL_MALL' is registered in MYR",
    ),
    "solve --store, a timezone other than the site's": (
        lambda d: ["solve", write(d, "request.json", request(timezone="Europe/Berlin")), "--store"],
        "timezone: site 'KL_MALL' is registered in Asia/Kuala_Lumpur",
    ),
    "solve --store, no pv_kw for a site not registered": (
        lambda d: ["solve", write(d, "request.json", request(site_id="NOT_REGISTERED", pv_kw=None)), "--store"],
        "site 'NOT_REGISTERED' is not registered, so there is no stored PV forecast",
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_a_refused_command_leaves_an_older_schema_at_its_revision(name, older_url, tmp_path, capsys) -> None:
    arguments, message = REFUSALS[name]
    before = row_counts(older_url)
    assert main([*arguments(tmp_path), "--database-url", older_url]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert revisions(older_url) == [OLDER_REVISION]
    assert row_counts(older_url) == before


# name: (the command's arguments given a folder for its files, the table it writes to, the change)
ACCEPTED: dict[str, tuple[Callable[[Path], list[str]], str, int]] = {
    "sites add": (lambda d: ["sites", "add", write(d, "site.json", {**kl_mall(), "site_id": "NEW_SITE"})], "sites", 1),
    "sites remove": (lambda d: ["sites", "remove", "KL_MALL"], "sites", -1),
    "forecasts load": (
        lambda d: ["forecasts", "load", write(d, "forecast.csv", FORECAST_CSV.format(site_id="KL_MALL"))], "forecasts", 1,
    ),
    "prices load": (
        lambda d: ["prices", "load", write(d, "prices.csv", PRICES_CSV.format(site_id="KL_MALL"))], "price_series", 1,
    ),
    "solve --store": (
        lambda d: ["solve", write(d, "request.json", request(timezone=None)), "--store"], "dispatch_runs", 1,
    ),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_an_accepted_command_migrates_an_older_schema_and_writes(name, older_url, tmp_path, capsys) -> None:
    arguments, table, change = ACCEPTED[name]
    before = row_counts(older_url)
    assert main([*arguments(tmp_path), "--database-url", older_url]) == 0, capsys.readouterr().err
    assert revisions(older_url) == [HEAD_REVISION]
    assert row_counts(older_url) == {**before, table: before[table] + change}


def test_solve_store_reading_a_stored_forecast_migrates_first(older_url, tmp_path, capsys) -> None:
    """A registered site's request without pv_kw is planned on its stored forecast, read from
    the current schema (stored_at came with 0006): the database is migrated before it is read,
    and a refusal naming that forecast comes after the upgrade (which writes no row)."""
    before = row_counts(older_url)
    path = write(tmp_path, "request.json", request(timezone=None, pv_kw=None))
    assert main(["solve", path, "--store", "--database-url", older_url]) == 2
    assert "pv_kw: missing, and the stored forecast of site 'KL_MALL' covers 0 of the 96" in capsys.readouterr().err
    assert revisions(older_url) == [HEAD_REVISION]
    assert row_counts(older_url) == before
