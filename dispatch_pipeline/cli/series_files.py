"""Loading issued series (forecasts, prices) from CSV or Parquet files, for `forecasts load` and
`prices load`.

A file has columns site_id, ts and the series' value columns (ts: ISO 8601 with a UTC offset,
the interval start, on the pipeline's 15-minute grid). The whole file is checked before anything is
written, and all its sites are written in one transaction: one bad cell rejects it, naming the row
(data rows count from 1; a CSV's also names the line, the header being line 1), the column and
the value.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import math
import numbers
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from dispatch_pipeline.cli import UsageError, add_database_url_option, say_where_stored
from dispatch_pipeline.core.calendar import FIRST_DATE, LAST_DATE
from dispatch_pipeline.core.documents import DocumentError, decode_utf8
from dispatch_pipeline.core.request import MAX_MAGNITUDE, SITE_ID_PATTERN, site_id_problem

SITE_ID = re.compile(SITE_ID_PATTERN)
# A fraction of a second with a digit other than 0: datetime.fromisoformat keeps microseconds only,
# so "04:00:00.0000001Z" would otherwise pass as 04:00.
NONZERO_FRACTION = re.compile(r"[.,]\d*[1-9]")
# A digit other than 0 past the sixth of a fraction: what a stored time cannot hold.
SUB_MICROSECOND = re.compile(r"[.,]\d{6}\d*[1-9]")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A decimal number in ASCII digits (or a word for infinity or NaN, refused later as not finite).
DECIMAL_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE
)
# Instants whose local date lies within FIRST_DATE..LAST_DATE in every timezone (UTC offsets are
# under a day), so every row belongs to a local day that can be planned.
FIRST_INSTANT = dt.datetime.combine(FIRST_DATE + dt.timedelta(days=1), dt.time(), dt.UTC)
END_INSTANT = dt.datetime.combine(LAST_DATE, dt.time(), dt.UTC)
# How far ahead of this machine's clock an issue time may lie (clocks of other machines drift).
# Later than that it is a typo, and as the most recent issue it would hide every real one.
ISSUE_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class SeriesFile:
    """What one kind of series file holds and where it is stored."""

    command: str  # the subcommand: `<command> load FILE`
    what: str  # in messages: "forecast", "price series"
    value_columns: tuple[str, ...]
    non_negative: bool
    save: str  # the dispatch_pipeline.storage function storing {site_id: frame}
    load: str  # the one reading a site's latest issue per interval back
    issue_counts: str  # the one counting which of a site's intervals an issue time already holds
    description: str  # the subcommand's --help

    @property
    def columns(self) -> tuple[str, ...]:
        return ("site_id", "ts", *self.value_columns)


def register_loader(subcommands: argparse._SubParsersAction, spec: SeriesFile) -> None:
    parser = subcommands.add_parser(spec.command, help=f"store {spec.what} issues", description=spec.description)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    columns = ", ".join(spec.columns)
    load = actions.add_parser(
        "load",
        help=f"load a CSV or Parquet file ({columns})",
        description=f"Store a CSV or Parquet file of {spec.what} issues ({columns}), checked whole.",
    )
    load.add_argument("file", metavar="FILE", help="*.csv or *.parquet")
    load.add_argument(
        "--issued-at",
        default=None,
        help=f"when the {spec.what} was issued (ISO 8601 with offset; default: now)",
    )
    add_database_url_option(load)
    load.set_defaults(handler=lambda args: run_load(args, spec))


PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: Path) -> Any:
    import pandas as pd

    suffix = path.suffix.lower()
    if path.is_dir() and suffix not in PARQUET_SUFFIXES:  # a Parquet dataset may be a directory
        raise UsageError(f"{path}: a directory, not a file; give a .csv or .parquet file")
    try:
        if suffix == ".csv":
            # Everything as text: the checks below parse and report each cell themselves.
            # index_col=False: a row with a field more than the header must not turn its first
            # field into an index (csv_lines refuses such rows first).
            return pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
        if suffix in PARQUET_SUFFIXES:
            table = pd.read_parquet(path)
            # A column saved as the frame's index (set_index("ts")) is data like any other; only
            # unnamed row labels (a filtered frame's positions) are not.
            named = [name for name in table.index.names if name is not None]
            return table.reset_index(level=named) if named else table
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise UsageError(f"{path}: cannot read as {suffix[1:]}: {exc}") from None
    raise UsageError(f"{path}: unknown format {suffix or '(none)'!r}; use .csv or .parquet")


def check_csv_text(path: Path) -> None:
    """UsageError for a CSV that is not UTF-8 text, naming the line, or whose header leaves a
    column without a name or names one twice: pandas would report a byte offset of its own
    buffer, and rename such columns ("Unnamed: 4", "pv_kw.1") into names the file never had.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return  # read_table says why
    try:
        text = decode_utf8(data)
    except DocumentError as exc:
        raise UsageError(f"{path}: {exc}") from None
    try:
        header = next((r for r in csv.reader(text.splitlines()) if len(r) > 1 or (r and r[0].strip())), [])
    except csv.Error:
        return  # read_table says why
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise UsageError(f"{path}: the header's column {position} has no name (got {name!r})")
        if header.index(name) != position - 1:
            raise UsageError(
                f"{path}: the header names column {name!r} twice (columns {header.index(name) + 1} and {position})"
            )


