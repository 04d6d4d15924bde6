"""Regenerate the example files in this folder (deterministic: same output on every run).

    python examples/make_sample_request.py [OUT_DIR]

- sample_request.json: the README's quick-start request in full (96 quarter-hours of a
  Kuala Lumpur commercial site on 2024-03-15, ToU prices, PV and the contract's example battery);
- sites.yaml: the demo sites, the input of `dispatch-pipeline sites import`;
- forecast.csv: two local days of demo forecast for KL_MALL and BERLIN_DEPOT (site_id, ts in
  UTC, load_kw, pv_kw);
- prices.csv: spot prices of the same two local days for BERLIN_DEPOT (site_id, ts, buy, sell),
  which it is planned on in place of its time-of-use tariff once both files are loaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dispatch_pipeline.core.site import Site, SiteBattery, site_request
from dispatch_pipeline.core.tariffs import WEEKDAYS, Prices, TouPeriod, TouTariff
from dispatch_pipeline.demo import (
    commercial_load,
    demo_forecast,
    demo_site,
    pv_forecast,
    sites_yaml_path,
)
from dispatch_pipeline.demo.sites import DemoProfile

DATE = "2024-03-15"
SEED = 0
FORECAST_SITES = ("KL_MALL", "BERLIN_DEPOT")
FORECAST_DATES = ("2024-03-15", "2024-03-16")  # a Friday and a Saturday

DEMO_SITE = Site(
    site_id="DEMO",
    name="Quick-start demo site",
    timezone="Asia/Kuala_Lumpur",
    latitude=3.1478,
    longitude=101.6953,
    altitude_m=60.0,
    pv_kwp=60.0,
    currency="MYR",
    # The contract's example battery: 100 kWh, 50 kW, the default SOC band and efficiencies.
    bess=SiteBattery(capacity_kwh=100.0, max_charge_kw=50.0, max_discharge_kw=50.0),
    tariff=TouTariff(
        currency="MYR",
        default=Prices(buy=0.40, sell=0.20),
        periods=(
            TouPeriod(name="morning", start="08:00", end="11:00", days=WEEKDAYS, buy=0.45, sell=0.22),
            TouPeriod(name="midday", start="11:00", end="14:00", days=WEEKDAYS, buy=0.50, sell=0.25),
            TouPeriod(name="peak", start="14:00", end="18:00", days=WEEKDAYS, buy=0.55, sell=0.28),
            TouPeriod(name="evening", start="18:00", end="22:00", days=WEEKDAYS, buy=0.50, sell=0.25),
        ),
    ),
)
# The README's load runs from about 80 kW at night to about 115 kW in the afternoon.
LOAD_RANGE_KW = (80.0, 115.0)
DEMO_PROFILE = DemoProfile(load_peak_kw=115.0, base_fraction=0.7, weekend_fraction=0.6, cloud_mean=0.5)


def sample_request() -> dict[str, Any]:
    day = DEMO_SITE.local_day(DATE)
    load = commercial_load(DEMO_SITE, day, SEED, DEMO_PROFILE)
    low, high = LOAD_RANGE_KW
    load = low + (high - low) * (load - load.min()) / (load.max() - load.min())
    pv = pv_forecast(DEMO_SITE, day, SEED)
    return site_request(DEMO_SITE, DATE, np.round(load, 2), np.round(pv, 2))


def format_request(request: dict[str, Any]) -> str:
    """JSON with one line per field and per tariff array, so a diff shows what changed."""
    lines = []
    for key, value in request.items():
        if isinstance(value, dict):
            inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def forecast_csv() -> str:
    frames = [
        demo_forecast(site_id, date, seed=SEED).assign(site_id=site_id)
        for site_id in FORECAST_SITES
        for date in FORECAST_DATES
    ]
    table = pd.concat(frames, ignore_index=True)[["site_id", "ts", "load_kw", "pv_kw"]]
    table["ts"] = table["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return table.to_csv(index=False, lineterminator="\n")


PRICE_SITE = "BERLIN_DEPOT"


def prices_csv() -> str:
    """Day-ahead spot prices for the Berlin depot's two local days (UTC+1), per quarter-hour:
    dear in the evening, cheap at night, below zero around a sunny Saturday's noon."""
    frames = []
    for date in FORECAST_DATES:
        day = demo_site(PRICE_SITE).local_day(date)
        hours = np.arange(day.intervals) / 4
        buy = 0.22 + 0.08 * np.cos((hours - 19) / 24 * 2 * np.pi)
        if day.date.weekday() == 5:
            buy -= np.where((hours >= 11) & (hours < 15), 0.27, 0.0)
        frames.append(pd.DataFrame({"ts": day.timestamps(), "buy": buy.round(4), "sell": (buy - 0.1).round(4)}))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "site_id", PRICE_SITE)
    table["ts"] = pd.to_datetime(table["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return table.to_csv(index=False, lineterminator="\n")


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sample_request.json").write_text(format_request(sample_request()), encoding="utf-8")
    shutil.copyfile(sites_yaml_path(), out_dir / "sites.yaml")
    (out_dir / "forecast.csv").write_text(forecast_csv(), encoding="utf-8")
    (out_dir / "prices.csv").write_text(prices_csv(), encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent,
        help="where to write the files (default: this folder)",
    )
    main(parser.parse_args().out_dir)
