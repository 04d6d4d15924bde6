"""Demo forecasts and complete solve requests for any site and local day, with no downloads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from dispatch_pipeline.core.site import Site, site_request
from dispatch_pipeline.demo.load import commercial_load
from dispatch_pipeline.demo.pv import pv_forecast
from dispatch_pipeline.demo.sites import demo_site

# Watt precision: keeps written files short and stable, far below any forecast's accuracy.
DECIMALS = 3


def _resolve(site: Site | str) -> Site:
    return demo_site(site) if isinstance(site, str) else site


def demo_forecast(
    site: Site | str, date: dt.date | str, resolution_minutes: int = 15, seed: int = 0
) -> pd.DataFrame:
    """Columns ts (interval start, UTC), load_kw, pv_kw for the site's local day."""
    site = _resolve(site)
    day = site.local_day(date, resolution_minutes)
    return pd.DataFrame(
        {
            "ts": day.timestamps(),
            "load_kw": np.round(commercial_load(site, day, seed), DECIMALS),
            "pv_kw": np.round(pv_forecast(site, day, seed), DECIMALS),
        }
    )


def demo_request(
    site: Site | str, date: dt.date | str, seed: int = 0, resolution_minutes: int = 15, **overrides: Any
) -> dict[str, Any]:
    """A complete contract request: demo load and PV, prices from the site's ToU tariff."""
    site = _resolve(site)
    forecast = demo_forecast(site, date, resolution_minutes, seed)
    return site_request(
        site, date, forecast["load_kw"].to_numpy(), forecast["pv_kw"].to_numpy(),
        resolution_minutes=resolution_minutes, **overrides,
    )
