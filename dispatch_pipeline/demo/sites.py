"""Three demo sites in three timezones, and how their synthetic load and weather look.

The sites themselves are `sites.yaml` next to this module: the file a user copies (and
`examples/sites.yaml`, a test keeps the two equal) is the one the demo registers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dispatch_pipeline.core.site import Site, load_sites_yaml


@dataclass(frozen=True)
class DemoProfile:
    """Shape of a site's synthetic day. Hours are local clock hours."""

    load_peak_kw: float  # a typical weekday afternoon
    base_fraction: float = 0.35  # night load (servers, fridges, security lights) / peak
    weekend_fraction: float = 0.55  # weekend occupied load / weekday occupied load
    open_hour: float = 7.5  # middle of the morning ramp
    close_hour: float = 19.0  # middle of the evening ramp
    lunch_dip: float = 0.06  # fraction of peak lost around 12:45
    hvac_bump: float = 0.10  # fraction of peak added by afternoon cooling around 15:00
    # Mean daily cloud cover, 0 (clear) .. 1 (overcast); the demo values give yearly yields of
    # about 3.6 (KL), 2.6 (Berlin) and 4.9 (Phoenix) kWh/kWp/day, in line with measured ones.
    cloud_mean: float = 0.5


DEMO_PROFILES = {
    "KL_MALL": DemoProfile(
        load_peak_kw=900.0, base_fraction=0.30, weekend_fraction=0.85, open_hour=8.0,
        close_hour=22.0, lunch_dip=0.05, hvac_bump=0.12, cloud_mean=0.7,
    ),
    "BERLIN_DEPOT": DemoProfile(
        load_peak_kw=220.0, base_fraction=0.30, weekend_fraction=0.35, open_hour=6.5,
        close_hour=18.0, lunch_dip=0.08, hvac_bump=0.04, cloud_mean=0.65,
    ),
    "PHOENIX_OFFICE": DemoProfile(
        load_peak_kw=420.0, base_fraction=0.35, weekend_fraction=0.45, open_hour=7.0,
        close_hour=18.5, lunch_dip=0.07, hvac_bump=0.20, cloud_mean=0.25,
    ),
}


def profile_for(site: Site) -> DemoProfile:
    """The demo profile of a demo site; for any other site, one sized from its equipment."""
    if site.site_id in DEMO_PROFILES:
        return DEMO_PROFILES[site.site_id]
    # A commercial roof's PV rarely exceeds the building's peak, and batteries are sized to
    # shave a fraction of it: both give a plausible load scale for a site we know nothing else of.
    return DemoProfile(load_peak_kw=max(50.0, 1.2 * site.pv_kwp, 2.0 * site.bess.max_discharge_kw))


def sites_yaml_path() -> Path:
    return Path(str(resources.files("dispatch_pipeline.demo") / "sites.yaml"))


def demo_sites() -> list[Site]:
    return list(_shipped_sites())


@functools.cache
def _shipped_sites() -> tuple[Site, ...]:
    # Sites are frozen models: every caller may share the parsed ones.
    return tuple(load_sites_yaml(sites_yaml_path()))


def demo_site(site_id: str) -> Site:
    for site in demo_sites():
        if site.site_id == site_id:
            return site
    known = ", ".join(s.site_id for s in demo_sites())
    raise KeyError(f"no demo site {site_id!r} (demo sites: {known})")
