"""Realistic synthetic sites, forecasts and requests for demos and tests (nothing is downloaded)."""

from dispatch_pipeline.demo.forecast import demo_forecast, demo_request
from dispatch_pipeline.demo.load import commercial_load
from dispatch_pipeline.demo.pv import clear_sky_pv, pv_forecast
from dispatch_pipeline.demo.sites import DemoProfile, demo_site, demo_sites, sites_yaml_path

__all__ = [
    "DemoProfile",
    "clear_sky_pv",
    "commercial_load",
    "demo_forecast",
    "demo_request",
    "demo_site",
    "demo_sites",
    "pv_forecast",
    "sites_yaml_path",
]
