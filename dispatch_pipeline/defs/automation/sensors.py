"""`site_partitions_sensor`: a site added to the `sites` table becomes a partition, no redeploy."""

from collections.abc import Iterable, Mapping

import dagster as dg

from dispatch_pipeline.defs.common import shorten
from dispatch_pipeline.defs.partitions import SITES_PARTITIONS_NAME, site_partitions
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import list_site_ids, stored_timezones_and_currencies


@dg.sensor(
    name="site_partitions_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Adds a `site` partition for every site in the `sites` table that has none. Sites are "
        "never removed here: their past runs stay browsable."
    ),
)
def site_partitions_sensor(context: dg.SensorEvaluationContext, storage: DispatchStorage):
    # Ids and stored timezones only: a site whose stored definition is invalid still gets its
    # partition, whose runs then fail naming the fault.
    engine = storage.engine()
    registered = set(list_site_ids(engine))
    known = set(context.instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))
    unknown = registered - known
    if not unknown:
        return dg.SkipReason(f"all {len(registered)} site(s) already have partitions")
    stored = stored_timezones_and_currencies(engine, sorted(unknown))
    new = in_neighbour_order(unknown, {site_id: timezone for site_id, (timezone, _) in stored.items()})
    context.log.info(f"adding {len(new)} site partition(s): {shorten(new, 20)}")
    # Dagster records a tick that requests no run as skipped, with Dagster's "Sensor function
    # returned an empty result" unless it is given a reason: the tick list says what it added.
    return dg.SensorResult(
        dynamic_partitions_requests=[site_partitions.build_add_request(new)],
        skip_reason=f"added {len(new)} site partition(s): {shorten(new, 20)}",
    )


def in_neighbour_order(site_ids: Iterable[str], timezone_of: Mapping[str, str]) -> list[str]:
    """New site partitions by timezone, then id. A day-ahead run takes a block of neighbouring
    partitions due at one tick, and the sites due together are those of one timezone: in id
    order alone, a fleet whose ids do not follow its timezones would get a run per site."""
    return sorted(site_ids, key=lambda site_id: (timezone_of.get(site_id, ""), site_id))


def sync_site_partitions(instance: dg.DagsterInstance, timezone_of: Mapping[str, str]) -> list[str]:
    """What the sensor does, immediately, for {site_id: timezone} (CLI, demo, tests): returns the
    partitions added."""
    known = set(instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))
    new = in_neighbour_order(set(timezone_of) - known, timezone_of)
    if new:
        instance.add_dynamic_partitions(SITES_PARTITIONS_NAME, new)
    return new
