"""SQL storage of sites, forecasts, prices and dispatch runs (PostgreSQL in production, SQLite locally)."""

from dispatch_pipeline.storage.checks import StorageInputError
from dispatch_pipeline.storage.database import (
    close_engines,
    database_url,
    make_engine,
    open_database,
)
from dispatch_pipeline.storage.forecasts import (
    forecast_interval_counts,
    forecast_issue_counts,
    load_forecast,
    load_price_series,
    price_interval_counts,
    price_issue_counts,
    save_forecast,
    save_forecasts,
    save_price_series,
    save_price_series_by_site,
)
from dispatch_pipeline.storage.runs import (
    RunRecord,
    StoredRun,
    get_run,
    latest_run,
    list_runs,
    read_runs,
    save_runs,
)
from dispatch_pipeline.storage.sites import (
    StoredSiteInvalid,
    get_site,
    list_site_ids,
    list_sites,
    read_sites,
    registered_case_variant,
    upsert_site,
    upsert_sites,
)

__all__ = [
    "RunRecord",
    "StorageInputError",
    "StoredRun",
    "StoredSiteInvalid",
    "close_engines",
    "database_url",
    "forecast_interval_counts",
    "forecast_issue_counts",
    "get_run",
    "get_site",
    "latest_run",
    "list_runs",
    "list_site_ids",
    "list_sites",
    "load_forecast",
    "load_price_series",
    "make_engine",
    "open_database",
    "price_interval_counts",
    "price_issue_counts",
    "read_runs",
    "read_sites",
    "registered_case_variant",
    "save_forecast",
    "save_forecasts",
    "save_price_series",
    "save_price_series_by_site",
    "save_runs",
    "upsert_site",
    "upsert_sites",
]
