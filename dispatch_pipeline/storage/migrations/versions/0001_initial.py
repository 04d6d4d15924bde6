"""Initial schema: sites, forecasts, price series and dispatch runs with schedule, explanations, KPIs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out by hand (not imported from tables.py) so that this revision keeps building the same
schema whatever tables.py becomes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Check constraint names are written in full and marked final (op.f): unmarked, Alembic applies
# tables.py's naming convention to them again ("ck_forecasts_ck_forecasts_..."; see 0003).
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC_TIMESTAMP = sa.DateTime(timezone=True)

KPI_COLUMNS = (
    "total_cost",
    "import_cost",
    "export_revenue",
    "total_import_kwh",
    "total_export_kwh",
    "total_curtail_kwh",
    "peak_grid_import_kw",
    "peak_grid_export_kw",
    "avg_soc",
    "min_soc",
    "max_soc",
    "final_soc",
    "equivalent_full_cycles",
    "self_sufficiency",
    "pv_utilization",
    "violation_kwh",
    "baseline_cost",
    "savings_vs_baseline",
)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("pv_kwp", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("config", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("site_id", name="pk_sites"),
    )
    op.create_table(
        "forecasts",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("ts", UTC_TIMESTAMP, nullable=False),
        sa.Column("issued_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("load_kw", sa.Float(), nullable=False),
        sa.Column("pv_kw", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "ts", "issued_at", name="pk_forecasts"),
        sa.CheckConstraint("load_kw >= 0", name=op.f("ck_forecasts_load_kw_non_negative")),
        sa.CheckConstraint("pv_kw >= 0", name=op.f("ck_forecasts_pv_kw_non_negative")),
    )
    op.create_table(
        "price_series",
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("ts", UTC_TIMESTAMP, nullable=False),
        sa.Column("issued_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("buy", sa.Float(), nullable=False),
        sa.Column("sell", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "ts", "issued_at", name="pk_price_series"),
    )
    op.create_table(
        "dispatch_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("solver", sa.String(32), nullable=False),
        sa.Column("fallback_reason", sa.Text(), nullable=True),
        sa.Column("objective_value", sa.Float(), nullable=False),
        sa.Column("objective_config", JSON_DOCUMENT, nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("solve_ms", sa.Float(), nullable=False),
        sa.Column("mip_gap", sa.Float(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("resolution_minutes", sa.Integer(), nullable=False),
        sa.Column("milp_solver", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dispatch_runs"),
        sa.CheckConstraint("source IN ('dagster', 'api', 'cli')", name=op.f("ck_dispatch_runs_source")),
        sa.CheckConstraint("status IN ('ok', 'fallback')", name=op.f("ck_dispatch_runs_status")),
        sa.CheckConstraint(
            "solver IN ('milp', 'fallback_rule', 'rule_based')", name=op.f("ck_dispatch_runs_solver")
        ),
        sa.CheckConstraint(
            "resolution_minutes IN (5, 10, 15, 30, 60)", name=op.f("ck_dispatch_runs_resolution_minutes")
        ),
    )
    op.create_index(
        "ix_dispatch_runs_site_id_date_created_at",
        "dispatch_runs",
        ["site_id", "date", "created_at"],
    )
    op.create_table(
        "dispatch_schedule",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("ts", UTC_TIMESTAMP, nullable=False),
        sa.Column("pv_set_kw", sa.Float(), nullable=False),
        sa.Column("batt_ch_kw", sa.Float(), nullable=False),
        sa.Column("batt_dis_kw", sa.Float(), nullable=False),
        sa.Column("grid_imp_kw", sa.Float(), nullable=False),
        sa.Column("grid_exp_kw", sa.Float(), nullable=False),
        sa.Column("curtail_kw", sa.Float(), nullable=False),
        sa.Column("soc", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "ts", name="pk_dispatch_schedule"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["dispatch_runs.id"],
            name="fk_dispatch_schedule_run_id_dispatch_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "dispatch_explanations",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("ts", UTC_TIMESTAMP, nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("binding", JSON_DOCUMENT, nullable=False),
        sa.Column("marginal_cost_per_kwh", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "ts", name="pk_dispatch_explanations"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["dispatch_runs.id"],
            name="fk_dispatch_explanations_run_id_dispatch_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "dispatch_kpis",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in KPI_COLUMNS),
        sa.PrimaryKeyConstraint("run_id", name="pk_dispatch_kpis"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["dispatch_runs.id"],
            name="fk_dispatch_kpis_run_id_dispatch_runs",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("dispatch_kpis")
    op.drop_table("dispatch_explanations")
    op.drop_table("dispatch_schedule")
    op.drop_index("ix_dispatch_runs_site_id_date_created_at", table_name="dispatch_runs")
    op.drop_table("dispatch_runs")
    op.drop_table("price_series")
    op.drop_table("forecasts")
    op.drop_table("sites")
