"""INSERT ... ON CONFLICT DO UPDATE for the two backends this project runs on."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Table, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def upsert_statement(
    connection: Connection,
    table: Table,
    key_columns: Sequence[str],
    update_columns: Sequence[str],
    *,
    only_if_changed: Sequence[str],
) -> Insert:
    """An insert that overwrites `update_columns` of the row already holding the same key, only
    when one of the `only_if_changed` columns would change: a row holding the same values keeps
    all of its columns (a time it was written, say) as they are.
    """
    dialects = {"postgresql": postgresql, "sqlite": sqlite}
    dialect = dialects.get(connection.dialect.name)
    if dialect is None:
        raise NotImplementedError(
            f"database: upserts are implemented for {sorted(dialects)} (got {connection.dialect.name!r})"
        )
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(key_columns),
        set_={name: statement.excluded[name] for name in update_columns},
        where=or_(*(table.c[name].is_distinct_from(statement.excluded[name]) for name in only_if_changed)),
    )
