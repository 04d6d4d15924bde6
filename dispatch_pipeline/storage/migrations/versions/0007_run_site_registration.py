"""The registration of its site a run's plan was made with: `site_updated_at`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

A plan is only as current as the site definition it was made from (battery, limits, weights,
tariff). stale_plans compared the site's `updated_at` with the run's `created_at`; but a Dagster
run reads its site in one step and stores its plan later (a re-plan from a tariff snapshot: much
later), so a site registered again with other values in between went unnoticed: the plan was
made with the old definition, yet stored after the change. `dispatch_runs.site_updated_at` is
the `updated_at` of the registration the plan was made with (where the run's steps read the site
at different times, the oldest they used): a site's `updated_at` now later than it makes the
plan stale (storage/staleness.py; docs/operations.md has the rule). Null where no registered site
was read (an API or CLI request for a site never registered), and for runs stored before this
revision: those are compared by their `created_at`, as before.

One nullable column without a default, as 0005's are: neither PostgreSQL nor SQLite rewrites the
table to add it, and the previous release, which names its columns, writes and reads
`dispatch_runs` as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMN = "site_updated_at"


def upgrade() -> None:
    op.add_column("dispatch_runs", sa.Column(COLUMN, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), not batch mode: see 0005.
    op.drop_column("dispatch_runs", COLUMN)
