"""Realistic generated site-days for the benchmarks: demo sites, pvlib PV, commercial load, ToU."""

from __future__ import annotations

import datetime as dt

import numpy as np

from dispatch_pipeline.demo import demo_request, demo_sites


def generated_requests(count: int, start: dt.date = dt.date(2024, 1, 1), seed: int = 7) -> list[dict]:
    """`count` 96-interval days, cycling through the demo sites with varied initial SOC."""
    sites = [s for s in demo_sites()]
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(count):
        site = sites[i % len(sites)]
        date = start + dt.timedelta(days=i // len(sites))
        request = demo_request(site, date, seed=seed + i)
        request["bess"] = {**request["bess"], "soc_initial": float(rng.uniform(0.15, 0.85))}
        if len(request["load_kw"]) == 96:
            requests.append(request)
        else:
            requests.append(demo_request(site, date + dt.timedelta(days=1), seed=seed + i))
    return requests


def market_requests(count: int, start: dt.date = dt.date(2024, 1, 1), seed: int = 7) -> list[dict]:
    """`count` 96-interval days over the year from `start` on a dynamic tariff, cycling through the
    demo sites: an hourly
    day-ahead spot price (a morning and a taller evening peak, a midday dip that goes negative on
    sunny summer days, noise) bought at spot plus a flat network fee and sold at spot, in the
    site's currency; demand charge and battery as the site ships them, initial SOC varied."""
    sites = [s for s in demo_sites()]
    rng = np.random.default_rng(seed)
    hours = np.arange(24)
    step = max(1, 365 * len(sites) // max(count, 1))
    requests = []
    for i in range(count):
        site = sites[i % len(sites)]
        date = start + dt.timedelta(days=(i // len(sites)) * step)
        request = demo_request(site, date, seed=seed + i)
        if len(request["load_kw"]) != 96:
            date += dt.timedelta(days=1)
            request = demo_request(site, date, seed=seed + i)
        summer = np.cos((date.timetuple().tm_yday - 172) / 365 * 2 * np.pi)  # 1 at midsummer, -1 midwinter
        spot = (
            rng.uniform(0.06, 0.12)
            + rng.uniform(0.02, 0.06) * np.exp(-(((hours - 8) / 1.5) ** 2))
            + rng.uniform(0.05, 0.12) * np.exp(-(((hours - 19) / 2.0) ** 2))
            - (0.06 + 0.06 * summer) * rng.uniform(0.5, 1.2) * np.exp(-(((hours - 13) / 2.5) ** 2))
            + rng.normal(0.0, 0.01, 24)
        )
        spot = np.repeat(np.round(spot, 4), 4)
        fee = rng.uniform(0.10, 0.18)
        request["tariff"] = {
            **request["tariff"],
            "buy": [float(x) for x in np.round(spot + fee, 4)],
            "sell": [float(x) for x in spot],
        }
        request["bess"] = {**request["bess"], "soc_initial": float(rng.uniform(0.15, 0.85))}
        requests.append(request)
    return requests
