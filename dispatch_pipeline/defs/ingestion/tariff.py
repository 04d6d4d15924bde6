"""`site_tariff`: buy and sell price of every interval of the site-day, and the demand charge of
the tariff in force on it."""

import datetime as dt
from collections import Counter

import dagster as dg
import numpy as np
import pandas as pd

from dispatch_pipeline.core.calendar import LocalDay
from dispatch_pipeline.core.site import TariffInForce
from dispatch_pipeline.core.tariffs import TouTariff, expand_tariff
from dispatch_pipeline.defs.column_schemas import SITE_TARIFF
from dispatch_pipeline.defs.common import BACKFILL_POLICY, OWNERS
from dispatch_pipeline.defs.ingestion.coverage import fail_partitions
from dispatch_pipeline.defs.ingestion.day_slices import load_step_slices
from dispatch_pipeline.defs.partition_metadata import frames_metadata
from dispatch_pipeline.defs.partitions import LOCAL_DATE_NOTE, parse_site_day, site_day_partitions
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import load_price_series
from dispatch_pipeline.storage.forecasts import PRICE_COLUMNS

# The tariff's demand charge travels with its prices: a plan made later from this snapshot bills
# the peak as the prices were billed, whatever the site's tariff says by then.
DEMAND_CHARGE = "demand_charge_per_kw"
# The price issue each interval took, and when its row was written, so that the plan can say how
# current its prices were; NaT where they came from the ToU tariff.
ISSUED_AT = "issued_at"
STORED_AT = "stored_at"
# When the site's registration the day was priced with last changed (`sites.updated_at`, read
# with it): the tariff, its demand charge and the ToU prices are that registration's, so a plan
# made from this snapshot records it (the oldest registration it used), and a change of the site
# since makes the plan stale.
SITE_UPDATED_AT = "site_updated_at"


@dg.asset(
    partitions_def=site_day_partitions,
    backfill_policy=BACKFILL_POLICY,
    io_manager_key="site_day_io_manager",
    group_name="ingestion",
    kinds={"sql", "pandas"},
    owners=OWNERS,
    metadata={"source_table": "price_series (else the site's ToU tariff)", **SITE_TARIFF},
    description=(
        "Buy and sell prices (currency/kWh) per quarter-hour of the site's local day: the stored "
        "price series when one was issued for the day (it must then cover every interval), else "
        "the site's time-of-use tariff in force on the day (its `tariff`, or the `tariff_history` "
        "entry for a day before a change) expanded by local clock time, DST days included."
        + LOCAL_DATE_NOTE
    ),
)
def site_tariff(
    context: dg.AssetExecutionContext, storage: DispatchStorage
) -> dg.Output[dict[str, pd.DataFrame]]:
    step = load_step_slices(context, storage, load_price_series, PRICE_COLUMNS)
    frames: dict[str, pd.DataFrame] = {}
    tariffs: dict[str, TariffInForce] = {}
    sources: Counter[str] = Counter()
    for day, stored in step.slices.items():
        # A price series replaces the tariff's prices, not its demand charge: both are the day's.
        tariffs[day.key] = step.sites[day.site_id].tariff_in_force(day.date)
        tariff = tariffs[day.key].tariff
        registered = step.updated_at[day.site_id]
        if not stored.stored_rows:
            frames[day.key] = _tou_frame(tariff, stored.local, registered)
            sources["tou_tariff"] += 1
        elif reason := stored.unusable_reason("price series", day.site_id):
            step.problems[day.key] = reason
        else:
            frames[day.key] = stored.rows[["ts", "buy", "sell"]].assign(
                source="price_series",
                **{
                    DEMAND_CHARGE: tariff.demand_charge_per_kw,
                    ISSUED_AT: stored.rows[ISSUED_AT],
                    STORED_AT: stored.rows[STORED_AT],
                    SITE_UPDATED_AT: _every_interval(registered, len(stored.rows)),
                },
            )
            sources["price_series"] += 1
    fail_partitions(step.problems)
    metadata = frames_metadata(
        context,
        frames,
        lambda key, frame: _day_metadata(frame, step.sites[parse_site_day(key).site_id].currency, tariffs[key]),
        sources=dg.MetadataValue.json(dict(sources.most_common())),
    )
    return dg.Output(frames, metadata=metadata)


def _tou_frame(tariff: TouTariff, local: LocalDay, site_updated_at: dt.datetime) -> pd.DataFrame:
    """The day's prices from its time-of-use tariff, of the site registration of `site_updated_at`."""
    buy, sell = expand_tariff(tariff, local)
    # A scalar "source" is broadcast slowly; an object array of it gets the same dtype (str on
    # pandas 3, object before) for less. Every array here is new, so none needs copying.
    source = np.full(local.intervals, "tou_tariff", dtype=object)
    demand_charge = np.full(local.intervals, tariff.demand_charge_per_kw)
    never_issued = pd.DatetimeIndex(np.full(local.intervals, np.datetime64("NaT", "us")), tz="UTC")
    return pd.DataFrame(
        {
            "ts": local.timestamps(),
            "buy": buy,
            "sell": sell,
            "source": source,
            DEMAND_CHARGE: demand_charge,
            ISSUED_AT: never_issued,
            STORED_AT: never_issued,
            SITE_UPDATED_AT: _every_interval(site_updated_at, local.intervals),
        },
        copy=False,
    )


def _every_interval(instant: dt.datetime, intervals: int) -> pd.DatetimeIndex:
    """An aware instant once per interval, as a UTC column (as quickly as `never_issued`)."""
    naive_utc = instant.astimezone(dt.UTC).replace(tzinfo=None)
    return pd.DatetimeIndex(np.full(intervals, np.datetime64(naive_utc, "us")), tz="UTC")


def site_registration(frame: pd.DataFrame) -> dt.datetime | None:
    """The `updated_at` of the site registration a site_tariff frame was made with; None for a
    snapshot of an earlier release, which did not keep it."""
    if SITE_UPDATED_AT not in frame.columns:
        return None
    oldest = frame[SITE_UPDATED_AT].min()
    return None if pd.isna(oldest) else oldest.to_pydatetime()


def _day_metadata(frame: pd.DataFrame, currency: str, tariff: TariffInForce) -> dict[str, object]:
    return {
        "source": frame["source"].iat[0],
        # Which of the site's tariffs billed the day (its prices too where the source is tou_tariff).
        "tariff": tariff.describe(),
        "demand_charge_per_kw": float(frame[DEMAND_CHARGE].iat[0]),
        "intervals": len(frame),
        "currency": currency,
        "buy_min": float(frame["buy"].min()),
        "buy_max": float(frame["buy"].max()),
        "sell_min": float(frame["sell"].min()),
        "sell_max": float(frame["sell"].max()),
    }
