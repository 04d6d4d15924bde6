"""`dispatch-pipeline forecasts load FILE`: store load/PV forecasts from CSV or Parquet.

Columns site_id, ts, load_kw, pv_kw (kW, >= 0); see series_files for the checks.
"""

from __future__ import annotations

import argparse

from dispatch_pipeline.cli.series_files import SeriesFile, register_loader

FORECAST_FILE = SeriesFile(
    command="forecasts",
    what="forecast",
    value_columns=("load_kw", "pv_kw"),
    non_negative=True,
    save="save_forecasts",
    load="load_forecast",
    issue_counts="forecast_issue_counts",
    description=(
        "Store load and PV forecasts in the application database (DATABASE_URL, else the demo's "
        "SQLite under DAGSTER_HOME or dagster_home/embedded). A newer issue of the same interval "
        "wins when plans read them."
    ),
)


def register(subcommands: argparse._SubParsersAction) -> None:
    register_loader(subcommands, FORECAST_FILE)
