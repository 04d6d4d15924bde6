"""Three demo sites in three timezones, and how their synthetic load and weather look.

The sites are also shipped as `sites.yaml` next to this module (a test keeps the two equal): the
YAML is what a user copies, this module is what code and tests import.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dispatch_pipeline.core.request import Limits, Weights
from dispatch_pipeline.core.site import Site, SiteBattery
from dispatch_pipeline.core.tariffs import Prices, TouPeriod, TouTariff

WEEKDAYS_ONLY = ("mon", "tue", "wed", "thu", "fri")


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
    return [_kl_mall(), _berlin_depot(), _phoenix_office()]


def demo_site(site_id: str) -> Site:
    for site in demo_sites():
        if site.site_id == site_id:
            return site
    known = ", ".join(s.site_id for s in demo_sites())
    raise KeyError(f"no demo site {site_id!r} (demo sites: {known})")


def _kl_mall() -> Site:
    # Modelled on TNB's medium-voltage commercial peak/off-peak tariff (C2): peak 08:00-22:00 on
    # weekdays; the monthly maximum-demand charge (~45 MYR/kW) spread over 30 days.
    return Site(
        site_id="KL_MALL",
        name="Kuala Lumpur shopping mall",
        timezone="Asia/Kuala_Lumpur",
        latitude=3.1478, longitude=101.6953, altitude_m=60.0,
        pv_kwp=500.0,
        currency="MYR",
        bess=SiteBattery(
            capacity_kwh=1000.0, max_charge_kw=500.0, max_discharge_kw=500.0,
            soc_min=0.1, soc_max=0.95, soc_initial=0.5, charge_efficiency=0.95,
            discharge_efficiency=0.95, cycle_cost_per_kwh=0.05,
        ),
        limits=Limits(grid_import_max_kw=1200.0, grid_export_max_kw=400.0, transformer_max_kw=1500.0),
        weights=Weights(),
        tariff=TouTariff(
            currency="MYR",
            demand_charge_per_kw=1.5,
            default=Prices(buy=0.224, sell=0.18),
            periods=(TouPeriod(name="peak", start="08:00", end="22:00", days=WEEKDAYS_ONLY, buy=0.365, sell=0.24),),
        ),
    )


def _berlin_depot() -> Site:
    # German commercial supply with a day/night split and an evening peak; PV exports get a
    # feed-in tariff far below the purchase price, and the grid operator caps feed-in.
    return Site(
        site_id="BERLIN_DEPOT",
        name="Berlin logistics depot",
        timezone="Europe/Berlin",
        latitude=52.52, longitude=13.405, altitude_m=34.0,
        pv_kwp=250.0,
        currency="EUR",
        bess=SiteBattery(
            capacity_kwh=400.0, max_charge_kw=200.0, max_discharge_kw=200.0,
            soc_min=0.1, soc_max=0.95, soc_initial=0.5, charge_efficiency=0.96,
            discharge_efficiency=0.96, cycle_cost_per_kwh=0.03,
        ),
        limits=Limits(grid_import_max_kw=None, grid_export_max_kw=100.0, transformer_max_kw=400.0),
        weights=Weights(),
        tariff=TouTariff(
            currency="EUR",
            demand_charge_per_kw=0.30,
            default=Prices(buy=0.21, sell=0.075),
            periods=(
                TouPeriod(name="day", start="06:00", end="17:00", days=WEEKDAYS_ONLY, buy=0.27, sell=0.075),
                TouPeriod(name="evening_peak", start="17:00", end="20:00", days=WEEKDAYS_ONLY, buy=0.34, sell=0.075),
                TouPeriod(name="weekend_solar", start="10:00", end="16:00", days=("sat", "sun"), buy=0.19, sell=0.06),
            ),
        ),
    )


def _phoenix_office() -> Site:
    # Arizona utility style: a short weekday on-peak window at 16:00-19:00, a cheap midday
    # "super off-peak" from the solar glut, and a demand charge (~18 USD/kW-month, per day here).
    return Site(
        site_id="PHOENIX_OFFICE",
        name="Phoenix office campus",
        timezone="America/Phoenix",
        latitude=33.4484, longitude=-112.074, altitude_m=331.0,
        pv_kwp=300.0,
        currency="USD",
        bess=SiteBattery(
            capacity_kwh=600.0, max_charge_kw=300.0, max_discharge_kw=300.0,
            soc_min=0.1, soc_max=0.95, soc_initial=0.5, charge_efficiency=0.95,
            discharge_efficiency=0.95, cycle_cost_per_kwh=0.02,
        ),
        limits=Limits(grid_import_max_kw=500.0, grid_export_max_kw=250.0, transformer_max_kw=750.0),
        weights=Weights(),
        tariff=TouTariff(
            currency="USD",
            demand_charge_per_kw=0.60,
            default=Prices(buy=0.085, sell=0.06),
            periods=(
                TouPeriod(name="super_off_peak", start="10:00", end="15:00", days=WEEKDAYS_ONLY, buy=0.055, sell=0.04),
                TouPeriod(name="on_peak", start="16:00", end="19:00", days=WEEKDAYS_ONLY, buy=0.24, sell=0.10),
            ),
        ),
    )
