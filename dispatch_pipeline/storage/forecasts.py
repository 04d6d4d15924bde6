"""Issued series a plan reads: load/PV forecasts, and price series that override a ToU tariff.

Frames carry a `ts` column (or index) of timezone-aware interval starts, converted to UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pandas as pd
from sqlalchemy import Engine

from dispatch_pipeline.storage.series import (
    RepeatedRows,
    interval_counts,
    load_latest,
    repeated_issue_rows,
    save_issue,
    save_issues,
)
from dispatch_pipeline.storage.tables import forecasts, price_series

FORECAST_COLUMNS = ("load_kw", "pv_kw")
PRICE_COLUMNS = ("buy", "sell")


def save_forecast(engine: Engine, site_id: str, frame: pd.DataFrame, issued_at: dt.datetime) -> int:
    """Store one forecast issue (ts, load_kw, pv_kw >= 0); returns the number of rows."""
    return save_issue(
        engine, forecasts, FORECAST_COLUMNS, site_id, frame, issued_at, non_negative=True
    )


def save_forecasts(
    engine: Engine, frames: Mapping[str, pd.DataFrame], issued_at: dt.datetime
) -> dict[str, int]:
    """Store one forecast issue of several sites ({site_id: frame}) in one transaction."""
    return save_issues(engine, forecasts, FORECAST_COLUMNS, frames, issued_at, non_negative=True)


def load_forecast(
    engine: Engine,
    site_id: str,
    start_utc: dt.datetime,
    end_utc: dt.datetime,
    *,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """ts, load_kw, pv_kw, issued_at, stored_at in [start_utc, end_utc), the latest issue per ts."""
    return load_latest(
        engine, forecasts, FORECAST_COLUMNS, site_id, start_utc, end_utc, as_of=as_of
    )


def latest_issue(frame: pd.DataFrame) -> dt.datetime | None:
    """The most recent `issued_at` among a loaded frame's intervals; None if it holds none (a
    frame without rows, or one whose values came from elsewhere, such as a ToU tariff's)."""
    latest = frame["issued_at"].max()
    return None if pd.isna(latest) else latest.to_pydatetime()


def latest_write(frame: pd.DataFrame) -> dt.datetime | None:
    """When the most recently written of a loaded frame's rows was written (`stored_at`); None
    if it holds none, or was read before rows kept that time (a snapshot of an earlier release)."""
    if "stored_at" not in frame.columns:
        return None
    latest = frame["stored_at"].max()
    return None if pd.isna(latest) else latest.to_pydatetime()


def save_price_series(
    engine: Engine, site_id: str, frame: pd.DataFrame, issued_at: dt.datetime
) -> int:
    """Store one price issue (ts, buy, sell; negative prices allowed); returns the number of rows."""
    return save_issue(
        engine, price_series, PRICE_COLUMNS, site_id, frame, issued_at, non_negative=False
    )


def save_price_series_by_site(
    engine: Engine, frames: Mapping[str, pd.DataFrame], issued_at: dt.datetime
) -> dict[str, int]:
    """Store one price issue of several sites ({site_id: frame}) in one transaction."""
    return save_issues(engine, price_series, PRICE_COLUMNS, frames, issued_at, non_negative=False)


def load_price_series(
    engine: Engine,
    site_id: str,
    start_utc: dt.datetime,
    end_utc: dt.datetime,
    *,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """ts, buy, sell, issued_at, stored_at in [start_utc, end_utc), the latest issue per ts."""
    return load_latest(
        engine, price_series, PRICE_COLUMNS, site_id, start_utc, end_utc, as_of=as_of
    )


def forecast_interval_counts(
    engine: Engine, site_ids: Sequence[str], start_utc: dt.datetime, end_utc: dt.datetime
) -> dict[str, int]:
    """Per site, the forecast's distinct interval starts in [start_utc, end_utc)."""
    return interval_counts(engine, forecasts, site_ids, start_utc, end_utc)


def price_interval_counts(
    engine: Engine, site_ids: Sequence[str], start_utc: dt.datetime, end_utc: dt.datetime
) -> dict[str, int]:
    """Per site, the price series' distinct interval starts in [start_utc, end_utc)."""
    return interval_counts(engine, price_series, site_ids, start_utc, end_utc)


def forecast_issue_counts(
    engine: Engine, frames: Mapping[str, pd.DataFrame], issued_at: dt.datetime
) -> dict[str, RepeatedRows]:
    """Per site, what the forecast issue `issued_at` already holds of the frame's rows."""
    return repeated_issue_rows(engine, forecasts, FORECAST_COLUMNS, frames, issued_at)


def price_issue_counts(
    engine: Engine, frames: Mapping[str, pd.DataFrame], issued_at: dt.datetime
) -> dict[str, RepeatedRows]:
    """Per site, what the price issue `issued_at` already holds of the frame's rows."""
    return repeated_issue_rows(engine, price_series, PRICE_COLUMNS, frames, issued_at)
