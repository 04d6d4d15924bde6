"""Per-site time series that are re-issued over time (forecasts, prices).

Each issue is kept (key: site_id, ts, issued_at), so a backfill can ask what was known when;
reads take, per ts, the value of the most recent issue. Every row also keeps when its values were
written (`stored_at`): saving an issue again overwrites its values in place, and a plan made from
the old ones is stale though no newer issue exists (storage/staleness.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import DateTime, Engine, Table, func, select, type_coerce

from dispatch_pipeline.core.calendar import PIPELINE_RESOLUTION_MINUTES
from dispatch_pipeline.storage.bulk import EXECUTEMANY_CHUNK_ROWS, chunks
from dispatch_pipeline.storage.checks import check_aware, check_finite, check_site_id, problem
from dispatch_pipeline.storage.database import write_transaction
from dispatch_pipeline.storage.sites import refuse_case_clashes
from dispatch_pipeline.storage.timestamps import creation_times, iso_utc
from dispatch_pipeline.storage.upsert import upsert_statement

KEY_COLUMNS = ("site_id", "ts", "issued_at")
STORED_AT = "stored_at"


def save_issue(
    engine: Engine,
    table: Table,
    value_columns: Sequence[str],
    site_id: str,
    frame: pd.DataFrame,
    issued_at: dt.datetime,
    *,
    non_negative: bool,
) -> int:
    """Write one issue of a series in one transaction; re-saving the same issue overwrites it."""
    counts = save_issues(
        engine, table, value_columns, {site_id: frame}, issued_at, non_negative=non_negative
    )
    return counts[site_id]


def save_issues(
    engine: Engine,
    table: Table,
    value_columns: Sequence[str],
    frames: Mapping[str, pd.DataFrame],
    issued_at: dt.datetime,
    *,
    non_negative: bool,
) -> dict[str, int]:
    """Write one issue of several sites' series in one transaction, all or nothing; returns the
    rows written per site. Every frame is checked before the transaction opens.

    Rows are stamped `stored_at` with one time of the transaction (the server's clock on
    PostgreSQL, as runs' creation times are). A row the issue already holds is overwritten only
    where its values change: one loaded again as it was keeps the time it was written.
    """
    issued = _plain_datetime(check_aware(issued_at, "issued_at"), "issued_at")
    rows = []
    counts: dict[str, int] = {}
    for site_id, frame in frames.items():
        check_site_id(site_id)
        timestamps, columns = _validated_frame(frame, value_columns, non_negative=non_negative)
        rows.extend(
            {
                "site_id": site_id,
                "ts": ts,
                "issued_at": issued,
                **dict(zip(value_columns, values, strict=True)),
            }
            for ts, *values in zip(timestamps, *columns, strict=True)
        )
        counts[site_id] = len(timestamps)
    if not rows:
        return counts
    # In key order, as every writer does: two loads re-saving rows of one issue in different
    # orders would otherwise lock them in opposite orders and deadlock on PostgreSQL.
    rows.sort(key=lambda row: (row["site_id"], row["ts"]))
    with write_transaction(engine) as connection:
        # Series may come before their site is registered, but not under an id no site can have.
        refuse_case_clashes(
            connection, list(counts), "another site in the same load",
            ", and no site can be registered under such an id: these rows could never be planned",
        )
        # Taken once the transaction holds SQLite's write lock: loads there get increasing times.
        # PostgreSQL's loads may overlap: one still writing when another, begun after it, commits
        # has the earlier time, and a plan that read between the two commits would take its rows
        # for written before it. Loads of one site's series rarely overlap.
        [stored_at] = creation_times(connection, 1)
        for row in rows:
            row[STORED_AT] = stored_at
        statement = upsert_statement(
            connection, table, KEY_COLUMNS, [*value_columns, STORED_AT], only_if_changed=value_columns
        )
        for chunk in chunks(rows, EXECUTEMANY_CHUNK_ROWS):
            connection.execute(statement, chunk)
    return counts


def load_latest(
    engine: Engine,
    table: Table,
    value_columns: Sequence[str],
    site_id: str,
    start_utc: dt.datetime,
    end_utc: dt.datetime,
    *,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """Columns ts, *value_columns, issued_at, stored_at for ts in [start_utc, end_utc), ordered
    by ts.

    Per ts the most recently issued value wins; with `as_of`, only issues made by then count
    (what a planner knew at that time). `stored_at` is when the row read was written. One query:
    row_number() over each ts, newest issue first.
    """
    start = check_aware(start_utc, "start_utc")
    end = check_aware(end_utc, "end_utc")
    if end < start:
        raise problem("end_utc", f"must not precede start_utc {start.isoformat()}", end.isoformat())
    issue_rank = (
        func.row_number()
        .over(partition_by=table.c.ts, order_by=table.c.issued_at.desc())
        .label("issue_rank")
    )
    ranked = select(
        table.c.ts, *(table.c[name] for name in value_columns), table.c.issued_at, table.c.stored_at, issue_rank
    ).where(table.c.site_id == site_id, table.c.ts >= start, table.c.ts < end)
    if as_of is not None:
        ranked = ranked.where(table.c.issued_at <= check_aware(as_of, "as_of"))
    latest = ranked.subquery("ranked")
    # Timestamps come back as the driver gives them and are converted by pandas all at once: a
    # backfill reads tens of thousands of rows, and per-row conversion would dominate the read.
    query = (
        select(
            _driver_datetime(latest.c.ts),
            *(latest.c[name] for name in value_columns),
            _driver_datetime(latest.c.issued_at),
            _driver_datetime(latest.c.stored_at),
        )
        .where(latest.c.issue_rank == 1)
        .order_by(latest.c.ts)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    names = ["ts", *value_columns, "issued_at", STORED_AT]
    columns = dict(zip(names, zip(*rows, strict=True) if rows else [() for _ in names], strict=True))
    return pd.DataFrame(
        {
            "ts": _utc_instants(columns["ts"]),
            **{name: np.asarray(columns[name], dtype=float) for name in value_columns},
            "issued_at": _utc_instants(columns["issued_at"]),
            STORED_AT: _utc_instants(columns[STORED_AT]),
        }
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)
_MICROSECOND = dt.timedelta(microseconds=1)


def _utc_instants(values: Sequence[dt.datetime]) -> pd.DatetimeIndex:
    """Driver datetimes as UTC instants (datetime64[us, UTC]): SQLite hands back naive values,
    stored in UTC; PostgreSQL aware ones in the session's zone. Through integer microseconds
    since the epoch, which is exact and costs half of pandas parsing datetime objects."""
    epoch = _NAIVE_EPOCH if values and values[0].tzinfo is None else _EPOCH
    micros = np.fromiter(((value - epoch) // _MICROSECOND for value in values), dtype=np.int64, count=len(values))
    return pd.DatetimeIndex(micros.view("datetime64[us]")).tz_localize("UTC")


def _driver_datetime(column: Any) -> Any:
    return type_coerce(column, DateTime(timezone=True)).label(column.name)


def interval_counts(
    engine: Engine,
    table: Table,
    site_ids: Sequence[str],
    start_utc: dt.datetime,
    end_utc: dt.datetime,
) -> dict[str, int]:
    """Per site, how many distinct interval starts in [start_utc, end_utc) any issue covers.

    A cheap look before planning (one query for many sites); the value checks come when the
    series is read for the plan.
    """
    start = check_aware(start_utc, "start_utc")
    end = check_aware(end_utc, "end_utc")
    return _per_site(
        engine, table, site_ids, func.count(table.c.ts.distinct()), table.c.ts >= start, table.c.ts < end
    )


@dataclass(frozen=True)
class RepeatedRows:
    """What an issue already holds of the rows about to be saved under it again: how many of
    their intervals (`held`), and of those how many the new rows give other values (`changed`:
    the rows saving overwrites; the others keep their values and the time they were written)."""

    held: int = 0
    changed: int = 0


def repeated_issue_rows(
    engine: Engine,
    table: Table,
    value_columns: Sequence[str],
    frames: Mapping[str, pd.DataFrame],
    issued_at: dt.datetime,
) -> dict[str, RepeatedRows]:
    """Per site ({site_id: frame of ts and value_columns}), what the issue `issued_at` already
    holds of the frame's rows (RepeatedRows)."""
    issued = _plain_datetime(check_aware(issued_at, "issued_at"), "issued_at")
    found = dict.fromkeys(frames, RepeatedRows())
    with engine.connect() as connection:
        for site_id, frame in frames.items():
            if frame.empty:
                continue
            wanted = {
                _as_utc(ts): tuple(values)
                for ts, *values in zip(pd.to_datetime(frame["ts"], utc=True).dt.to_pydatetime(),
                                       *(frame[name] for name in value_columns), strict=True)
            }
            query = select(_driver_datetime(table.c.ts), *(table.c[name] for name in value_columns)).where(
                table.c.site_id == site_id,
                table.c.issued_at == issued,
                table.c.ts >= min(wanted),
                table.c.ts <= max(wanted),
            )
            held = changed = 0
            for ts, *stored in connection.execute(query):
                values = wanted.get(_as_utc(ts))
                if values is not None:
                    held += 1
                    # As the upsert compares them (IS DISTINCT FROM): exactly.
                    changed += tuple(values) != tuple(stored)
            found[site_id] = RepeatedRows(held, changed)
    return found


def _as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes, stored in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _per_site(engine: Engine, table: Table, site_ids: Sequence[str], count: Any, *conditions: Any) -> dict[str, int]:
    """`count` over each site's rows meeting `conditions`, in one query; 0 for a site with none."""
    counts = dict.fromkeys(site_ids, 0)
    query = (
        select(table.c.site_id, count)
        .where(table.c.site_id.in_(list(site_ids)), *conditions)
        .group_by(table.c.site_id)
    )
    with engine.connect() as connection:
        for site_id, value in connection.execute(query):
            counts[site_id] = int(value)
    return counts


def _validated_frame(
    frame: Any, value_columns: Sequence[str], *, non_negative: bool
) -> tuple[list[dt.datetime], list[list[float]]]:
    if not isinstance(frame, pd.DataFrame):
        raise problem("frame", "must be a pandas DataFrame", type(frame).__name__)
    if "ts" not in frame.columns and frame.index.name == "ts":
        frame = frame.reset_index()
    missing = [name for name in ("ts", *value_columns) if name not in frame.columns]
    if missing:
        raise problem("frame", f"missing column(s) {missing}", list(frame.columns))
    # A column is stored or refused, never dropped on the way: a caller who sent one meant it.
    extra = [str(name) for name in frame.columns if name not in ("ts", *value_columns)]
    if extra:
        # A frame read back (load_forecast) carries issued_at and stored_at: the issue time of a
        # save is its argument, and the time it was written is the save's own.
        hint = "; the issue time is the issued_at argument, one per save" if "issued_at" in extra else ""
        raise problem(
            "frame", f"has column(s) {extra} that are not stored (it holds ts, {', '.join(value_columns)}{hint})",
            list(frame.columns),
        )
    timestamps = _utc_timestamps(frame["ts"])
    _check_interval_starts(timestamps)
    columns: list[list[float]] = []
    for name in value_columns:
        values = []
        for ts, value in zip(timestamps, frame[name].tolist(), strict=True):
            field = f"frame.{name}[{iso_utc(ts)}]"
            number = check_finite(value, field)
            if non_negative and number < 0:
                raise problem(field, "must be >= 0", value)
            values.append(number)
        columns.append(values)
    return timestamps, columns


def _check_interval_starts(timestamps: Sequence[dt.datetime]) -> None:
    """Every row must start an interval of the pipeline's grid: a plan takes one value per
    interval start, so a 5-minute series would otherwise be read as every third value of it."""
    step = dt.timedelta(minutes=PIPELINE_RESOLUTION_MINUTES)
    for ts in timestamps:
        if (ts - _EPOCH) % step:
            raise problem(
                f"frame.ts[{iso_utc(ts)}]",
                f"must start a {PIPELINE_RESOLUTION_MINUTES}-minute interval (a whole multiple of "
                f"{PIPELINE_RESOLUTION_MINUTES} minutes, zero seconds), as the stored series are",
                ts.isoformat(),
            )


def _utc_timestamps(column: pd.Series) -> list[dt.datetime]:
    if not pd.api.types.is_datetime64_any_dtype(column):
        try:
            # Most frames: one offset throughout, parsed at once.
            column = pd.to_datetime(column, format="ISO8601")
        except (TypeError, ValueError):
            column = _instants_of_mixed_offsets(column)
    missing = column.isna().to_numpy()
    if missing.any():
        raise problem(f"frame.ts[{int(missing.argmax())}]", "must not be missing", "NaT")
    if column.dt.tz is None:
        first = column.iloc[0] if len(column) else None
        raise problem(
            "frame.ts", "must be timezone-aware (naive timestamps are ambiguous)", str(first)
        )
    column = column.dt.tz_convert("UTC")
    repeated = column[column.duplicated()]
    if len(repeated):
        raise problem("frame.ts", "repeats a timestamp", repeated.iloc[0].isoformat())
    return [_plain_datetime(ts, "frame.ts") for ts in column]


def _instants_of_mixed_offsets(column: pd.Series) -> pd.Series:
    """ISO timestamps whose offsets change within the frame (a day across a DST change), each as
    its instant in UTC; naive or unreadable ones refused, naming the first."""
    naive = [value for value in column if not _carries_offset(value)]
    if naive:
        raise problem("frame.ts", "must be timezone-aware (naive timestamps are ambiguous)", str(naive[0]))
    parsed = pd.to_datetime(column, format="ISO8601", utc=True, errors="coerce")
    unreadable = parsed.isna().to_numpy() & column.notna().to_numpy()
    if unreadable.any():
        raise problem("frame.ts", "must hold ISO 8601 timestamps", column.iloc[int(unreadable.argmax())])
    return parsed


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d+)?)?)?)$", re.IGNORECASE)


def _carries_offset(value: Any) -> bool:
    """Whether a `ts` value names its instant: an aware datetime, or ISO text ending in an offset
    (pandas would read a naive one as UTC when asked for UTC)."""
    if isinstance(value, dt.datetime):
        return value.tzinfo is not None and value.utcoffset() is not None
    if isinstance(value, str):
        time_part = value.strip().partition("T")[2] or value.strip().partition(" ")[2]
        return bool(_OFFSET.search(time_part))
    return True  # anything else is refused as no timestamp below


def _plain_datetime(value: dt.datetime, field: str) -> dt.datetime:
    # pandas Timestamps are datetimes, but drivers should see the plain type they document.
    if not isinstance(value, pd.Timestamp):
        return value
    if value.nanosecond:
        # Both databases keep microseconds: two instants 1 ns apart would be stored as one.
        raise problem(field, "must be a whole number of microseconds", value.isoformat())
    return value.to_pydatetime()
