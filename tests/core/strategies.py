"""Hypothesis strategies for valid dispatch requests of every shape the contract allows."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import strategies as st

from dispatch_pipeline.core.calendar import local_day

TIMEZONES = ("UTC", "Asia/Kuala_Lumpur", "Europe/Berlin", "America/New_York", "Australia/Sydney")
# Days that include both DST transitions in the zones above, and ordinary ones.
DATES = (
    dt.date(2024, 3, 10),
    dt.date(2024, 3, 31),
    dt.date(2024, 4, 7),
    dt.date(2024, 6, 21),
    dt.date(2024, 10, 6),
    dt.date(2024, 10, 27),
    dt.date(2024, 11, 3),
    dt.date(2024, 12, 24),
)


@st.composite
def dispatch_requests(draw, resolutions=(15, 30, 60)) -> dict:
    timezone = draw(st.sampled_from(TIMEZONES))
    date = draw(st.sampled_from(DATES))
    resolution = draw(st.sampled_from(resolutions))
    T = local_day(date, timezone, resolution).intervals
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hours = np.arange(T) * resolution / 60
    load_scale = draw(st.floats(5, 300))
    pv_scale = draw(st.floats(0, 400))
    load = load_scale * (0.6 + 0.4 * rng.random(T))
    pv = pv_scale * np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None) * rng.uniform(0.3, 1.0, T)
    peak_hours = (hours >= 14) & (hours < 22)
    buy = np.where(peak_hours, draw(st.floats(0.2, 0.8)), draw(st.floats(-0.1, 0.4))) + 0.05 * rng.random(T)
    sell = buy * draw(st.floats(-0.2, 0.9)) if draw(st.booleans()) else 0.5 * buy

    soc_min = draw(st.floats(0, 0.4))
    soc_max = draw(st.floats(max(soc_min, 0.6), 1.0))
    bess = {
        "capacity_kwh": draw(st.floats(5, 500)),
        "max_charge_kw": draw(st.floats(0, 250)),
        "max_discharge_kw": draw(st.floats(0, 250)),
        "soc_min": soc_min,
        "soc_max": soc_max,
        "soc_initial": draw(st.floats(0, 1)),
        "soc_final_min": draw(st.one_of(st.none(), st.floats(soc_min, soc_max))),
        "charge_efficiency": draw(st.floats(0.7, 1.0)),
        "discharge_efficiency": draw(st.floats(0.7, 1.0)),
        "cycle_cost_per_kwh": draw(st.sampled_from([0.0, 0.02])),
    }
    optional_limit = st.one_of(st.none(), st.floats(0, 400))
    limits = {
        "grid_import_max_kw": draw(optional_limit),
        "grid_export_max_kw": draw(optional_limit),
        "transformer_max_kw": draw(st.one_of(st.none(), st.floats(50, 500))),
    }
    return {
        "site_id": "PROP",
        "date": date.isoformat(),
        "timezone": timezone,
        "resolution_minutes": resolution,
        "load_kw": load.round(3).tolist(),
        "pv_kw": pv.round(3).tolist(),
        "tariff": {
            "buy": buy.round(4).tolist(),
            "sell": sell.round(4).tolist(),
            "demand_charge_per_kw": draw(st.sampled_from([0.0, 0.0, 2.5])),
        },
        "bess": bess,
        "limits": limits,
        "weights": {"cost": 1.0, "curtail": draw(st.sampled_from([0.0, 0.2])), "violation": 1000.0},
    }
