"""`site_partitions_sensor`: a site added to the `sites` table becomes a partition, no redeploy."""

import dagster as dg

from dispatch_pipeline.defs.partitions import SITES_PARTITIONS_NAME, site_partitions
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.storage import list_site_ids


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
    # Ids only: a site whose stored definition is invalid still gets its partition, whose runs
    # then fail naming the fault.
    registered = set(list_site_ids(storage.engine()))
    known = set(context.instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))
    new = sorted(registered - known)
    if not new:
        return dg.SkipReason(f"all {len(registered)} site(s) already have partitions")
    context.log.info(f"adding site partitions: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[site_partitions.build_add_request(new)])


def sync_site_partitions(instance: dg.DagsterInstance, site_ids: list[str]) -> list[str]:
    """What the sensor does, immediately (CLI, demo, tests): returns the partitions added."""
    known = set(instance.get_dynamic_partitions(SITES_PARTITIONS_NAME))
    new = sorted(set(site_ids) - known)
    if new:
        instance.add_dynamic_partitions(SITES_PARTITIONS_NAME, new)
    return new
