"""Loading issued series (forecasts, prices) from CSV or Parquet files, for `forecasts load` and
`prices load`.

A file has columns site_id, ts and the series' value columns (ts: ISO 8601 with a UTC offset,
the interval start). The whole file is checked before anything is written, and all its sites
are written in one transaction: one bad cell rejects it, naming the row and the column.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch_pipeline.cli import UsageError
from dispatch_pipeline.core.request import SITE_ID_PATTERN

SITE_ID = re.compile(SITE_ID_PATTERN)


@dataclass(frozen=True)
class SeriesFile:
    """What one kind of series file holds and where it is stored."""

    command: str  # the subcommand: `<command> load FILE`
    what: str  # in messages: "forecast", "price series"
    value_columns: tuple[str, ...]
    non_negative: bool
    save: str  # the dispatch_pipeline.storage function storing {site_id: frame}
    description: str  # the subcommand's --help

    @property
    def columns(self) -> tuple[str, ...]:
        return ("site_id", "ts", *self.value_columns)


def register_loader(subcommands: argparse._SubParsersAction, spec: SeriesFile) -> None:
    parser = subcommands.add_parser(spec.command, help=f"store {spec.what} issues", description=spec.description)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load", help=f"load a CSV or Parquet file ({', '.join(spec.columns)})"
    )
    load.add_argument("file", metavar="FILE", help="*.csv or *.parquet")
    load.add_argument(
        "--issued-at",
        default=None,
        help=f"when the {spec.what} was issued (ISO 8601 with offset; default: now)",
    )
    load.add_argument("--database-url", default=None, help="override DATABASE_URL")
    load.set_defaults(handler=lambda args: run_load(args, spec))


def read_table(path: Path) -> Any:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Everything as text: the checks below parse and report each cell themselves.
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise UsageError(f"{path}: cannot read as {suffix[1:]}: {exc}") from None
    raise UsageError(f"{path}: unknown format {suffix or '(none)'!r}; use .csv or .parquet")


def _number(value: Any, where: str, non_negative: bool) -> float:
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"{where}: not a number (got {value!r})") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: not a number (got {value!r})")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise UsageError(f"{where}: must be finite (got {value!r})")
    if non_negative and number < 0:
        raise UsageError(f"{where}: must be >= 0 (got {value!r})")
    return number


def parse_timestamp(value: Any, where: str) -> dt.datetime:
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        parsed = value.to_pydatetime()
    elif isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(f"{where}: not an ISO 8601 timestamp (got {value!r})") from None
    else:
        raise UsageError(f"{where}: not a timestamp (got {value!r})")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise UsageError(f"{where}: needs a UTC offset such as Z or +08:00 (got {value!r})")
    return parsed.astimezone(dt.UTC)


def validate(table: Any, source: str, spec: SeriesFile) -> dict[str, list[tuple[Any, ...]]]:
    """Rows (ts, *values) grouped by site; raises UsageError at the first bad cell (rows count
    from 1)."""
    columns = spec.columns
    need = ", ".join(columns)
    missing = [name for name in columns if name not in table.columns]
    if missing:
        raise UsageError(f"{source}: missing column(s) {', '.join(missing)} (need {need})")
    extra = [str(name) for name in table.columns if name not in columns]
    if extra:
        raise UsageError(f"{source}: unexpected column(s) {', '.join(extra)} (need {need})")
    if table.empty:
        raise UsageError(f"{source}: no rows")
    by_site: dict[str, list[tuple[Any, ...]]] = {}
    first_row: dict[tuple[str, dt.datetime], int] = {}
    for index, (site_id, ts, *values) in enumerate(
        table[list(columns)].itertuples(index=False, name=None), start=1
    ):
        row = f"{source}: row {index}"
        if not isinstance(site_id, str) or not SITE_ID.fullmatch(site_id.strip()):
            raise UsageError(f"{row}, column site_id: must match {SITE_ID.pattern} (got {site_id!r})")
        site_id = site_id.strip()
        instant = parse_timestamp(ts, f"{row}, column ts")
        if (site_id, instant) in first_row:
            raise UsageError(
                f"{row}, column ts: {instant.isoformat()} for site {site_id} repeats row "
                f"{first_row[site_id, instant]}"
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

    path = Path(args.file)
    by_site = validate(read_table(path), str(path), spec)
    issued_at = (
        parse_timestamp(args.issued_at, "--issued-at") if args.issued_at else dt.datetime.now(dt.UTC)
    )
    engine = storage.open_database(args.database_url)
    frames = {}
    for site_id, rows in sorted(by_site.items()):
        frame = pd.DataFrame(rows, columns=["ts", *spec.value_columns])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frames[site_id] = frame
    try:
        counts = getattr(storage, spec.save)(engine, frames, issued_at)
    except storage.StorageInputError as exc:
        raise UsageError(f"{path}: {exc}") from None
    registered = {site.site_id for site in storage.list_sites(engine)}
    for site_id, count in counts.items():
        known = "" if site_id in registered else " (site not registered yet)"
        print(f"{site_id}: {count} interval(s) stored, issued at {issued_at.isoformat()}{known}")
    return 0
