"""`dispatch-pipeline forecasts load FILE`: store load/PV forecasts from CSV or Parquet.

The file has columns site_id, ts, load_kw, pv_kw (ts: ISO 8601 with a UTC offset, the interval
start). The whole file is checked before anything is written: one bad cell rejects it, naming
the row and the column.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

from dispatch_pipeline.cli import UsageError

COLUMNS = ("site_id", "ts", "load_kw", "pv_kw")
SITE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "forecasts",
        help="store load and PV forecasts",
        description="Store forecasts in the application database (DATABASE_URL, else SQLite "
        "under DAGSTER_HOME). A newer issue of the same interval wins when plans read them.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="load a CSV or Parquet file (site_id, ts, load_kw, pv_kw)")
    load.add_argument("file", metavar="FILE", help="*.csv or *.parquet")
    load.add_argument(
        "--issued-at",
        default=None,
        help="when the forecast was issued (ISO 8601 with offset; default: now)",
    )
    load.add_argument("--database-url", default=None, help="override DATABASE_URL")
    load.set_defaults(handler=run_load)


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


def _number(value: Any, where: str) -> float:
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
    if number < 0:
        raise UsageError(f"{where}: must be >= 0 (got {value!r})")
    return number


def _timestamp(value: Any, where: str) -> dt.datetime:
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


def validate(table: Any, source: str) -> dict[str, list[tuple[dt.datetime, float, float]]]:
    """Rows grouped by site; raises UsageError at the first bad cell (rows count from 1)."""
    missing = [name for name in COLUMNS if name not in table.columns]
    if missing:
        raise UsageError(f"{source}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    extra = [str(name) for name in table.columns if name not in COLUMNS]
    if extra:
        raise UsageError(f"{source}: unexpected column(s) {', '.join(extra)} (need {', '.join(COLUMNS)})")
    if table.empty:
        raise UsageError(f"{source}: no rows")
    by_site: dict[str, list[tuple[dt.datetime, float, float]]] = {}
    first_row: dict[tuple[str, dt.datetime], int] = {}
    for index, (site_id, ts, load_kw, pv_kw) in enumerate(
        table[list(COLUMNS)].itertuples(index=False, name=None), start=1
    ):
        row = f"{source}: row {index}"
        if not isinstance(site_id, str) or not SITE_ID.fullmatch(site_id.strip()):
            raise UsageError(f"{row}, column site_id: must match {SITE_ID.pattern} (got {site_id!r})")
        site_id = site_id.strip()
        instant = _timestamp(ts, f"{row}, column ts")
        if (site_id, instant) in first_row:
            raise UsageError(
                f"{row}, column ts: {instant.isoformat()} for site {site_id} repeats row "
                f"{first_row[site_id, instant]}"
            )
        first_row[site_id, instant] = index
        by_site.setdefault(site_id, []).append(
            (instant, _number(load_kw, f"{row}, column load_kw"), _number(pv_kw, f"{row}, column pv_kw"))
        )
    return by_site


def run_load(args: argparse.Namespace) -> int:
    import pandas as pd

    from dispatch_pipeline.storage import get_site, open_database, save_forecast

    path = Path(args.file)
    by_site = validate(read_table(path), str(path))
    issued_at = (
        _timestamp(args.issued_at, "--issued-at") if args.issued_at else dt.datetime.now(dt.UTC)
    )
    engine = open_database(args.database_url)
    for site_id, rows in sorted(by_site.items()):
        frame = pd.DataFrame(rows, columns=["ts", "load_kw", "pv_kw"])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        count = save_forecast(engine, site_id, frame, issued_at)
        known = "" if get_site(engine, site_id) else " (site not registered yet)"
        print(f"{site_id}: {count} interval(s) stored, issued at {issued_at.isoformat()}{known}")
    return 0
