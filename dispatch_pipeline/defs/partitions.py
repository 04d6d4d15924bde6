"""Site x date partitions: every asset of the pipeline is one site's local day.

The `date` dimension is a plain calendar date label in UTC (`DailyPartitionsDefinition` needs one
timezone), read as the *site's own* local date: `2025-03-11|KL_MALL` is 11 March in Kuala Lumpur.
`end_offset=3` keeps the day after UTC tomorrow in the set: a site's local date runs at most one day
ahead of UTC (UTC+14), so every site's local tomorrow is a partition at every moment, whatever the
day-ahead planning time (with 2, a site east of UTC+10 planning at 10:00 would find none).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg
from dagster._core.instance import DynamicPartitionsStore

from dispatch_pipeline.defs.common import SITE_TAG, SITES_TAG

SITES_PARTITIONS_NAME = "sites"
# The first plannable day; a backfill can go back to it. Overridable for older history.
DEFAULT_START_DATE = "2024-01-01"
START_DATE = os.environ.get("DISPATCH_PARTITIONS_START", DEFAULT_START_DATE)
try:
    # Exactly YYYY-MM-DD: strptime alone takes 2024-1-1 too, which Dagster accepts but no ISO
    # reader of the date (the demo's, a backfill's) does.
    if dt.datetime.strptime(START_DATE, "%Y-%m-%d").date().isoformat() != START_DATE:
        raise ValueError(START_DATE)
except ValueError:
    raise ValueError(
        f"DISPATCH_PARTITIONS_START: expected a date YYYY-MM-DD such as {DEFAULT_START_DATE}, got {START_DATE!r}"
    ) from None

site_partitions = dg.DynamicPartitionsDefinition(name=SITES_PARTITIONS_NAME)
# 0 would end at yesterday (the last complete UTC day); 3 ends at the day after UTC tomorrow.
END_OFFSET = 3
date_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=END_OFFSET)
site_day_partitions = dg.MultiPartitionsDefinition({"site": site_partitions, "date": date_partitions})


class SiteDay(NamedTuple):
    """One partition: a site and its local calendar date."""

    site_id: str
    date: dt.date

    @property
    def key(self) -> str:
        """The partition key string Dagster uses ("date|site": dimensions sorted by name).

        The string of dg.MultiPartitionKey({"site": ..., "date": ...}), built directly: a backfill
        run asks for it ~10,000 times, and a MultiPartitionKey costs ten times more to make.
        """
        return f"{self.date.isoformat()}|{self.site_id}"

    def __str__(self) -> str:
        return f"site {self.site_id} on {self.date.isoformat()}"


def last_date_partition(now_utc: dt.datetime) -> dt.date:
    """The newest date partition at `now_utc` (the day after UTC tomorrow, with END_OFFSET = 3)."""
    return now_utc.astimezone(dt.UTC).date() + dt.timedelta(days=END_OFFSET - 1)


def parse_site_day(key: Any) -> SiteDay:
    """A partition key (MultiPartitionKey or its "date|site" string) as a SiteDay."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return SiteDay(dims["site"], dt.date.fromisoformat(dims["date"]))
    date, _, site_id = str(key).partition("|")
    if not site_id:
        raise ValueError(f"partition key {key!r} is not a 'date|site' key")
    return SiteDay(site_id, dt.date.fromisoformat(date))


def context_site_days(context: Any) -> list[SiteDay]:
    """Every partition the current step works on (one, or a whole backfill chunk)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        raise dg.Failure("dispatch assets are partitioned by site and date: run them for partitions")
    keys = context.partition_keys
    if not keys:
        # A range whose end comes before its start in the sites' order holds no partition.
        raise dg.Failure("the run's partition range holds no partition: is its start after its end?")
    return [parse_site_day(key) for key in keys]


def io_site_days(context: dg.InputContext | dg.OutputContext) -> list[SiteDay]:
    """The partitions an IO manager call covers."""
    return [parse_site_day(key) for key in context.asset_partition_keys]


# For asset descriptions: the UI shows the date dimension as UTC days, which it is not.
LOCAL_DATE_NOTE = (
    " Partitions are site x the site's own local date: 2025-03-11|KL_MALL is 11 March in Kuala Lumpur."
)


PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_partition_keys(
    tags: Mapping[str, str], instance: dg.DagsterInstance | DynamicPartitionsStore
) -> list[str]:
    """The partition keys a run covers, from its tags: one key, a key range (the product of the
    site and date ranges, in Dagster's order: dates, then sites in partition order), or none.

    For many runs pass `CachingDynamicPartitionsLoader(instance)`: each range reads the whole
    `sites` partition list, and a fleet's tick has hundreds of block runs.
    """
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG not in tags or RANGE_END_TAG not in tags:
        return []
    return list(site_day_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG]), dynamic_partitions_store=instance
    ))


def partition_range_tags(days: Sequence[SiteDay]) -> dict[str, str]:
    """Run tags selecting every site x date combination spanned by `days` (one run, many keys).

    A multi-partition key range is the product of per-dimension ranges, so callers should pass a
    rectangle: contiguous dates, and sites that are contiguous in the dynamic partition order.
    """
    first, last = days[0], days[-1]
    return {
        RANGE_START_TAG: first.key,
        RANGE_END_TAG: last.key,
    }


def block_run_request(
    block: Sequence[SiteDay],
    tags: Mapping[str, str],
    run_key_prefix: str = "",
    asset_selection: Sequence[dg.AssetKey] | None = None,
) -> dg.RunRequest:
    """One run for a block of site-days: one partition by its key, several by a key range (see
    partition_range_tags). A block of one site carries SITE_TAG, so that the queue's one run per
    site holds for it; a block of several sites says how many."""
    first, last = block[0], block[-1]
    sites = {day.site_id for day in block}
    tags = {**tags, **({SITE_TAG: first.site_id} if len(sites) == 1 else {SITES_TAG: str(len(sites))})}
    if len(block) == 1:
        return dg.RunRequest(
            run_key=f"{run_key_prefix}{first.key}", partition_key=first.key, tags=tags,
            asset_selection=asset_selection,
        )
    return dg.RunRequest(
        run_key=f"{run_key_prefix}{first.key}..{last.key}", tags={**tags, **partition_range_tags(block)},
        asset_selection=asset_selection,
    )
