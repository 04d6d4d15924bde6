"""Many rows into one table inside the caller's transaction, by the fastest path the driver has."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy import JSON, Connection, Table, insert
from sqlalchemy.exc import DBAPIError

Row = tuple[Any, ...]

EXECUTEMANY_CHUNK_ROWS = 10_000


def bulk_insert(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> int:
    """Insert `rows` (tuples in `columns` order); returns the number written.

    PostgreSQL with psycopg 3 streams through COPY, SQLite gets a lean executemany, anything
    else SQLAlchemy's executemany (bench/storage_write.py has the measurements). All paths work
    in chunks or streams, so memory stays bounded whatever the batch size.
    """
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        return copy_rows(connection, table, columns, rows)
    if connection.dialect.name == "sqlite":
        return driver_executemany_rows(connection, table, columns, rows)
    return executemany_rows(connection, table, columns, rows)


def executemany_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> int:
    statement = insert(table)
    written = 0
    for chunk in chunks(rows, EXECUTEMANY_CHUNK_ROWS):
        connection.execute(statement, [dict(zip(columns, row, strict=True)) for row in chunk])
        written += len(chunk)
    return written


def driver_executemany_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> int:
    """executemany handed straight to the driver, for positional-parameter drivers (SQLite).

    Values go through the columns' own SQLAlchemy bind processors, so what is stored is exactly
    what a Core insert stores; skipped is Core's per-row parameter bookkeeping, which took most
    of SQLite's time on a backfill (500 site-days: 8.4 s before, 3.0 s after, profiled).
    """
    dialect = connection.dialect
    if not dialect.positional:
        raise NotImplementedError(
            f"driver_executemany_rows: needs a positional paramstyle (got {dialect.paramstyle!r})"
        )
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    plan = [
        (columns.index(name), table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in compiled.positiontup or ()
    ]
    written = 0
    for chunk in chunks(rows, EXECUTEMANY_CHUNK_ROWS):
        parameters = [
            tuple(row[i] if process is None else process(row[i]) for i, process in plan)
            for row in chunk
        ]
        connection.exec_driver_sql(str(compiled), parameters)
        written += len(chunk)
    return written


def copy_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Row]
) -> int:
    # Imported here so SQLite-only installs never need psycopg.
    from psycopg import sql
    from psycopg.types.json import Jsonb

    # COPY bypasses SQLAlchemy's type processing: JSON values must be wrapped, and every other
    # value must already be what psycopg adapts correctly (aware datetimes, UUIDs, floats, str).
    json_positions = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
    # Binary COPY: about a quarter faster than text here (dumping and parsing), measured.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    # The driver connection is the one SQLAlchemy's transaction is open on: COPY joins it.
    driver_connection = connection.connection.driver_connection
    written = 0
    try:
        with driver_connection.cursor() as cursor:
            column_types = _column_type_oids(cursor, table, columns)
            with cursor.copy(statement) as copy:
                if column_types is not None:
                    copy.set_types(column_types)
                for row in rows:
                    if json_positions:
                        values = list(row)
                        for i in json_positions:
                            values[i] = Jsonb(values[i], dumps=_json_text)
                        row = tuple(values)
                    copy.write_row(row)
                    written += 1
    except connection.dialect.loaded_dbapi.Error as exc:
        # Raise what executemany would have raised (sqlalchemy.exc.IntegrityError, ...), so
        # callers catch one family of errors whichever path wrote the rows.
        raise DBAPIError.instance(
            statement.as_string(driver_connection),
            None,
            exc,
            connection.dialect.loaded_dbapi.Error,
            dialect=connection.dialect,
        ) from exc
    return written


def _json_text(value: Any) -> str:
    """`json.dumps(value)`, encoding each distinct flat list once: explanation rows repeat a few
    dozen lists of binding constraints hundreds of thousands of times in a backfill."""
    if type(value) is list:
        try:
            return _flat_list_json(tuple(value))
        except TypeError:  # an unhashable item: a nested list or dict
            pass
    return json.dumps(value)


@functools.lru_cache(maxsize=4096)
def _flat_list_json(items: tuple[Any, ...]) -> str:
    return json.dumps(list(items))


def _column_type_oids(cursor: Any, table: Table, columns: Sequence[str]) -> list[int] | None:
    """The server's type of each column: binary COPY must send exactly those types. None when
    the table lacks one of them (a schema older than this release's): COPY then fails naming it,
    as an INSERT would."""
    from psycopg import sql

    cursor.execute(
        "SELECT attname, atttypid::int8 FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [sql.Identifier(table.name).as_string(cursor.connection)],
    )
    oids = dict(cursor.fetchall())
    if not set(columns) <= oids.keys():
        return None
    return [oids[name] for name in columns]


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive lists of at most `size` rows, consuming `rows` lazily."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk
