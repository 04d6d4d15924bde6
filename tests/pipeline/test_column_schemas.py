"""Each asset's column schema (the UI's Columns tab) names the columns its rows really have."""

from __future__ import annotations

import datetime as dt

from dispatch_pipeline.definitions import ASSETS
from dispatch_pipeline.defs.ingestion.tariff import _tou_frame
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import load_forecast, open_database, save_forecast
from dispatch_pipeline.storage.tables import dispatch_explanations, dispatch_kpis, dispatch_schedule


def schema_columns(asset_key: str) -> list[str]:
    [asset] = [asset for asset in ASSETS if asset.key.to_user_string() == asset_key]
    return [column.name for column in asset.specs_by_key[asset.key].metadata["dagster/column_schema"].columns]


def test_the_stored_assets_schemas_are_their_tables_columns():
    # Interval rows are keyed by their run in SQL; the asset's rows are one run's.
    for asset_key, table in (("dispatch_schedule", dispatch_schedule), ("dispatch_explanations", dispatch_explanations)):
        assert schema_columns(asset_key) == [c.name for c in table.columns if c.name != "run_id"], asset_key
    assert schema_columns("dispatch_kpis") == [c.name for c in dispatch_kpis.columns]


def test_the_ingestion_assets_schemas_are_their_frames_columns(tmp_path):
    site = demo_site("KL_MALL")
    day = site.local_day(dt.date(2025, 3, 11), 15)
    engine = open_database(f"sqlite:///{tmp_path / 'columns.sqlite'}")
    save_forecast(engine, site.site_id, demo_forecast("KL_MALL", day.date), dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert schema_columns("site_forecast") == list(load_forecast(engine, site.site_id, day.start_utc, day.end_utc).columns)
    tariff = _tou_frame(site.tariff, day, dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert schema_columns("site_tariff") == list(tariff.columns)