def csv_lines(path: Path) -> list[int] | None:
    """The line of the CSV `path` each data row starts on (the header is line 1), or None when
    the file cannot be read as CSV here (read_table says why). UsageError for a row whose number
    of fields is not the header's: pandas would drop or shift a field without a word.

    Not simply row + 1: pandas skips blank (and whitespace-only) lines and a quoted cell may span
    lines.
    """
    starts: list[int] = []
    header: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
            # strict: a quoted cell going on after its closing quote ('"1"5') is an error, which
            # pandas would read as the cell 15, and so would a lenient reader.
            reader = csv.reader(file, strict=True)
            start = 1
            try:
                for record in reader:
                    if len(record) > 1 or (record and record[0].strip()):
                        if not starts:
                            header = record
                        elif len(record) != len(header):
                            raise UsageError(
                                f"{path}: row {len(starts)} (line {start}) has {len(record)} field{'' if len(record) == 1 else 's'}, the header "
                                f"{len(header)} (got {_shortened(','.join(record))!r}){_one_field_hint(header)}"
                            )
                        starts.append(start)
                    start = reader.line_num + 1
            except csv.Error:
                where = f"row {len(starts)} (line {start})" if starts else f"the header (line {start})"
                _refuse_misquoted_cell(path, start, reader.line_num, where, header)
                raise
    except (OSError, csv.Error):
        return None
    return starts[1:]  # starts[0]: the header


