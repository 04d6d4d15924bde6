"""`site_tariff` prices each site-day by the tariff in force on its local date, so a backfill of
days before a tariff change plans them at the prices, and the demand charge, of their time."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from dispatch_pipeline.cli import main
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.core.tariffs import TouTariff, expand_tariff
from dispatch_pipeline.defs.ingestion.tariff import site_tariff
from dispatch_pipeline.defs.local_runs import run_site_day
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import latest_run, save_forecast, upsert_site
from tests.pipeline.conftest import ISSUED_AT, price_table
from tests.pipeline.test_pipeline_runs import failure_message

# Berlin springs forward on the day its current tariff took over: 92 quarter-hours.
CHANGE = dt.date(2025, 3, 30)
BEFORE = CHANGE - dt.timedelta(days=1)
PRICE_SERIES_DAY = dt.date(2025, 3, 11)  # price_table's day, also under the earlier tariff
EARLIER = {
    "demand_charge_per_kw": 0.05,
    "default": {"buy": 0.15, "sell": 0.05},
    "periods": [{"name": "evening", "start": "17:00", "end": "20:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
                 "buy": 0.40, "sell": 0.05}],
}


@pytest.fixture
def site(engine, instance) -> Site:
    """BERLIN_DEPOT under a fresh id, on EARLIER until CHANGE, registered as a partition."""
    data = demo_site("BERLIN_DEPOT").model_dump()
    data["site_id"] = f"H_{uuid.uuid4().hex[:10]}"
    data["tariff_history"] = [{"until": CHANGE.isoformat(), "tariff": EARLIER}]
    site = Site.model_validate(data)
    upsert_site(engine, site)
    instance.add_dynamic_partitions("sites", [site.site_id])
    return site


def materialise_tariff(resources: dict[str, Any], instance, day: SiteDay) -> dg.ExecuteInProcessResult:
    return dg.materialize([site_tariff], partition_key=day.key, resources=resources, instance=instance)


def priced(result: dg.ExecuteInProcessResult, day: SiteDay) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The day's frame and its materialisation's metadata."""
    [event] = result.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    return result.output_for_node("site_tariff")[day.key], metadata


def test_a_day_before_the_change_is_priced_at_the_earlier_tariff(resources, instance, site):
    day = SiteDay(site.site_id, BEFORE)
    frame, metadata = priced(materialise_tariff(resources, instance, day), day)
    earlier = TouTariff.model_validate({**EARLIER, "currency": "EUR"})
    buy, sell = expand_tariff(earlier, site.local_day(BEFORE))
    assert frame["buy"].tolist() == buy.tolist() and frame["sell"].tolist() == sell.tolist()
    assert set(frame["demand_charge_per_kw"]) == {0.05}
    assert metadata["source"] == "tou_tariff"
    assert metadata["tariff"] == "tariff_history[0] (until 2025-03-30)"
    assert metadata["demand_charge_per_kw"] == 0.05
    assert metadata["buy_max"] == 0.40  # the earlier evening price, on a Saturday


def test_the_change_day_and_after_are_priced_at_the_sites_tariff(resources, instance, site):
    for date in (CHANGE, CHANGE + dt.timedelta(days=1)):
        day = SiteDay(site.site_id, date)
        frame, metadata = priced(materialise_tariff(resources, instance, day), day)
        buy, sell = expand_tariff(site.tariff, site.local_day(date))
        assert len(frame) == (92 if date == CHANGE else 96)
        assert frame["buy"].tolist() == buy.tolist() and frame["sell"].tolist() == sell.tolist()
        assert set(frame["demand_charge_per_kw"]) == {site.tariff.demand_charge_per_kw}
        assert metadata["tariff"] == "tariff (since 2025-03-30)"
        assert metadata["demand_charge_per_kw"] == site.tariff.demand_charge_per_kw


def test_a_site_without_history_keeps_its_one_tariff(resources, instance, make_site):
    plain = make_site("BERLIN_DEPOT")
    day = SiteDay(plain.site_id, BEFORE)
    frame, metadata = priced(materialise_tariff(resources, instance, day), day)
    assert frame["buy"].tolist() == expand_tariff(plain.tariff, plain.local_day(BEFORE))[0].tolist()
    assert metadata["tariff"] == "tariff"


def test_a_price_series_day_is_billed_the_demand_charge_of_its_tariff(
    job, instance, engine, database_url, site, tmp_path
):
    path = tmp_path / "spot.csv"
    price_table(site.site_id).to_csv(path, index=False)
    assert main(["prices", "load", str(path), "--database-url", database_url]) == 0
    save_forecast(engine, site.site_id, demo_forecast("BERLIN_DEPOT", PRICE_SERIES_DAY), ISSUED_AT)

    result = run_site_day(job, instance, SiteDay(site.site_id, PRICE_SERIES_DAY))

    assert result.success, failure_message(result)
    stored = latest_run(engine, site.site_id, PRICE_SERIES_DAY)
    prices = price_table(site.site_id)
    grid_import = np.array([p.grid_imp_kw for p in stored.points])
    grid_export = np.array([p.grid_exp_kw for p in stored.points])
    energy = (grid_import * prices["buy"].to_numpy() - grid_export * prices["sell"].to_numpy()).sum() * 0.25
    assert stored.kpis.total_cost == pytest.approx(energy + 0.05 * grid_import.max(), abs=1e-6)
    assert site.tariff.demand_charge_per_kw != 0.05
