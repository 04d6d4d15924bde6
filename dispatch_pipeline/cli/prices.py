"""`dispatch-pipeline prices load FILE`: store import/export price series from CSV or Parquet.

Columns site_id, ts, buy, sell (per kWh in the site's currency; negative prices allowed, as
spot markets have them); see series_files for the checks. A site-day covered by a price series
is planned on it instead of the site's time-of-use tariff.
"""

from __future__ import annotations

import argparse

from dispatch_pipeline.cli.series_files import SeriesFile, register_loader

PRICE_FILE = SeriesFile(
    command="prices",
    what="price series",
    value_columns=("buy", "sell"),
    non_negative=False,
    save="save_price_series_by_site",
    load="load_price_series",
    issue_counts="price_issue_counts",
    description=(
        "Store import (buy) and export (sell) prices per interval in the application database "
        "(DATABASE_URL, else the demo's SQLite under DAGSTER_HOME or dagster_home/embedded). "
        "They replace the site's time-of-use tariff on the days they cover; a newer issue of the "
        "same interval wins."
    ),
)


def register(subcommands: argparse._SubParsersAction) -> None:
    register_loader(subcommands, PRICE_FILE)
