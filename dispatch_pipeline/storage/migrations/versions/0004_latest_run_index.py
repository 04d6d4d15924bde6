"""An index that serves "the latest run of a site" without a date.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

`latest_run(engine, site_id)` (GET /dispatch/latest without a date, and the API telling an unknown
site from an unplanned day) asks for `WHERE site_id = ? ORDER BY created_at DESC, id DESC LIMIT 1`.
The index of 0001 leads with (site_id, date), so it cannot deliver a site's runs in created_at
order: PostgreSQL read all of the site's runs and sorted them (20-50 ms at 55-60k runs of one site,
growing with its history). On (site_id, created_at, id) the same query is an Index Only Scan
Backward reading one entry (0.1 ms). list_runs(site_id) without a date uses it as well.

The date query keeps 0001's index: a site has a handful of runs per date, and ordering those by id
after created_at costs microseconds (with id appended the index would save under 0.1 ms, not worth
rebuilding it on a large table).

A plain CREATE INDEX: it locks out writes to dispatch_runs (not reads) while it builds (0.15 s at
100k runs). CREATE INDEX CONCURRENTLY cannot run here: upgrade_database applies every pending
migration in one transaction it opens itself, where Alembic's autocommit_block fails. IF NOT EXISTS
lets an operator build the index CONCURRENTLY by hand beforehand (docs/operations.md); this
revision then only records itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_dispatch_runs_site_id_created_at_id"


def upgrade() -> None:
    op.create_index(INDEX, "dispatch_runs", ["site_id", "created_at", "id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="dispatch_runs", if_exists=True)
