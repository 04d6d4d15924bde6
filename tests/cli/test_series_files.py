"""`forecasts load` and `prices load` (dispatch_pipeline.cli.series_files): a `ts` off the
interval grid rejects the file whole, and CSV messages name the line beside the row."""

from __future__ import annotations

import codecs
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from dispatch_pipeline.cli import main
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import load_forecast, load_price_series, open_database, upsert_site
from tests.pipeline.conftest import price_table
from tests.postgres import tables

# Wide enough to hold every row of the files below, whatever was stored.
WINDOW = (dt.datetime(2025, 3, 9, tzinfo=dt.UTC), dt.datetime(2025, 3, 13, tzinfo=dt.UTC))
ROW = 5  # the bad row (data rows count from 1): line 6 of the CSV


def forecast_table(site_id: str = "KL_MALL") -> pd.DataFrame:
    frame = demo_forecast("KL_MALL", dt.date(2025, 3, 11))
    frame.insert(0, "site_id", site_id)
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


# command: its file (96 quarter-hours, ts as text), the reader of what it stored, the file's site
SERIES = {
    "forecasts": (forecast_table, load_forecast, "KL_MALL"),
    "prices": (price_table, load_price_series, "BERLIN_DEPOT"),
}


def with_timestamps(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ts as a tz-aware datetime column (nanosecond resolution), as Parquet files
    usually hold it."""
    return table.assign(ts=pd.to_datetime(table["ts"], utc=True).astype("datetime64[ns, UTC]"))


def stored(command: str, url: str, site_id: str | None = None) -> pd.DataFrame:
    _, read_stored, default_site = SERIES[command]
    return read_stored(open_database(url), site_id or default_site, *WINDOW)


def load(command: str, path: Path, url: str) -> int:
    return main([command, "load", str(path), "--database-url", url])


def off_grid(text: str, shift: dt.timedelta) -> str:
    """`text` (…Z) moved by `shift`; microseconds written only when there are any."""
    instant = dt.datetime.fromisoformat(text) + shift
    return instant.strftime("%Y-%m-%dT%H:%M:%S") + (f".{instant:%f}" if instant.microsecond else "") + "Z"


OFF_GRID_TEXT = [
    pytest.param(lambda ts: off_grid(ts, dt.timedelta(minutes=7)), id="minutes"),
    pytest.param(lambda ts: off_grid(ts, dt.timedelta(seconds=30)), id="seconds"),
    pytest.param(lambda ts: off_grid(ts, dt.timedelta(milliseconds=500)), id="milliseconds"),
    pytest.param(lambda ts: off_grid(ts, dt.timedelta(microseconds=1)), id="microseconds"),
    # Below datetime's resolution: fromisoformat alone would read it as the quarter-hour itself.
    pytest.param(lambda ts: ts.replace("Z", ".0000001Z"), id="nanoseconds"),
    # 7 minutes off, written in +08:00: the grid is checked on the UTC instant.
    pytest.param(
        lambda ts: (dt.datetime.fromisoformat(ts) + dt.timedelta(minutes=7))
        .astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat(),
        id="offset",
    ),
]


@pytest.mark.parametrize("make_bad", OFF_GRID_TEXT)
@pytest.mark.parametrize("command", SERIES)
def test_an_off_grid_ts_in_a_csv_is_rejected_whole(url, tmp_path, capsys, command, make_bad):
    make_table = SERIES[command][0]
    table = make_table()
    bad = make_bad(table.loc[ROW - 1, "ts"])
    table.loc[ROW - 1, "ts"] = bad
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    assert load(command, path, url) == 2
    err = capsys.readouterr().err
    assert f"{path}: row {ROW} (line {ROW + 1}), column ts: must start a 15-minute interval" in err
    assert repr(bad) in err
    assert stored(command, url).empty


@pytest.mark.parametrize(
    "shift",
    [
        pytest.param(pd.Timedelta(minutes=7), id="minutes"),
        pytest.param(pd.Timedelta(seconds=1), id="seconds"),
        pytest.param(pd.Timedelta(nanoseconds=1), id="nanoseconds"),
    ],
)
@pytest.mark.parametrize("command", SERIES)
def test_an_off_grid_ts_in_a_parquet_file_is_rejected_whole(url, tmp_path, capsys, command, shift):
    table = with_timestamps(SERIES[command][0]())
    table.loc[ROW - 1, "ts"] += shift
    path = tmp_path / "bad.parquet"
    table.to_parquet(path)
    assert load(command, path, url) == 2
    err = capsys.readouterr().err
    # Parquet has no lines: the row number alone.
    assert f"{path}: row {ROW}, column ts: must start a 15-minute interval" in err
    assert "(line" not in err
    assert str(table.loc[ROW - 1, "ts"]).replace("+00:00", "+0000") in err  # the value, as repr'd
    assert stored(command, url).empty


def test_an_off_grid_ts_as_text_in_a_parquet_file_is_rejected(url, tmp_path, capsys):
    table = forecast_table()
    table.loc[ROW - 1, "ts"] = "2025-03-10T20:07:00Z"
    path = tmp_path / "bad.parquet"
    table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    err = capsys.readouterr().err
    assert f"row {ROW}, column ts: must start a 15-minute interval" in err
    assert "'2025-03-10T20:07:00Z'" in err
    assert stored("forecasts", url).empty


def test_a_nan_in_a_parquet_float_column_is_said_to_be_nan_or_missing(url, tmp_path, capsys):
    table = forecast_table()
    table.loc[ROW - 1, "load_kw"] = float("nan")  # how a float column holds a null too
    path = tmp_path / "nan.parquet"
    table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    assert (f"row {ROW}, column load_kw: must be finite (got nan: NaN, or a missing value of a float column)"
            in capsys.readouterr().err)
    assert stored("forecasts", url).empty


def test_one_off_grid_row_rejects_every_site_of_the_file(url, tmp_path, capsys):
    good, bad = forecast_table("KL_MALL"), forecast_table("KL_ANNEX")
    bad.loc[10, "ts"] = "2025-03-10T18:31:00Z"
    path = tmp_path / "fleet.csv"
    pd.concat([good, bad]).to_csv(path, index=False)
    assert load("forecasts", path, url) == 2
    assert "row 107 (line 108), column ts" in capsys.readouterr().err
    assert stored("forecasts", url, "KL_MALL").empty
    assert stored("forecasts", url, "KL_ANNEX").empty


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("command", SERIES)
def test_an_on_grid_file_still_loads(url, tmp_path, capsys, command, suffix):
    table = SERIES[command][0]()
    path = tmp_path / f"good.{suffix}"
    if suffix == "csv":
        table.to_csv(path, index=False)
    else:
        with_timestamps(table).to_parquet(path)
    assert load(command, path, url) == 0
    assert "96 interval(s) stored" in capsys.readouterr().out
    assert len(stored(command, url)) == 96


def test_on_grid_in_other_offsets_and_with_zero_fractions_loads(url, tmp_path):
    table = forecast_table()
    nepal = dt.timezone(dt.timedelta(hours=5, minutes=45))
    table["ts"] = [
        dt.datetime.fromisoformat(ts).astimezone(nepal).isoformat() if i % 2 else ts.replace("Z", ".000000Z")
        for i, ts in enumerate(table["ts"])
    ]
    path = tmp_path / "offsets.csv"
    table.to_csv(path, index=False)
    assert load("forecasts", path, url) == 0
    assert len(stored("forecasts", url)) == 96


def test_csv_lines_allow_for_skipped_blank_lines_and_multi_line_cells(url, tmp_path, capsys):
    header, *rows = forecast_table().to_csv(index=False).splitlines()
    # Data row 3 ends in a quoted pv_kw cell over two lines (a valid number once stripped); data
    # row 4 is off the grid.
    multi_line = rows[2].rsplit(",", 1)[0] + ',"0.0\n"'
    off_grid = rows[3].replace(":45:00Z", ":52:00Z")
    assert off_grid != rows[3]
    lines = [
        header,      # line 1
        rows[0],     # line 2: row 1
        "",          # line 3: blank, skipped
        rows[1],     # line 4: row 2
        "   ",       # line 5: whitespace only, skipped
        multi_line,  # lines 6-7: row 3
        off_grid,    # line 8: row 4
        *rows[4:],
    ]
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join(lines) + "\n")
    assert load("forecasts", path, url) == 2
    assert f"row 4 (line 8), column ts: must start a 15-minute interval (a whole multiple of 15 " \
        f"minutes, zero seconds) (got {off_grid.split(',')[1]!r})" in capsys.readouterr().err
    assert stored("forecasts", url).empty
    # Without the bad row the same layout loads: blank lines and the multi-line cell are fine.
    path.write_text("\n".join(line if line != off_grid else rows[3] for line in lines) + "\n")
    assert load("forecasts", path, url) == 0
    assert len(stored("forecasts", url)) == 96


def test_a_repeated_ts_names_both_rows_and_lines(url, tmp_path, capsys):
    table = forecast_table()
    path = tmp_path / "repeat.csv"
    pd.concat([table, table.iloc[[3]]]).to_csv(path, index=False)
    assert load("forecasts", path, url) == 2
    assert "row 97 (line 98), column ts: 2025-03-10T16:45:00+00:00 for site KL_MALL repeats row 4 (line 5)" in (
        capsys.readouterr().err
    )
    path = tmp_path / "repeat.parquet"
    pd.concat([table, table.iloc[[3]]]).to_parquet(path)
    assert load("forecasts", path, url) == 2
    assert "row 97, column ts: 2025-03-10T16:45:00+00:00 for site KL_MALL repeats row 4\n" in capsys.readouterr().err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize(
    ("row_text", "message"),
    [
        # Every row a field more than the header: pandas would make the first field an index.
        (lambda row: "5," + row, "row 1 (line 2) has 5 fields, the header 4"),
        (lambda row: row + ",", "row 1 (line 2) has 5 fields, the header 4"),
        (lambda row: row.rsplit(",", 1)[0], "row 1 (line 2) has 3 fields, the header 4"),
        (lambda row: row.split(",", 1)[0], "row 1 (line 2) has 1 field, the header 4"),
    ],
)
def test_a_row_with_more_or_fewer_fields_than_the_header_is_named(url, tmp_path, capsys, row_text, message):
    header, *rows = forecast_table().to_csv(index=False).splitlines()
    path = tmp_path / "fields.csv"
    path.write_text("\n".join([header, *(row_text(row) for row in rows)]) + "\n")
    assert load("forecasts", path, url) == 2
    assert message in capsys.readouterr().err
    assert stored("forecasts", url).empty


def test_a_spreadsheets_semicolons_and_decimal_commas_are_named_as_such(url, tmp_path, capsys):
    header, *rows = forecast_table().to_csv(index=False).splitlines()
    european = [line.replace(",", ";") for line in [header, *rows]]
    european[1] = european[1].replace(".", ",")  # 261.84 -> 261,84: a field more for csv
    path = tmp_path / "excel.csv"
    path.write_text("\n".join(european) + "\n")
    assert load("forecasts", path, url) == 2
    err = capsys.readouterr().err
    assert f"row 1 (line 2) has 3 fields, the header 1 (got {european[1]!r})" in err
    assert "the header is the single field 'site_id;ts;load_kw;pv_kw': the first line must name the columns, separated by commas" in err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("site_id,ts,load_kw,pv_kw,pv_kw", "the header names column 'pv_kw' twice (columns 4 and 5)"),
        ("site_id,ts,load_kw,pv_kw,", "the header's column 5 has no name (got '')"),
    ],
)
def test_a_header_column_without_a_name_or_named_twice_is_named_as_written(url, tmp_path, capsys, header, message):
    _, *rows = forecast_table().to_csv(index=False).splitlines()
    path = tmp_path / "header.csv"
    path.write_text("\n".join([header, *(row + ",0" for row in rows)]) + "\n")
    assert load("forecasts", path, url) == 2
    assert capsys.readouterr().err.strip().endswith(f"{path}: {message}")
    assert stored("forecasts", url).empty


def test_a_csv_that_is_not_utf8_names_the_line(url, tmp_path, capsys):
    header, *rows = forecast_table().to_csv(index=False).encode().splitlines()
    rows[ROW - 1] = rows[ROW - 1].replace(b"KL_MALL", b"KL_M\xffLL")
    path = tmp_path / "latin.csv"
    data = codecs.BOM_UTF8 + b"\n".join([header, *rows]) + b"\n"
    path.write_bytes(data)
    assert load("forecasts", path, url) == 2
    offset = data.index(b"\xff")
    expected = f"{path}: not UTF-8 text (line {ROW + 1}, byte {offset}: 0xff)"
    assert expected in capsys.readouterr().err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize(
    ("site_id", "words"),
    [
        # Refused, not trimmed.
        (" KL_MALL", "must match"), ("KL_MALL ", "must match"), ("KL_MALL\n", "must match"),
        # `sites add` refuses these: such a forecast could never belong to a registered site.
        (".", "'.' and '..' cannot name the directory"), ("..", "'.' and '..' cannot name the directory"),
    ],
)
def test_a_site_id_no_site_can_have_is_refused(url, tmp_path, capsys, site_id, words):
    table = forecast_table()
    table.loc[ROW - 1, "site_id"] = site_id
    path = tmp_path / "site_ids.parquet"
    table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    err = capsys.readouterr().err
    assert f"row {ROW}, column site_id: {words}" in err and f"(got {site_id!r})" in err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize("command", list(SERIES))
def test_a_site_id_differing_only_in_case_from_a_registered_one_is_refused(url, tmp_path, capsys, command):
    make_table, _, site_id = SERIES[command]
    upsert_site(open_database(url), demo_site(site_id))
    path = tmp_path / "series.csv"
    make_table(site_id.lower()).to_csv(path, index=False)
    assert load(command, path, url) == 2
    err = capsys.readouterr().err
    # The first row of the id is named, as for any bad cell.
    assert f"{path}: row 1 (line 2), column site_id: differs only in case from the registered site {site_id!r}" in err
    assert f"(got {site_id.lower()!r})" in err
    assert stored(command, url, site_id.lower()).empty


@pytest.mark.parametrize("command", list(SERIES))
def test_two_site_ids_of_one_file_differing_only_in_case_name_both_rows(url, tmp_path, capsys, command):
    make_table, _, site_id = SERIES[command]
    table = pd.concat([make_table("OTHER"), make_table(site_id), make_table(site_id.lower())], ignore_index=True)
    path = tmp_path / "series.csv"
    table.to_csv(path, index=False)
    assert load(command, path, url) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: row 193 (line 194), column site_id: differs only in case from {site_id!r} of row 97 (line 98)"
    ) in err
    assert f"(got {site_id.lower()!r})" in err
    for stored_id in ("OTHER", site_id, site_id.lower()):
        assert stored(command, url, stored_id).empty


def series_file_with_ids_differing_only_in_case(command: str, tmp_path: Path) -> Path:
    """The command's file for its site (rows 1 to 96), then again under its id in lower case."""
    make_table, _, site_id = SERIES[command]
    path = tmp_path / "series.csv"
    pd.concat([make_table(site_id), make_table(site_id.lower())], ignore_index=True).to_csv(path, index=False)
    return path


def case_clash_of(command: str) -> str:
    site_id = SERIES[command][2]
    return (
        f"row 97 (line 98), column site_id: differs only in case from {site_id!r} of row 1 (line 2), "
        f"and no site can be registered under such an id: these rows could never be planned (got {site_id.lower()!r})"
    )


@pytest.mark.parametrize("command", list(SERIES))
def test_a_file_of_ids_differing_only_in_case_leaves_a_database_without_tables_as_it_was(url, tmp_path, capsys, command):
    # No site is registered where there are no tables: asking must not create them.
    path = series_file_with_ids_differing_only_in_case(command, tmp_path)
    assert load(command, path, url) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: {case_clash_of(command)}" in err
    assert tables(url) == []


@pytest.mark.parametrize("command", list(SERIES))
def test_a_file_of_ids_differing_only_in_case_leaves_no_file_in_dagster_home(dagster_home, tmp_path, capsys, command):
    path = series_file_with_ids_differing_only_in_case(command, tmp_path)
    assert main([command, "load", str(path)]) == 2
    assert case_clash_of(command) in capsys.readouterr().err
    assert list(dagster_home.iterdir()) == []


def test_a_parquet_index_is_read_as_the_column_it_was(url, tmp_path, capsys):
    # Saved with an index: a named one is a column (checked like any), row positions are not.
    indexed = tmp_path / "indexed.parquet"
    forecast_table().assign(region="north").set_index("region").to_parquet(indexed)
    assert load("forecasts", indexed, url) == 2
    assert "unexpected column(s) region" in capsys.readouterr().err
    assert stored("forecasts", url).empty

    by_time = tmp_path / "by_time.parquet"
    forecast_table().set_index("ts").to_parquet(by_time)
    positions = tmp_path / "positions.parquet"
    forecast_table().iloc[::-1].to_parquet(positions)  # a non-default index of row positions
    assert load("forecasts", by_time, url) == 0
    assert load("forecasts", positions, url) == 0
    assert len(stored("forecasts", url)) == 96


def test_an_empty_issue_time_is_refused_not_taken_for_now(url, tmp_path, capsys):
    path = tmp_path / "forecast.csv"
    forecast_table().to_csv(path, index=False)
    assert main(["forecasts", "load", str(path), "--issued-at", "", "--database-url", url]) == 2
    assert "--issued-at: not an ISO 8601 timestamp (got '')" in capsys.readouterr().err
    assert stored("forecasts", url).empty


def test_an_issue_time_finer_than_a_microsecond_is_refused(url, tmp_path, capsys):
    path = tmp_path / "forecast.csv"
    forecast_table().to_csv(path, index=False)
    issued_at = "2025-03-10T00:00:00.0000009Z"
    assert main(["forecasts", "load", str(path), "--issued-at", issued_at, "--database-url", url]) == 2
    assert "--issued-at: finer than a microsecond" in capsys.readouterr().err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize("command", SERIES)
def test_loading_again_under_the_same_issue_time_says_what_it_replaced(url, tmp_path, capsys, command):
    make_table, _, site_id = SERIES[command]
    first = make_table()
    value = first.columns[-2]
    path = tmp_path / "first.csv"
    first.to_csv(path, index=False)
    issue = ["--issued-at", "2025-03-09T12:00:00Z", "--database-url", url]
    assert main([command, "load", str(path), *issue]) == 0
    assert "replaced" not in capsys.readouterr().err

    second = first.head(5).assign(**{value: first[value].head(5) + 1.0})
    path = tmp_path / "second.csv"
    second.to_csv(path, index=False)
    assert main([command, "load", str(path), *issue]) == 0
    assert (
        f"note: {site_id}: the issue of 2025-03-09T12:00:00+00:00 already held 5 of this file's 5 interval(s); "
        "this file's values replaced those of 5 (load under another --issued-at to keep both issues); "
        "stale_plan_sensor re-plans the days not yet begun whose plan read a value this changed"
    ) in capsys.readouterr().err
    values = stored(command, url)[value].to_numpy()
    assert values[:5].tolist() == (first[value].head(5) + 1.0).tolist()
    assert values[5:].tolist() == first[value].iloc[5:].tolist()

    # Two of those five changed again, three sent as they are: only two are replaced.
    third = second.assign(**{value: second[value] + [2.0, 2.0, 0.0, 0.0, 0.0]})
    path = tmp_path / "third.csv"
    third.to_csv(path, index=False)
    assert main([command, "load", str(path), *issue]) == 0
    assert "already held 5 of this file's 5 interval(s); this file's values replaced those of 2 (" in (
        capsys.readouterr().err
    )
    # The whole first file again, every value as stored but those of the changed intervals.
    path = tmp_path / "first_again.csv"
    first.iloc[5:].to_csv(path, index=False)
    assert main([command, "load", str(path), *issue]) == 0
    assert (
        f"note: {site_id}: the issue of 2025-03-09T12:00:00+00:00 already held {len(first) - 5} of this file's "
        f"{len(first) - 5} interval(s); with the same values: they stay as they were"
    ) in capsys.readouterr().err

    # The same issue continued on the next day: it repeats none of the stored intervals.
    next_day = first.assign(ts=(pd.to_datetime(first["ts"]) + pd.Timedelta(days=1)).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = tmp_path / "next_day.csv"
    next_day.to_csv(path, index=False)
    assert main([command, "load", str(path), *issue]) == 0
    assert "replaced" not in capsys.readouterr().err

    assert main([command, "load", str(path), "--issued-at", "2025-03-09T13:00:00Z", "--database-url", url]) == 0
    assert "replaced" not in capsys.readouterr().err


@pytest.mark.parametrize("command", SERIES)
def test_an_issue_older_than_a_stored_one_says_which_intervals_plans_read_from_the_newer(url, tmp_path, capsys, command):
    make_table, _, site_id = SERIES[command]
    table = make_table()
    value = table.columns[-2]
    path = tmp_path / "series.csv"
    table.head(10).to_csv(path, index=False)
    assert main([command, "load", str(path), "--issued-at", "2025-03-09T12:00:00Z", "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert "later issue" not in err
    assert out.endswith(f"database: {url}\n")  # which of --database-url, DATABASE_URL, .env: said

    # A corrected file reloaded under an older issue time: 10 of its intervals stay as issued at 12:00.
    table.assign(**{value: table[value] + 1.0}).to_csv(path, index=False)
    assert main([command, "load", str(path), "--issued-at", "2025-03-09T11:00:00Z", "--database-url", url]) == 0
    err = capsys.readouterr().err
    assert (
        f"note: {site_id}: 10 of this file's 96 interval(s) are also in a later issue (the latest issued at "
        "2025-03-09T12:00:00+00:00), whose values plans read instead; load without --issued-at to make this "
        "file's values the current ones"
    ) in err
    # Its other 86 intervals change what plans read, under an issue time older than theirs.
    assert (
        "; plans read the other 86 from this file, and stale_plan_sensor re-plans the days not yet begun "
        "whose plan read other values for them"
    ) in err
    values = stored(command, url)[value].to_numpy()
    assert values[:10].tolist() == table[value].head(10).tolist()
    assert values[10:].tolist() == (table[value].iloc[10:] + 1.0).tolist()


@pytest.mark.parametrize("name", ["forecasts", "forecasts.csv"])
def test_a_directory_is_named_as_one(url, tmp_path, capsys, name):
    (tmp_path / name).mkdir()
    assert load("forecasts", tmp_path / name, url) == 2
    assert f"{tmp_path / name}: a directory, not a file; give a .csv or .parquet file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["1_5", "１２", "0x1A", "1,5"])
def test_only_decimal_numbers_are_numbers(url, tmp_path, capsys, text):
    table = forecast_table().astype({"load_kw": object})
    table.loc[ROW - 1, "load_kw"] = text
    path = tmp_path / "number.csv"
    table.to_csv(path, index=False)
    assert load("forecasts", path, url) == 2
    assert f"row {ROW} (line {ROW + 1}), column load_kw: not a number (got {text!r})" in capsys.readouterr().err
    assert stored("forecasts", url).empty


def test_parquet_integer_and_decimal_columns_load_and_a_null_is_named_missing(url, tmp_path, capsys):
    from decimal import Decimal

    table = with_timestamps(forecast_table())
    table["load_kw"] = table["load_kw"].round().astype("Int64")  # pandas' nullable integers
    table["pv_kw"] = [Decimal(str(round(value, 3))) for value in table["pv_kw"]]
    path = tmp_path / "typed.parquet"
    table.to_parquet(path)
    assert load("forecasts", path, url) == 0
    assert stored("forecasts", url)["load_kw"].tolist() == table["load_kw"].astype(float).tolist()

    table.loc[ROW - 1, "load_kw"] = pd.NA
    table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    assert f"row {ROW}, column load_kw: missing (got <NA>)" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("tail", ["\x00junk", "\x00"])
def test_a_ts_with_a_nul_character_is_refused_not_read_up_to_it(url, tmp_path, capsys, suffix, tail):
    # datetime.fromisoformat stops at a NUL: "…Z\x00junk" would pass as "…Z", the rest dropped.
    table = forecast_table()
    table.loc[ROW - 1, "ts"] += tail
    path = tmp_path / f"nul{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    line = f" (line {ROW + 1})" if suffix == ".csv" else ""
    bad = table.loc[ROW - 1, "ts"]
    assert f"row {ROW}{line}, column ts: not an ISO 8601 timestamp (got {bad!r})" in capsys.readouterr().err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize(
    ("cell", "column", "message"),
    [
        # Read leniently (pandas, csv without strict), '"1"5' is the number 15.
        ('"1"5', "load_kw", "text follows the closing quote of a quoted cell (got '\"1\"5')"),
        ('""0.5', "pv_kw", "text follows the closing quote of a quoted cell (got '\"\"0.5')"),
        ('"KL"_MALL', "site_id", "text follows the closing quote of a quoted cell (got '\"KL\"_MALL')"),
    ],
)
def test_text_after_a_quoted_cells_closing_quote_is_refused_naming_the_cell(url, tmp_path, capsys, cell, column, message):
    header, *rows = forecast_table().to_csv(index=False).splitlines()
    cells = rows[ROW - 1].split(",")
    cells[header.split(",").index(column)] = cell
    rows[ROW - 1] = ",".join(cells)
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    assert load("forecasts", path, url) == 2
    assert f"row {ROW} (line {ROW + 1}), column {column}: {message}" in capsys.readouterr().err
    assert stored("forecasts", url).empty


def test_a_quoted_cell_never_closed_is_named(url, tmp_path, capsys):
    header, *rows = forecast_table().to_csv(index=False).splitlines()
    site_id, ts, load_kw, pv_kw = rows[ROW - 1].split(",")
    rows[ROW - 1] = f'{site_id},{ts},"{load_kw},{pv_kw}'
    path = tmp_path / "unclosed.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    assert load("forecasts", path, url) == 2
    err = capsys.readouterr().err
    assert f"row {ROW} (line {ROW + 1}), column load_kw: a quoted cell is never closed: it runs to the end of the file" in err
    assert stored("forecasts", url).empty


@pytest.mark.parametrize("text", ["1e400", "-1e99999", "1" + "0" * 400])
def test_a_number_beyond_a_floats_range_is_refused_as_too_large_not_as_infinite(url, tmp_path, capsys, text):
    table = price_table().astype({"buy": object})
    table.loc[ROW - 1, "buy"] = text
    path = tmp_path / "huge.csv"
    table.to_csv(path, index=False)
    assert load("prices", path, url) == 2
    assert f"row {ROW} (line {ROW + 1}), column buy: must lie within ±1e+09 (got {text!r})" in capsys.readouterr().err
    assert stored("prices", url).empty


@pytest.mark.parametrize("column", ["site_id", "ts"])
def test_a_null_in_a_parquet_text_column_is_named_missing(url, tmp_path, capsys, column):
    table = forecast_table()  # site_id and ts as text: a null arrives as NaN
    table.loc[ROW - 1, column] = None
    path = tmp_path / "null.parquet"
    table.to_parquet(path)
    assert load("forecasts", path, url) == 2
    assert f"row {ROW}, column {column}: missing (got nan, a null of a text column)" in capsys.readouterr().err
    assert stored("forecasts", url).empty


def test_the_case_check_takes_more_site_ids_than_one_statement_takes_parameters(url):
    # A file of 70,000 sites is checked against the registered ids in one pass: one IN list of
    # them all would pass psycopg's limit of 65,535 parameters, and the load would fail.
    from dispatch_pipeline.storage.sites import case_clashes

    engine = open_database(url)
    upsert_site(engine, demo_site("KL_MALL"))
    site_ids = [f"S{index}" for index in range(70_000)] + ["kl_mall", "KL_MALL"]
    with engine.connect() as connection:
        assert case_clashes(connection, site_ids) == {"kl_mall": ("KL_MALL", True)}
