"""Synthetic load of a commercial building, shaped on the site's local clock.

Base load all night, a ramp when the building opens, a plateau with a lunch dip and an afternoon
cooling bump, a ramp down at closing, much less occupancy at weekends, and a little noise.
"""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.core.tariffs import local_clock_minutes
from dispatch_pipeline.demo.noise import ar1, rng_for
from dispatch_pipeline.demo.sites import DemoProfile, profile_for

RAMP_HOURS = 0.25  # logistic width: the 10-90 % ramp takes about an hour


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def occupancy_shape(hours: np.ndarray, profile: DemoProfile, weekend: bool) -> np.ndarray:
    """Load as a fraction of the weekday peak at local clock `hours` (no noise)."""
    opened = _logistic((hours - profile.open_hour) / RAMP_HOURS)
    closed = _logistic((profile.close_hour - hours) / RAMP_HOURS)
    activity = (
        1.0 - profile.lunch_dip * _bump(hours, 12.75, 0.5) + profile.hvac_bump * _bump(hours, 15.0, 1.25)
    ) / (1.0 + profile.hvac_bump)  # so a weekday afternoon is ~1.0
    occupied = opened * closed * activity * (profile.weekend_fraction if weekend else 1.0)
    return profile.base_fraction + (1.0 - profile.base_fraction) * occupied


def commercial_load(site: Site, day: LocalDay, seed: int = 0, profile: DemoProfile | None = None) -> np.ndarray:
    """Synthetic site load (kW) per interval of the local day; deterministic for (site, date, seed)."""
    profile = profile or profile_for(site)
    hours = (local_clock_minutes(day) + day.resolution_minutes / 2) / 60.0  # interval midpoints
    shape = occupancy_shape(hours, profile, weekend=day.date.weekday() >= 5)
    rng = rng_for(site.site_id, day.date, seed, "load")
    day_level = 1.0 + 0.02 * rng.standard_normal()  # weather and events move a whole day a little
    wiggle = ar1(rng, day.intervals, day.resolution_minutes, tau_minutes=45.0, sd=0.03)
    load = profile.load_peak_kw * shape * day_level * (1.0 + wiggle)
    # Never zero: a building always draws something (and the contract rejects negative load).
    return np.maximum(load, 0.05 * profile.load_peak_kw)
