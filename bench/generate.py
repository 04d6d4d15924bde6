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
