"""`dispatch-pipeline sites`: a refused command leaves the database as it found it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect

from dispatch_pipeline.cli import main
from dispatch_pipeline.storage import list_site_ids, open_database


def tables(url: str) -> list[str]:
    """The tables of the database at `url`; none for an SQLite file that does not exist."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return []
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


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
