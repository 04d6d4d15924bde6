"""The `Idempotency-Key` of a POST /dispatch/run kept with its run: `idempotency_key`,
`idempotency_scope`, `request_fingerprint`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A client that timed out and sends its request again would otherwise store a second run (and
spend a second solve). With the same `Idempotency-Key` it gets the run the key already names. The
key is kept on the run's own row, with whose key it is (a digest of the caller's bearer token,
empty when the API asks for none: two callers' keys never meet) and the SHA-256 of the request it
came with (the same key with another request is refused). On the row, a key lives exactly as long
as its run: written in the run's transaction, deleted with it, never expiring on its own.

A unique index over (scope, key) decides which of two requests sent at once with one key stores
its run: the other's insert fails and it answers with the first one's. It is partial (`WHERE
idempotency_key IS NOT NULL`, on PostgreSQL and SQLite alike): the runs without a key, nearly
all, take no room in it. Building it reads the table once and blocks writes to it meanwhile, as
0004's index does, though it writes no entry for them; the three columns are nullable without a
default, so no table is rewritten. The previous release, which names its columns, writes runs
without a key and reads them as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("idempotency_key", sa.String(255)),
    ("idempotency_scope", sa.String(64)),
    ("request_fingerprint", sa.String(64)),
)
INDEX = "ix_dispatch_runs_idempotency_scope_idempotency_key"
WITH_A_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    for name, column_type in COLUMNS:
        op.add_column("dispatch_runs", sa.Column(name, column_type, nullable=True))
    op.create_index(
        INDEX,
        "dispatch_runs",
        ["idempotency_scope", "idempotency_key"],
        unique=True,
        postgresql_where=WITH_A_KEY,
        sqlite_where=WITH_A_KEY,
    )


def downgrade() -> None:
    # The index first: SQLite refuses to drop a column an index covers. Plain DROP COLUMN, not
    # batch mode: see 0005.
    op.drop_index(INDEX, table_name="dispatch_runs")
    for name, _column_type in reversed(COLUMNS):
        op.drop_column("dispatch_runs", name)
