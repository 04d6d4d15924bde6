"""Synthetic demo data: PV follows the sun in local time, load looks commercial, all is seeded."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.request import parse_request
from dispatch_pipeline.core.tariffs import expand_tariff, local_clock_minutes
from dispatch_pipeline.demo import (
    clear_sky_pv,
    commercial_load,
    demo_forecast,
    demo_request,
    demo_site,
    demo_sites,
    pv_forecast,
)
from dispatch_pipeline.demo.load import occupancy_shape
from dispatch_pipeline.demo.sites import DEMO_PROFILES

SITES = demo_sites()
SITE_IDS = [s.site_id for s in SITES]
DATES = [dt.date(2024, 1, 10), dt.date(2024, 3, 31), dt.date(2024, 6, 21), dt.date(2024, 10, 27)]


def solar_noon_local_minutes(longitude: float, timezone: str, date: dt.date) -> float:
    """NOAA's equation-of-time approximation: independent of pvlib."""
    g = 2 * math.pi / 365 * (date.timetuple().tm_yday - 1)
    eot = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    offset = dt.datetime.combine(date, dt.time(12), tzinfo=ZoneInfo(timezone)).utcoffset()
    return 720 - 4 * longitude - eot + offset.total_seconds() / 60


def midpoints_minutes(day) -> np.ndarray:
    return local_clock_minutes(day) + day.resolution_minutes / 2


def test_three_sites_in_three_timezones_and_currencies():
    assert SITE_IDS == ["KL_MALL", "BERLIN_DEPOT", "PHOENIX_OFFICE"]
    assert {s.timezone for s in SITES} == {"Asia/Kuala_Lumpur", "Europe/Berlin", "America/Phoenix"}
    assert [s.currency for s in SITES] == ["MYR", "EUR", "USD"]
    assert demo_site("PHOENIX_OFFICE").tariff.demand_charge_per_kw > 0
    berlin = demo_site("BERLIN_DEPOT")
    buy, sell = expand_tariff(berlin.tariff, berlin.local_day("2024-03-15"))
    assert sell.max() < 0.5 * buy.min()  # low export price
    with pytest.raises(KeyError, match="NOWHERE"):
        demo_site("NOWHERE")


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
@pytest.mark.parametrize("date", DATES, ids=str)
def test_pv_is_zero_at_night_and_peaks_at_local_solar_noon(site, date):
    day = site.local_day(date)
    minutes = midpoints_minutes(day)
    clear = clear_sky_pv(site, day)
    pv = pv_forecast(site, day, seed=0)
    night = (minutes < 3 * 60) | (minutes > 23 * 60)
    assert np.all(pv[night] == 0.0) and np.all(clear[night] == 0.0)
    assert np.all(pv >= 0) and np.all(pv <= clear + 1e-9)
    assert clear.max() <= site.pv_kwp

    noon = solar_noon_local_minutes(site.longitude, site.timezone, date)
    assert abs(minutes[np.argmax(clear)] - noon) <= 10  # within the 15-minute grid
    centre = float((pv * minutes).sum() / pv.sum())  # clouds may skew, but not by hours
    assert abs(centre - noon) <= 60, (centre / 60, noon / 60)
    # The peak is where the tariff day thinks it is: KL ~13:15, Phoenix ~12:30, Berlin 12:xx/13:xx.
    assert 11 * 60 < noon < 14 * 60


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_yearly_pv_yield_is_plausible(site):
    days = [site.local_day(dt.date(2024, 1, 1) + dt.timedelta(days=k)) for k in range(0, 366, 5)]
    daily = [pv_forecast(site, d, seed=3).sum() * d.dt_hours / site.pv_kwp for d in days]
    expected = {"KL_MALL": 3.6, "BERLIN_DEPOT": 2.6, "PHOENIX_OFFICE": 4.9}[site.site_id]  # kWh/kWp/day
    assert abs(np.mean(daily) - expected) < 0.5
    assert max(daily) > 1.5 * min(daily)  # some days are cloudy, some clear


def test_berlin_pv_is_summer_heavy():
    site = demo_site("BERLIN_DEPOT")
    june = clear_sky_pv(site, site.local_day("2024-06-21")).sum()
    december = clear_sky_pv(site, site.local_day("2024-12-21")).sum()
    assert june > 3 * december


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_load_is_positive_and_shaped_like_a_commercial_building(site):
    day = site.local_day("2024-03-13")  # a Wednesday
    load = commercial_load(site, day, seed=0)
    hours = midpoints_minutes(day) / 60
    assert np.all(load > 0)
    night = load[(hours > 1) & (hours < 4)].mean()
    midday = load[(hours > 11) & (hours < 15)].mean()
    assert midday > 1.8 * night
    peak = DEMO_PROFILES[site.site_id].load_peak_kw
    assert 0.85 * peak < load.max() < 1.15 * peak


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
def test_weekday_load_exceeds_weekend_load(site):
    week = [dt.date(2024, 3, 11) + dt.timedelta(days=k) for k in range(7)]  # Mon..Sun
    for seed in range(3):
        energy = [commercial_load(site, site.local_day(d), seed).mean() for d in week]
        assert min(energy[:5]) > 1.03 * max(energy[5:]), energy


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_noise_free_shape_has_ramp_lunch_dip_and_afternoon_bump(site_id):
    profile = DEMO_PROFILES[site_id]
    at = lambda h: float(occupancy_shape(np.array([h]), profile, weekend=False)[0])  # noqa: E731
    assert at(3.0) == pytest.approx(profile.base_fraction, abs=0.01)
    assert at(profile.open_hour - 1) < at(profile.open_hour) < at(profile.open_hour + 1)
    assert at(12.75) < at(11.25)  # lunch
    assert at(15.0) > at(11.25)  # cooling
    assert at(profile.close_hour + 1.5) < 0.5 * at(15.0)
    weekend = float(occupancy_shape(np.array([15.0]), profile, weekend=True)[0])
    assert weekend < at(15.0)


