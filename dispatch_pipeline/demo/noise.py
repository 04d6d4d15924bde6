"""Seeded randomness for the demo data: the same (site, date, seed) always gives the same day."""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np


def rng_for(site_id: str, date: dt.date, seed: int, stream: str) -> np.random.Generator:
    """An independent generator per site, date, seed and purpose.

    crc32 rather than hash(): Python salts str hashes per process, which would break determinism.
    Separate streams keep the PV weather unchanged when the load model draws more numbers.
    """
    key = [seed, zlib.crc32(site_id.encode()), date.toordinal(), zlib.crc32(stream.encode())]
    return np.random.default_rng(key)


def ar1(rng: np.random.Generator, n: int, step_minutes: float, tau_minutes: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with standard deviation `sd` and correlation time `tau_minutes`.

    phi follows from the time step, so the process looks alike at 5- and 60-minute resolution.
    """
    phi = float(np.exp(-step_minutes / tau_minutes))
    shocks = rng.standard_normal(n)
    series = np.empty(n)
    series[0] = sd * shocks[0]
    innovation = sd * np.sqrt(1.0 - phi**2)
    for t in range(1, n):
        series[t] = phi * series[t - 1] + innovation * shocks[t]
    return series
