"""The SQL schema: sites, their issued forecasts and prices, and the immutable dispatch runs.

`migrations/versions/` must build exactly this; `tests/storage` compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from dispatch_pipeline.storage.timestamps import NEVER_WRITTEN_DEFAULT, UtcDateTime

# Deterministic constraint names, so later migrations can drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_SOURCES = ("dagster", "api", "cli")
RUN_STATUSES = ("ok", "fallback")
RUN_SOLVERS = ("milp", "fallback_rule", "rule_based")
RESOLUTIONS_MINUTES = (5, 10, 15, 30, 60)
IDEMPOTENCY_KEY_LENGTH = 255

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

SCHEDULE_FLOW_COLUMNS = (
    "pv_set_kw",
    "batt_ch_kw",
    "batt_dis_kw",
    "grid_imp_kw",
    "grid_exp_kw",
    "curtail_kw",
)

SITE_ID = String(64)  # the contract's ^[A-Za-z0-9_.-]{1,64}$
JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...] | tuple[int, ...]) -> str:
    # Literals are module constants, never user input.
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


sites = Table(
    "sites",
    metadata,
    Column("site_id", SITE_ID, primary_key=True),
    Column("name", Text, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("pv_kwp", Float),
    Column("currency", String(16), nullable=False),
    # Everything else of the Site model (bess, limits, weights, tariff, tariff_history when it has
    # one, ...): read back whole.
    Column("config", JSON_DOCUMENT, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# No foreign key to `sites` on the tables below: the API solves fully specified requests for
# sites that were never registered, and forecasts may be ingested before a site's config is.

forecasts = Table(
    "forecasts",
    metadata,
    Column("site_id", SITE_ID, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("load_kw", Float, nullable=False),
    Column("pv_kw", Float, nullable=False),
    # When the row's values were written: on insert, and when a load under the same issue time
    # changes them. A plan that read the row before then is stale. The default (1970) is for rows
    # stored before migration 0006 and by writers that do not name the column (0006 explains).
    Column("stored_at", UtcDateTime, nullable=False, server_default=NEVER_WRITTEN_DEFAULT),
    PrimaryKeyConstraint("site_id", "ts", "issued_at"),
    CheckConstraint("load_kw >= 0", name="load_kw_non_negative"),
    CheckConstraint("pv_kw >= 0", name="pv_kw_non_negative"),
)

price_series = Table(
    "price_series",
    metadata,
    Column("site_id", SITE_ID, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    # Prices may be negative (contract), so no sign check.
    Column("buy", Float, nullable=False),
    Column("sell", Float, nullable=False),
    # As forecasts.stored_at.
    Column("stored_at", UtcDateTime, nullable=False, server_default=NEVER_WRITTEN_DEFAULT),
    PrimaryKeyConstraint("site_id", "ts", "issued_at"),
)

dispatch_runs = Table(
    "dispatch_runs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("site_id", SITE_ID, nullable=False),
    Column("date", Date, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("solver", String(32), nullable=False),
    Column("fallback_reason", Text),
    Column("objective_value", Float, nullable=False),
    Column("objective_config", JSON_DOCUMENT, nullable=False),
    Column("timeout_ms", Integer, nullable=False),
    Column("solve_ms", Float, nullable=False),
    Column("mip_gap", Float),
    Column("source", String(16), nullable=False),
    Column("dagster_run_id", String(64)),
    Column("timezone", String(64), nullable=False),
    Column("resolution_minutes", Integer, nullable=False),
    Column("milp_solver", String(32)),
    # When the stored forecast and price series the plan read were issued (null: not read from
    # storage): a plan older than a later issue of its day is stale.
    Column("forecast_issued_at", UtcDateTime),
    Column("prices_issued_at", UtcDateTime),
    # When the newest of the stored rows the plan read was written (their `stored_at`; null: as
    # above, or stored before migration 0006): a row of its day written later makes it stale.
    Column("forecast_stored_at", UtcDateTime),
    Column("prices_stored_at", UtcDateTime),
    # The `updated_at` of the site registration the plan was made with, the oldest its steps read
    # (null: no registered site was read, or stored before migration 0007): a site's registration
    # changed since makes it stale.
    Column("site_updated_at", UtcDateTime),
    # The `Idempotency-Key` a POST /dispatch/run was sent with, whose key it is (a digest of the
    # caller's token; empty when the API asks for none) and the SHA-256 of the request: a repeat
    # of the request is answered with this run. Null for every other run.
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LENGTH)),
    Column("idempotency_scope", String(64)),
    Column("request_fingerprint", String(64)),
    CheckConstraint(_in("source", RUN_SOURCES), name="source"),
    CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    CheckConstraint(_in("solver", RUN_SOLVERS), name="solver"),
    CheckConstraint(_in("resolution_minutes", RESOLUTIONS_MINUTES), name="resolution_minutes"),
    # latest_run orders a site's runs by created_at DESC, id DESC. With a date, the first index
    # read backwards gives that day's few runs by created_at (PostgreSQL sorts created_at ties by
    # id). Without a date it cannot order them (date comes first): the second index gives that
    # query its one entry, and list_runs of a site its order (migration 0004 has the numbers).
    Index("ix_dispatch_runs_site_id_date_created_at", "site_id", "date", "created_at"),
    Index("ix_dispatch_runs_site_id_created_at_id", "site_id", "created_at", "id"),
    # One run per key of a caller, whichever request stores it first; partial, so that the runs
    # without a key (nearly all) take no room in it (migration 0008).
    Index(
        "ix_dispatch_runs_idempotency_scope_idempotency_key",
        "idempotency_scope",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
        sqlite_where=text("idempotency_key IS NOT NULL"),
    ),
)

# The per-interval tables have no foreign key to their run: checking one per inserted row was most
# of PostgreSQL's work storing plans, and save_runs writes these rows only in the transaction that
# writes their run (migration 0002 has the numbers).
dispatch_schedule = Table(
    "dispatch_schedule",
    metadata,
    Column("run_id", Uuid, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    *(Column(name, Float, nullable=False) for name in SCHEDULE_FLOW_COLUMNS),
    Column("soc", Float, nullable=False),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "ts"),
)

dispatch_explanations = Table(
    "dispatch_explanations",
    metadata,
    Column("run_id", Uuid, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("binding", JSON_DOCUMENT, nullable=False),
    Column("marginal_cost_per_kwh", Float),
    PrimaryKeyConstraint("run_id", "ts"),
)

dispatch_kpis = Table(
    "dispatch_kpis",
    metadata,
    Column("run_id", Uuid, ForeignKey("dispatch_runs.id", ondelete="CASCADE"), primary_key=True),
    *(Column(name, Float, nullable=False) for name in KPI_COLUMNS),
)
