"""`dispatch-pipeline sites`: a refused command leaves the database as it found it."""

from __future__ import annotations

from pathlib import Path

import yaml

from dispatch_pipeline.cli import main
from dispatch_pipeline.demo import sites_yaml_path
from dispatch_pipeline.storage import list_site_ids, open_database
from tests.postgres import tables

CASE_CLASH = "site_id: differs only in case from 'KL_MALL', another site given with it"


def sites_file_with_ids_differing_only_in_case(tmp_path: Path) -> Path:
    """The demo's sites, and KL_MALL's entry again as kl_mall."""
    data = yaml.safe_load(sites_yaml_path().read_text(encoding="utf-8"))
    data["sites"].append({**data["sites"][0], "site_id": "kl_mall"})
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