@pytest.mark.parametrize(("date", "intervals"), [("2024-03-31", 92), ("2024-10-27", 100), ("2024-07-01", 96)])
def test_forecast_covers_the_local_day_across_dst(date, intervals):
    frame = demo_forecast("BERLIN_DEPOT", date)
    assert list(frame.columns) == ["ts", "load_kw", "pv_kw"]
    assert len(frame) == intervals
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[0] == pd.Timestamp(date, tz="Europe/Berlin").tz_convert("UTC")
    assert (frame["ts"].diff().dropna() == pd.Timedelta(minutes=15)).all()
    assert (frame["load_kw"] > 0).all() and (frame["pv_kw"] >= 0).all()


def test_forecast_at_other_resolutions():
    frame = demo_forecast("PHOENIX_OFFICE", "2024-05-01", resolution_minutes=60, seed=1)
    assert len(frame) == 24
    assert frame["pv_kw"].iloc[0] == 0.0 and frame["pv_kw"].iloc[12] > 50


def test_same_seed_same_data_other_seed_or_date_other_data():
    first = demo_forecast("KL_MALL", "2024-03-15", seed=7)
    pd.testing.assert_frame_equal(first, demo_forecast("KL_MALL", "2024-03-15", seed=7))
    other_seed = demo_forecast("KL_MALL", "2024-03-15", seed=8)
    other_date = demo_forecast("KL_MALL", "2024-03-22", seed=7)  # also a Friday
    for other in (other_seed, other_date):
        assert not np.allclose(first["load_kw"], other["load_kw"])
        assert not np.allclose(first["pv_kw"], other["pv_kw"])


def test_data_is_the_same_in_another_process():
    # str hashes are salted per process: a seed built from hash() would fail this.
    code = (
        "from dispatch_pipeline.demo import demo_forecast;"
        "f = demo_forecast('BERLIN_DEPOT', '2024-06-03', seed=5);"
        "print(repr(float(f.load_kw.sum())), repr(float(f.pv_kw.sum())))"
    )
    here = demo_forecast("BERLIN_DEPOT", "2024-06-03", seed=5)
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.split()
    assert output == [repr(float(here.load_kw.sum())), repr(float(here.pv_kw.sum()))]


@pytest.mark.parametrize("site", SITES, ids=SITE_IDS)
@pytest.mark.parametrize("date", [*DATES, dt.date(2024, 3, 16)], ids=str)
def test_demo_request_is_a_valid_contract_request(site, date):
    request = demo_request(site, date, seed=2)
    problem = build_problem(request)
    day = site.local_day(date)
    assert problem.intervals == day.intervals
    assert problem.day.start_utc == day.start_utc
    assert problem.bess.model_dump() == site.bess.model_dump() and problem.limits == site.limits
    assert problem.demand_charge_per_kw == site.tariff.demand_charge_per_kw
    buy, sell = expand_tariff(site.tariff, day)
    np.testing.assert_array_equal(problem.buy, buy)
    np.testing.assert_array_equal(problem.sell, sell)
    assert problem.pv_kw.max() > 0


def test_demo_request_by_id_with_overrides():
    request = demo_request("KL_MALL", "2024-03-15", resolution_minutes=30, use_milp=False, bess={"soc_initial": 0.2})
    parsed = parse_request(request)
    assert len(parsed.load_kw) == 48 and parsed.use_milp is False
    assert parsed.bess.soc_initial == 0.2 and parsed.bess.capacity_kwh == 1000.0


def test_clear_sky_falls_back_when_ineichen_data_is_missing(monkeypatch):
    import pvlib

    site = demo_site("PHOENIX_OFFICE")
    day = site.local_day("2024-05-01")
    ineichen = clear_sky_pv(site, day)

    def no_h5(*args, **kwargs):
        raise ImportError("h5py is not installed")

    monkeypatch.setattr(pvlib.clearsky, "lookup_linke_turbidity", no_h5)
    with pytest.warns(UserWarning, match="simplified_solis"):
        solis = clear_sky_pv(site, day)
    assert not np.array_equal(solis, ineichen)
    assert abs(solis.sum() - ineichen.sum()) < 0.1 * ineichen.sum()
