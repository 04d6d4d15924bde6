"""A plan re-run on its own reads the forecast its upstream run validated, not the newest one."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from dispatch_pipeline.defs.io_managers import SiteDayPickleIOManager
from dispatch_pipeline.defs.partitions import SiteDay, partition_range_tags
from dispatch_pipeline.demo import demo_forecast
from dispatch_pipeline.storage import latest_run, save_forecast
from tests.pipeline.conftest import ISSUED_AT
from tests.pipeline.test_pipeline_runs import failure_message

DAY = dt.date(2025, 6, 2)
INGESTION = [dg.AssetKey("site_forecast"), dg.AssetKey("site_tariff")]
PLANNING = [dg.AssetKey("dispatch_schedule"), dg.AssetKey("dispatch_explanations"), dg.AssetKey("dispatch_kpis")]


def run_assets(job, instance, days: list[SiteDay], assets: list[dg.AssetKey]) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        instance=instance, asset_selection=assets, tags=partition_range_tags(days), raise_on_error=False
    )


def approx(values) -> object:
    return pytest.approx(list(values), abs=1e-6)


def planned_load_kw(engine, day: SiteDay) -> list[float]:
    """The load each stored interval balances (PV used + discharge + import - charge - export)."""
    points = latest_run(engine, day.site_id, day.date).points
    return [p.pv_set_kw + p.batt_dis_kw + p.grid_imp_kw - p.batt_ch_kw - p.grid_exp_kw for p in points]


def test_a_plan_rerun_uses_the_snapshot_of_the_run_that_ingested_it(job, instance, engine, make_site):
    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("KL_MALL", dates)
    days = [SiteDay(site.site_id, d) for d in dates]
    ingested = run_assets(job, instance, days, INGESTION)
    assert ingested.success
    # A newer forecast arrives after ingestion; a plan-only run must not pick it up.
    for date in dates:
        doubled = demo_forecast("KL_MALL", date).assign(load_kw=lambda f: f["load_kw"] * 2)
        save_forecast(engine, site.site_id, doubled, ISSUED_AT + dt.timedelta(days=1))

    planned = run_assets(job, instance, days, PLANNING)
    assert planned.success, failure_message(planned)
    for day in days:
        original = demo_forecast("KL_MALL", day.date)["load_kw"].to_numpy()
        assert planned_load_kw(engine, day) == approx(original)
        assert latest_run(engine, day.site_id, day.date).run.dagster_run_id == planned.run_id


def test_each_partition_reads_the_run_of_its_latest_ingestion(job, instance, engine, make_site, monkeypatch):
    # One event log record per page: the first page holds only the second day's newest
    # materialisation, and the first day's run is found on a later one.
    monkeypatch.setattr(SiteDayPickleIOManager, "RECORDS_PAGE", 1)
    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("BERLIN_DEPOT", dates)
    first, second = (SiteDay(site.site_id, d) for d in dates)
    assert run_assets(job, instance, [first, second], INGESTION).success
    # The second day is ingested again, from a newer forecast, in a run of its own.
    doubled = demo_forecast("BERLIN_DEPOT", second.date).assign(load_kw=lambda f: f["load_kw"] * 2)
    save_forecast(engine, site.site_id, doubled, ISSUED_AT + dt.timedelta(days=1))
    assert run_assets(job, instance, [second, second], INGESTION).success

    planned = run_assets(job, instance, [first, second], PLANNING)
    assert planned.success, failure_message(planned)
    assert planned_load_kw(engine, first) == approx(demo_forecast("BERLIN_DEPOT", first.date)["load_kw"])
    assert planned_load_kw(engine, second) == approx(doubled["load_kw"])


def test_planning_partitions_never_ingested_fails_naming_them(job, instance, engine, make_site):
    site = make_site("PHOENIX_OFFICE", (DAY,))
    day = SiteDay(site.site_id, DAY)
    planned = run_assets(job, instance, [day, day], PLANNING)
    assert not planned.success
    message = failure_message(planned)
    assert f"site_forecast has no stored snapshot for site {site.site_id} on 2025-06-02 (never materialised): materialise site_forecast" in message
    assert latest_run(engine, site.site_id, DAY) is None


def test_planning_from_a_deleted_snapshot_names_the_file(job, instance, engine, make_site, snapshots_dir):
    site = make_site("PHOENIX_OFFICE", (DAY,))
    day = SiteDay(site.site_id, DAY)
    ingested = run_assets(job, instance, [day, day], INGESTION)
    assert ingested.success
    snapshot = snapshots_dir / "site_forecast" / site.site_id / f"{ingested.run_id}.pkl"
    snapshot.unlink()  # as the operations guide's clean-up of old snapshots would

    planned = run_assets(job, instance, [day, day], PLANNING)

    assert not planned.success
    message = failure_message(planned)
    assert f"site {site.site_id} on 2025-06-02 (materialised, but not in the snapshot file of its latest run, {snapshot}: deleted" in message
    assert "materialise site_forecast for these partitions" in message
