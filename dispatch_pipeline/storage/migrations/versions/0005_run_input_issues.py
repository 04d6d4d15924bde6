"""When the stored series a run read were issued: `forecast_issued_at`, `prices_issued_at`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

A plan is only as current as the forecast and prices it was made from. Each of its intervals
takes the most recent issue stored when it was planned; the latest of those issue times, per
series, tells whether an issue stored since makes the plan stale (docs/operations.md has the
query). Null where the series were not read from storage: an API or CLI request that sent its
own, prices expanded from a time-of-use tariff, and runs stored before this revision.

Two nullable columns without defaults: neither PostgreSQL nor SQLite rewrites the table to add them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("forecast_issued_at", "prices_issued_at")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("dispatch_runs", sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), not batch mode: batch mode
    # rebuilds the table on SQLite, and dropping the old dispatch_runs there deletes every KPI
    # row through dispatch_kpis' ON DELETE CASCADE.
    for name in reversed(COLUMNS):
        op.drop_column("dispatch_runs", name)
