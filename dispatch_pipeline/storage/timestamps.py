"""UTC instants in and out of SQL, identical on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import Connection, DateTime, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, always handed back in UTC.

    PostgreSQL keeps `timestamptz` but answers in the session's zone; SQLite keeps text and drops the
    offset. Normalising to UTC on the way in (naive values refused: they would be a guess) and
    re-attaching UTC on the way out gives both backends the same semantics, and makes SQLite's text
    comparisons chronological because every stored value has the same offset and format.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp: must be timezone-aware (got naive {value.isoformat()})")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _NeverWritten(ColumnElement[dt.datetime]):
    """1970-01-01 00:00 UTC as a constant column default, spelled as each backend stores a
    UtcDateTime (SQLite compares the text: it must have the format of the values SQLAlchemy
    writes; PostgreSQL reads the offset, whatever the session's zone)."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(_NeverWritten)
def _never_written(element: _NeverWritten, compiler: SQLCompiler, **kw: Any) -> str:
    return "'1970-01-01 00:00:00+00'"


@compiles(_NeverWritten, "sqlite")
def _never_written_sqlite(element: _NeverWritten, compiler: SQLCompiler, **kw: Any) -> str:
    return "'1970-01-01 00:00:00.000000'"


NEVER_WRITTEN_DEFAULT = _NeverWritten()

_clock_lock = threading.Lock()
_last_tick = dt.datetime.min.replace(tzinfo=UTC)


def utc_now() -> dt.datetime:
    """Wall-clock UTC, strictly increasing within this process.

    "Latest run" orders by `created_at`; runs saved one after another (even in one batch, within
    one microsecond) must not tie, so a repeated reading is nudged forward by a microsecond.
    """
    global _last_tick
    with _clock_lock:
        now = dt.datetime.now(UTC)
        if now <= _last_tick:
            now = _last_tick + dt.timedelta(microseconds=1)
        _last_tick = now
        return now


def creation_times(connection: Connection, count: int) -> list[dt.datetime]:
    """`count` strictly increasing creation instants for rows written in `connection`'s transaction.

    On PostgreSQL from the server's clock: the processes that store runs (API replicas, Dagster
    runs, on several hosts) then order them by one clock rather than each by its own, which may be
    seconds off. On SQLite, a file on one host, from this process's clock.
    """
    if connection.dialect.name == "postgresql":
        start = connection.scalar(text("SELECT clock_timestamp()")).astimezone(UTC)
        return [start + dt.timedelta(microseconds=i) for i in range(count)]
    return [utc_now() for _ in range(count)]


def iso_utc(value: dt.datetime) -> str:
    """The contract's `ts` spelling: ISO 8601 UTC with a `Z`, e.g. 2024-03-15T16:00:00Z."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"
