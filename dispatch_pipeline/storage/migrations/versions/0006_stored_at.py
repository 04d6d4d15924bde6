"""When stored series rows were written, and the newest of them a run read: `stored_at`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Loading a forecast or price series again under an issue time already used overwrites that
issue's values: no newer issue appears, so comparing issue times (0005) cannot tell that a plan
made from the old values is stale. `forecasts.stored_at` and `price_series.stored_at` say when a
row's values were written: on insert, and on every load under the same issue time that changes
them (one that leaves them as they were leaves the time too). A run keeps, per series, the
newest `stored_at` among the rows it read (`dispatch_runs.forecast_stored_at`,
`prices_stored_at`): a row of its day now read with a later `stored_at` was written after the
plan read its day, so the plan is stale (storage/staleness.py; docs/operations.md has the query).

Existing rows get 1970-01-01 00:00 UTC. When they were written is not known; what matters is
that the value is no later than the creation of any run that read them, or that run's plan
would count as stale at once though nothing changed. The epoch is that for every run. Their
issue times would not be: an issue time is what the loader said (a load may give one ahead of
its own clock), not when the row came, and may be later than a run that read it. Nor would the
upgrade's time, later than every existing run: every latest plan of the days ahead would be
re-planned for the upgrade itself. Runs stored before this revision keep the new columns null
and are compared by their `created_at`: the rows they read are at the epoch now, so only rows
written after the upgrade, at real times later than every such run, make them stale. A reload
of the same issue made before the upgrade stays unseen, as it was.

The epoch is a column default that stays: PostgreSQL (11 and later) records a constant default
in the catalogue rather than rewriting the table, and SQLite adds a column with a constant
default without rewriting either. The previous release, which names its columns, keeps writing
the series after a roll-back: its new rows get the epoch and its overwrites leave `stored_at` as
it was, so what it writes counts as never rewritten (as every row did before this revision) and
only newer issues of it are noticed. The run columns are nullable without default, as 0005's
are.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIES_TABLES = ("forecasts", "price_series")
RUN_COLUMNS = ("forecast_stored_at", "prices_stored_at")
# 1970-01-01 00:00 UTC as each backend stores a timezone-aware DateTime: SQLite compares the text,
# so it has the format SQLAlchemy writes; PostgreSQL reads the offset, whatever the session's zone.
EPOCH = {"sqlite": "'1970-01-01 00:00:00.000000'"}
EPOCH_WITH_OFFSET = "'1970-01-01 00:00:00+00'"


def upgrade() -> None:
    # The dialect of the migration context: offline (`--sql`) there is no connection to ask.
    epoch = EPOCH.get(op.get_context().dialect.name, EPOCH_WITH_OFFSET)
    for table in SERIES_TABLES:
        op.add_column(
            table,
            sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text(epoch)),
        )
    for name in RUN_COLUMNS:
        op.add_column("dispatch_runs", sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), not batch mode: see 0005.
    for name in reversed(RUN_COLUMNS):
        op.drop_column("dispatch_runs", name)
    for table in reversed(SERIES_TABLES):
        op.drop_column(table, "stored_at")
