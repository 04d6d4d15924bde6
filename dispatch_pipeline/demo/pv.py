"""Synthetic PV output: pvlib clear-sky irradiance on a tilted roof, dimmed by seeded clouds.

Everything is computed locally: the Ineichen model reads its Linke turbidity climatology from a
file bundled with pvlib, so no weather data is downloaded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pvlib

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.demo.noise import ar1, rng_for
from dispatch_pipeline.demo.sites import profile_for

PERFORMANCE_RATIO = 0.8  # DC wiring, inverter, soiling and heat losses of a typical rooftop system
ROOF_TILT_DEG = 10.0  # commercial flat roofs carry low-tilt racking


def interval_midpoints(day: LocalDay) -> pd.DatetimeIndex:
    """UTC midpoints: an interval's average power is closest to the power at its middle."""
    return day.timestamps() + pd.Timedelta(minutes=day.resolution_minutes / 2)


def _clearsky(location: pvlib.location.Location, times: pd.DatetimeIndex, solar_position: pd.DataFrame) -> pd.DataFrame:
    try:
        return location.get_clearsky(times, model="ineichen", solar_position=solar_position)
    except (ImportError, OSError) as exc:
        # Ineichen needs h5py and pvlib's bundled LinkeTurbidities.h5; a slimmed install may lack
        # them. Simplified Solis needs neither and stays within a few percent on clear days.
        warnings.warn(f"Ineichen clear-sky model unavailable ({exc}); using simplified_solis", stacklevel=3)
        return location.get_clearsky(times, model="simplified_solis", solar_position=solar_position)


def clear_sky_pv(site: Site, day: LocalDay) -> np.ndarray:
    """AC power (kW) of the site's PV on a cloudless day, per interval."""
    if site.pv_kwp == 0:
        return np.zeros(day.intervals)
    times = interval_midpoints(day)
    location = pvlib.location.Location(
        site.latitude, site.longitude, tz="UTC", altitude=site.altitude_m, name=site.site_id
    )
    with warnings.catch_warnings():
        # pvlib 0.16 still calls DatetimeIndex.dayofyear, which pandas 3 deprecates: not ours to fix.
        warnings.filterwarnings("ignore", message=".*dayofyear is deprecated")
        sun = location.get_solarposition(times)
        sky = _clearsky(location, times, sun)
    facing_equator = 180.0 if site.latitude >= 0 else 0.0
    poa = pvlib.irradiance.get_total_irradiance(
        ROOF_TILT_DEG, facing_equator, sun["apparent_zenith"], sun["azimuth"],
        sky["dni"], sky["ghi"], sky["dhi"],
    )["poa_global"]
    power = site.pv_kwp * PERFORMANCE_RATIO * poa.to_numpy() / 1000.0
    power[sun["apparent_zenith"].to_numpy() >= 90.0] = 0.0  # sun below the horizon
    # The inverter is sized at the array's rating: it clips anything above.
    return np.clip(np.nan_to_num(power), 0.0, site.pv_kwp)


def cloud_factor(site: Site, day: LocalDay, seed: int) -> np.ndarray:
    """Share of clear-sky output that gets through the clouds, per interval (0.25..1).

    Each day draws a mean cloud cover (Beta-distributed around the site's climate, so clear and
    overcast days both occur) and clouds drift around it as an AR(1) process with a one-hour memory.
    Kasten & Czeplak (1980) turn cloud cover C into irradiance: 1 - 0.75 * C**3.4.
    """
    rng = rng_for(site.site_id, day.date, seed, "pv")
    mean = profile_for(site).cloud_mean
    concentration = 3.0  # low: days differ a lot from each other
    daily_cover = rng.beta(mean * concentration, (1.0 - mean) * concentration)
    drift = ar1(rng, day.intervals, day.resolution_minutes, tau_minutes=60.0, sd=0.15)
    cover = np.clip(daily_cover + drift, 0.0, 1.0)
    return 1.0 - 0.75 * cover**3.4


def pv_forecast(site: Site, day: LocalDay, seed: int = 0) -> np.ndarray:
    """Synthetic PV AC power (kW) per interval of the local day; deterministic for (site, date, seed)."""
    return clear_sky_pv(site, day) * cloud_factor(site, day, seed)