def _refuse_misquoted_cell(path: Path, first_line: int, last_line: int, where: str, header: list[str]) -> None:
    """UsageError naming the cell of the CSV record on lines first_line..last_line whose quoting
    is broken: text after its closing quote, or no closing quote at all; nothing if neither."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        record = "".join(itertools.islice(file, first_line - 1, last_line))
    column, cell_start, index = 0, 0, 0
    while index < len(record):
        if record[index] == '"' and index == cell_start:  # a quoted cell: on to its closing quote
            close = record.find('"', index + 1)
            while close != -1 and record.startswith('"', close + 1):  # a quote written twice
                close = record.find('"', close + 2)
            if close == -1:
                cell_end, problem = len(record), "a quoted cell is never closed: it runs to the end of the file"
                break
            index = close + 1
            if index < len(record) and record[index] not in ",\r\n":
                ends = [found for separator in ",\r\n" if (found := record.find(separator, index)) != -1]
                cell_end, problem = min(ends, default=len(record)), "text follows the closing quote of a quoted cell"
                break
            continue
        if record[index] == ",":
            column, cell_start = column + 1, index + 1
        index += 1
    else:
        return
    name = header[column] if column < len(header) else str(column + 1)
    raise UsageError(
        f"{path}: {where}, column {name}: {problem} (got {_shortened(record[cell_start:cell_end])!r}); "
        'quote a whole cell, and write a quote within one twice ("")'
    )


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_field_hint(header: list[str]) -> str:
    """A header read as one field: another separator (a spreadsheet's ';'), or a first line that
    is not the header at all (a comment)."""
    if len(header) != 1:
        return ""
    return (
        f"; the header is the single field {_shortened(header[0])!r}: the first line must name the "
        "columns, separated by commas"
    )


def _number(value: Any, where: str, non_negative: bool) -> float:
    if isinstance(value, str):
        text = value.strip()
        # float() also reads "1_5" as 15 and other scripts' digits: not what a file means.
        if not DECIMAL_NUMBER.fullmatch(text):
            raise UsageError(f"{where}: not a number (got {value!r})")
        number = float(text)
        if math.isinf(number) and text.lstrip("+-").lower() not in ("inf", "infinity"):
            # "1e400" is finite as written: float() only cannot hold it.
            raise UsageError(f"{where}: must lie within ±{MAX_MAGNITUDE:.0e} (got {value!r})")
    elif _is_missing(value):
        raise UsageError(f"{where}: missing (got {value!r})")
    elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | Decimal):
        raise UsageError(f"{where}: not a number (got {value!r})")
    else:
        number = float(value)
    # Decimal only for a zero: this runs once per cell of a file.
    if number == 0 and (Decimal(text) if isinstance(value, str) else value) != 0:
        # float() turns 1e-400 into 0 (and -1e-400 into a zero that passes ">= 0").
        raise UsageError(f"{where}: too close to 0 for a number to hold; write 0 (got {value!r})")
    if not math.isfinite(number):
        # A Parquet file's float null arrives as NaN too: the message must not call it a NaN.
        missing = ": NaN, or a missing value of a float column" if math.isnan(number) and not isinstance(value, str) else ""
        raise UsageError(f"{where}: must be finite (got {value!r}{missing})")
    if non_negative and number < 0:
        raise UsageError(f"{where}: must be >= 0 (got {value!r})")
    if abs(number) > MAX_MAGNITUDE:
        raise UsageError(f"{where}: must lie within ±{MAX_MAGNITUDE:.0e} (got {value!r})")
    return number


def _is_missing(value: Any) -> bool:
    """A Parquet null: None, pandas' NA or NaT (a float null arrives as NaN: not finite)."""
    import pandas as pd

    return value is None or value is pd.NA or value is pd.NaT


def _missing_text(value: Any, where: str) -> None:
    """UsageError for a Parquet null in a column of text (site_id, ts): pandas hands it over as a
    float NaN, which no message should call an id or a time that is wrong."""
    if _is_missing(value):
        raise UsageError(f"{where}: missing (got {value!r})")
    if isinstance(value, float) and math.isnan(value):
        raise UsageError(f"{where}: missing (got {value!r}, a null of a text column)")


def parse_timestamp(value: Any, where: str) -> dt.datetime:
    import pandas as pd

    _missing_text(value, where)
    if isinstance(value, pd.Timestamp):
        # Nanoseconds are dropped here; check_interval_start looks at the Timestamp itself.
        parsed = value.to_pydatetime(warn=False)
    elif isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            # fromisoformat stops reading at a NUL: "...Z\x00junk" would pass as "...Z".
            if "\x00" in value:
                raise ValueError("a NUL character")
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(f"{where}: not an ISO 8601 timestamp (got {value!r})") from None
    else:
        raise UsageError(f"{where}: not a timestamp (got {value!r})")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise UsageError(f"{where}: needs a UTC offset such as Z or +08:00 (got {value!r})")
    try:
        instant = parsed.astimezone(dt.UTC)
    except OverflowError:  # the offset moves it past year 1 or 9999
        instant = None
    if instant is None or not FIRST_INSTANT <= instant < END_INSTANT:
        raise UsageError(
            f"{where}: outside the supported range {FIRST_INSTANT:%Y-%m-%dT%H:%MZ} to "
            f"{END_INSTANT - dt.timedelta(minutes=15):%Y-%m-%dT%H:%MZ}, whose local days lie within "
            f"{FIRST_DATE} to {LAST_DATE} in every timezone (got {value!r})"
        )
    return instant


def parse_issue_time(text: str) -> dt.datetime:
    if SUB_MICROSECOND.search(text):
        raise UsageError(f"--issued-at: finer than a microsecond, the most a stored issue time holds (got {text!r})")
    return parse_timestamp(text, "--issued-at")


def check_interval_start(value: Any, instant: dt.datetime, where: str, minutes: int) -> None:
    """Raise UsageError unless `instant` (`value` parsed) starts an interval of the `minutes` grid:
    a whole number of intervals since the epoch, so zero seconds and sub-seconds."""
    import pandas as pd

    nanoseconds = (isinstance(value, pd.Timestamp) and value.nanosecond != 0) or (
        isinstance(value, str) and NONZERO_FRACTION.search(value) is not None
    )
    if nanoseconds or (instant - EPOCH) % dt.timedelta(minutes=minutes):
        raise UsageError(
            f"{where}: must start a {minutes}-minute interval (a whole multiple of {minutes} "
            f"minutes, zero seconds) (got {value!r})"
        )


def _row_name(index: int, lines: Sequence[int] | None) -> str:
    """Data row `index` (from 1), with the line it starts on when `lines` are known."""
    return f"row {index}" if lines is None else f"row {index} (line {lines[index - 1]})"


def validate(
    table: Any, source: str, spec: SeriesFile, lines: Sequence[int] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows (ts, *values) grouped by site; raises UsageError at the first bad cell.

    Rows count from 1 over the data rows; `lines`, for a CSV, are the lines they start on (see
    csv_lines), named beside the row number.
    """
    from dispatch_pipeline.core.calendar import PIPELINE_RESOLUTION_MINUTES

    def row_name(index: int) -> str:
        return _row_name(index, lines)

    columns = spec.columns
    need = ", ".join(columns)
    missing = [name for name in columns if name not in table.columns]
    # The columns as read tell what went wrong: a ';' separator, spaces around names, a second BOM.
    found = f"found {', '.join(repr(str(name)) for name in table.columns)}"
    if missing:
        raise UsageError(f"{source}: missing column(s) {', '.join(missing)} (need {need}; {found})")
    extra = [str(name) for name in table.columns if name not in columns]
    if extra:
        raise UsageError(f"{source}: unexpected column(s) {', '.join(extra)} (need {need}; {found})")
    if table.empty:
        raise UsageError(f"{source}: no rows")
    by_site: dict[str, list[tuple[Any, ...]]] = {}
    first_row: dict[tuple[str, dt.datetime], int] = {}
    for index, (site_id, ts, *values) in enumerate(
        table[list(columns)].itertuples(index=False, name=None), start=1
    ):
        row = f"{source}: {row_name(index)}"
        _missing_text(site_id, f"{row}, column site_id")
        if not isinstance(site_id, str) or not SITE_ID.fullmatch(site_id):
            raise UsageError(f"{row}, column site_id: must match {SITE_ID.pattern} (got {site_id!r})")
        if wrong := site_id_problem(site_id):
            raise UsageError(f"{row}, column site_id: {wrong} (got {site_id!r})")
        instant = parse_timestamp(ts, f"{row}, column ts")
        check_interval_start(ts, instant, f"{row}, column ts", PIPELINE_RESOLUTION_MINUTES)
        if (site_id, instant) in first_row:
            raise UsageError(
                f"{row}, column ts: {instant.isoformat()} for site {site_id} repeats "
                f"{row_name(first_row[site_id, instant])}"
            )
        first_row[site_id, instant] = index
        numbers = (
            _number(value, f"{row}, column {name}", spec.non_negative)
            for name, value in zip(spec.value_columns, values, strict=True)
        )
        by_site.setdefault(site_id, []).append((instant, *numbers))
    return by_site


def run_load(args: argparse.Namespace, spec: SeriesFile) -> int:
    import pandas as pd

    from dispatch_pipeline import storage
    from dispatch_pipeline.cli.dagster_home import application_database_url

    path = Path(args.file)
    is_csv = path.suffix.lower() == ".csv"
    if is_csv:
        check_csv_text(path)
    # First: a row with a field too many or too few is named here, before pandas shifts it.
    lines = csv_lines(path) if is_csv else None
    table = read_table(path)
    if lines is not None and len(lines) != len(table):
        lines = None  # rows pandas split differently: name rows without their lines
    by_site = validate(table, str(path), spec, lines)
    now = dt.datetime.now(dt.UTC)
    issued_at = parse_issue_time(args.issued_at) if args.issued_at is not None else now
    if issued_at > now + ISSUE_CLOCK_SKEW:
        raise UsageError(
            f"--issued-at: {args.issued_at!r} lies in the future; the most recently issued "
            f"{spec.what} wins, so it would hide every real issue until then"
        )
    from dispatch_pipeline.storage.database import engine_for_checks

    url = application_database_url(args.database_url)
    # The registered sites are read from the schema as it stands: opening the database (which
    # creates it, or its tables, or migrates an older schema) waits until the file is accepted.
    # Where it does not exist yet or has no tables, no site is registered: the file's ids are
    # compared only with each other.
    refuse_rows_of_case_clashing_ids(engine_for_checks(url), table, list(by_site), str(path), lines)
    engine = storage.open_database(url)
    frames = {}
    for site_id, rows in sorted(by_site.items()):
        frame = pd.DataFrame(rows, columns=["ts", *spec.value_columns])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frames[site_id] = frame
    # An issue is its site and issue time: loading under an --issued-at already used overwrites
    # the intervals it repeats, which the operator hears about rather than finds out later.
    earlier = getattr(storage, spec.issue_counts)(engine, frames, issued_at) if args.issued_at is not None else {}
    try:
        counts = getattr(storage, spec.save)(engine, frames, issued_at)
    except storage.StorageInputError as exc:
        raise UsageError(f"{path}: {exc}") from None
    valid, invalid = storage.read_sites(engine)
    sites = {site.site_id: site for site in valid}
    registered = set(sites) | {fault.site_id for fault in invalid}
    for site_id, count in counts.items():
        known = "" if site_id in registered else " (site not registered yet)"
        print(f"{site_id}: {count} interval(s) stored, issued at {issued_at.isoformat()}{known}")
        if (repeated := earlier.get(site_id)) and repeated.held:
            held = f"the issue of {issued_at.isoformat()} already held {repeated.held} of this file's {count} interval(s)"
            print(
                f"dispatch-pipeline {spec.command}: note: {site_id}: {held}; "
                + (
                    f"this file's values replaced those of {repeated.changed} (load under another --issued-at to "
                    "keep both issues); stale_plan_sensor re-plans the days not yet begun whose plan read a "
                    "value this changed"
                    if repeated.changed else "with the same values: they stay as they were"
                ),
                file=sys.stderr,
            )
        if args.issued_at is not None and (hidden := hidden_by_later_issues(engine, spec, site_id, frames[site_id], issued_at)):
            print(f"dispatch-pipeline {spec.command}: note: {site_id}: {hidden}", file=sys.stderr)
        if site_id in sites:
            for note in stored_day_notes(engine, spec, sites[site_id], frames[site_id]):
                print(f"dispatch-pipeline {spec.command}: note: {site_id}: {note}", file=sys.stderr)
    say_where_stored(engine)
    return 0


def refuse_rows_of_case_clashing_ids(
    engine: Any, table: Any, site_ids: Sequence[str], source: str, lines: Sequence[int] | None
) -> None:
    """UsageError naming the first row of a site id (of `site_ids`, in file order) that differs
    only in case from a registered site's or from one earlier in the file: no site can be
    registered under it. (Storage refuses it too, without a row to name.) `engine` None: a
    database without tables, where no site is registered."""
    from dispatch_pipeline.storage.sites import case_clashes

    if engine is None:
        clashes = case_clashes(None, site_ids)
    else:
        with engine.connect() as connection:
            clashes = case_clashes(connection, site_ids)
    clash = next(iter(clashes.items()), None)
    if clash is None:
        return
    site_id, (other, registered) = clash
    ids = table["site_id"]

    def first_row(value: str) -> str:
        return _row_name(int((ids == value).to_numpy().argmax()) + 1, lines)

    whose = f"the registered site {other!r}" if registered else f"{other!r} of {first_row(other)}"
    raise UsageError(
        f"{source}: {first_row(site_id)}, column site_id: differs only in case from {whose}, and no "
        f"site can be registered under such an id: these rows could never be planned (got {site_id!r})"
    )


def hidden_by_later_issues(engine: Any, spec: SeriesFile, site_id: str, frame: Any, issued_at: dt.datetime) -> str | None:
    """What a plan will not read of an issue loaded with an --issued-at older than stored ones:
    per interval, the most recently issued value wins."""
    from dispatch_pipeline import storage

    end = frame["ts"].max() + dt.timedelta(minutes=1)
    stored = getattr(storage, spec.load)(engine, site_id, frame["ts"].min().to_pydatetime(), end.to_pydatetime())
    later_in_span = stored[stored["issued_at"] > issued_at]
    if later_in_span.empty:
        return None
    later = later_in_span[later_in_span["ts"].isin(frame["ts"])]
    notes = []
    if not later.empty:
        notes.append(
            f"{len(later)} of this file's {len(frame)} interval(s) are also in a later issue (the latest issued "
            f"at {later['issued_at'].max().isoformat()}), whose values plans read instead; load without "
            "--issued-at to make this file's values the current ones"
        )
    if len(later) < len(frame):
        # A plan made from the later issue read other values for the rest of this file's
        # intervals: rows written after it, which the sensor sees whatever their issue time.
        notes.append(
            f"plans read the other {len(frame) - len(later)} from this file, and stale_plan_sensor "
            "re-plans the days not yet begun whose plan read other values for them"
        )
    return "; ".join(notes)


# A PV forecast above this multiple of the site's peak power is not a forecast of that site's PV.
PLAUSIBLE_PV_PEAK_RATIO = 1.5


def stored_day_notes(engine: Any, spec: SeriesFile, site: Any, frame: Any) -> list[str]:
    """What the stored series now lacks on the local days this file touched, and PV beyond the
    site's size: both would otherwise surface only when the day is planned."""
    from dispatch_pipeline import storage
    from dispatch_pipeline.core.calendar import PIPELINE_RESOLUTION_MINUTES, describe_missing

    notes = []
    days, unplannable = {}, []
    for date in sorted(set(frame["ts"].dt.tz_convert(site.timezone).dt.date)):
        try:
            days[date] = site.local_day(date, PIPELINE_RESOLUTION_MINUTES)
        except ValueError as exc:  # a historical day no quarter-hour grid fits (Monrovia 1972-01-07)
            unplannable.append(str(exc))
    if unplannable:
        notes.append(f"{len(unplannable)} local day(s) cannot be planned at all: {_first_five(unplannable)}")
    if days:
        start = min(day.start_utc for day in days.values())
        end = max(day.end_utc for day in days.values())
        stored = getattr(storage, spec.load)(engine, site.site_id, start, end)
        stored_starts = set(stored["ts"])
        incomplete = []
        for date, day in days.items():
            missing = [ts for ts in day.timestamps() if ts not in stored_starts]
            if missing:
                incomplete.append(
                    f"{date} (has {day.intervals - len(missing)} of {day.intervals} intervals; lacks "
                    f"{describe_missing(missing, day.resolution_minutes)})"
                )
        if incomplete:
            notes.append(
                f"the stored {spec.what} still misses intervals of {len(incomplete)} local day(s) in "
                f"{site.timezone}: {_first_five(incomplete)}; such a day cannot be planned until they are loaded"
            )
    if "pv_kw" in frame:
        peak = float(frame["pv_kw"].max())
        if site.pv_kwp == 0 and peak > 0:
            notes.append(
                f"pv_kw peaks at {peak:g} kW, but the site's pv_kwp is 0 (no PV): is the file for "
                "this site, or is its pv_kwp out of date?"
            )
        elif peak > PLAUSIBLE_PV_PEAK_RATIO * site.pv_kwp:
            notes.append(
                f"pv_kw peaks at {peak:g} kW, {peak / site.pv_kwp:.1f} times the site's pv_kwp of "
                f"{site.pv_kwp:g}: is the file in kW (not W), and for this site?"
            )
    return notes


def _first_five(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
