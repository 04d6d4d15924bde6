"""Check constraints under the names tables.py gives them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Revision 0001 wrote its check constraints' names in full ("ck_dispatch_runs_source") without
marking them final, so Alembic applied tables.py's naming convention (`ck_%(table_name)s_%(
constraint_name)s`) to them once more: databases created before this revision hold
"ck_dispatch_runs_ck_dispatch_runs_source". 0001 now marks them final; this revision renames those
of older PostgreSQL databases, so that later migrations find every constraint by its tables.py
name. SQLite cannot rename a constraint; an older embedded SQLite database keeps the long names.

Each rename is one statement that checks for the old name itself, so `alembic upgrade --sql`
(offline, with no database to ask) writes the same script as an online upgrade runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "forecasts": ("load_kw_non_negative", "pv_kw_non_negative"),
    "dispatch_runs": ("source", "status", "solver", "resolution_minutes"),
}


def _rename(old: str, new: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, names in CHECKS.items():
        for name in names:
            source, target = old.format(table=table, name=name), new.format(table=table, name=name)
            # Names and tables are the module's constants, never input.
            op.execute(
                "DO $$ BEGIN"
                " IF EXISTS (SELECT 1 FROM pg_constraint"
                f" WHERE conrelid = CAST('{table}' AS regclass) AND contype = 'c'"
                f" AND conname = '{source}')"
                f" THEN ALTER TABLE {table} RENAME CONSTRAINT {source} TO {target};"
                " END IF; END $$"
            )


def upgrade() -> None:
    _rename("ck_{table}_ck_{table}_{name}", "ck_{table}_{name}")


def downgrade() -> None:
    _rename("ck_{table}_{name}", "ck_{table}_ck_{table}_{name}")
