"""Schedule and explanation rows without a foreign key to their run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

A foreign key is checked for every row inserted, and each check locks the referenced run row
(FOR KEY SHARE): 96 checks per run in each of `dispatch_schedule` and `dispatch_explanations`.
That was about 60 % of PostgreSQL's time storing plans (365 runs in one save_runs: 0.66 CPU-s
with the keys, 0.25 without). These rows are written only by save_runs, in the transaction that
writes their run, so none can point at a missing run. `dispatch_kpis` (one row per run) keeps its
key. Deleting runs by hand therefore means deleting their schedule and explanation rows as well
(docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("dispatch_schedule", "dispatch_explanations")


def _key_name(table: str) -> str:
    return f"fk_{table}_run_id_dispatch_runs"


def upgrade() -> None:
    for table in TABLES:
        # On SQLite, which cannot drop a constraint, batch mode rebuilds the table.
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(_key_name(table), type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                _key_name(table), "dispatch_runs", ["run_id"], ["id"], ondelete="CASCADE"
            )
