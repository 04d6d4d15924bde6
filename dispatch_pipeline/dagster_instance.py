"""The Dagster instance's storage on PostgreSQL, with connections kept open.

dagster-postgres gives its engines no pool: storing an event opens new connections (two or more), so
that idle processes hold none. A backfill run stores thousands of events (five assets per
partition), and on PostgreSQL every connection is a new server process: those connections were
about two thirds of the server's CPU in a backfill. `PooledPostgresStorage` is dagster-postgres's
storage with each of its three engines keeping one connection open (the setting dagster-webserver
gives itself), in every process that loads the instance: run workers, daemon, code server.

Use it in `dagster.yaml` in place of `storage: postgres:`, with the same `postgres_db` settings:

    storage:
      custom:
        module: dispatch_pipeline.dagster_instance
        class: PooledPostgresStorage
        config:
          postgres_db: {...}

Each process then holds up to three connections (more only while several of its threads write at
once), so size PostgreSQL's `max_connections` for about 3 x (concurrent runs + 3).

It also decides how a run records the partitions it plans to materialise. Dagster records one
"planned" event per asset and partition when the run is created, which is how the UI marks the
partitions of a failed run as failed; a backfill run of 365 days stores 1,825 of them (about 2
CPU-s of Dagster's and 1 of PostgreSQL's per run). Runs of more than `planned_event_subsets_above`
partitions record one event per asset for all of them instead (their partitions then show as
missing, not failed, when the run fails: the run and the backfill show the failure); smaller runs,
every day-ahead run among them, keep Dagster's per-partition events.

And it stores a batch of materialisations (a step's partitions, as DAGSTER_EVENT_BATCH_SIZE
groups them) as one executemany insert, which SQLAlchemy compiles once per process, where
dagster-postgres builds one multi-row VALUES statement per batch and compiles it anew: about 40 ms
per batch of 365, 0.2 CPU-s per backfill run. Whether the asset event tags table exists, which
dagster-postgres asks the catalogue before every such batch, is asked once per process.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Connections beyond the kept one, while several threads of a process (the daemon's) write at once;
# closed again when returned. 20 is dagster-webserver's default for the same setting.
DEFAULT_MAX_OVERFLOW = 20
# Reopen a kept connection after this long, so a server-side idle timeout never finds it first.
DEFAULT_POOL_RECYCLE_S = 3600
# The largest run whose planned partitions are recorded one by one: a day-ahead run plans at most
# DISPATCH_DAY_AHEAD_SITES_PER_RUN (250) sites; a backfill run plans a site-year.
DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE = 250
# Batches that dagster-postgres writes with one multi-row insert: all materialisations, or all
# observations.
_ROW_BATCHED_EVENT_TYPES = ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION})
_INSERT_RETURNING_IDS = SqlEventLogStorageTable.insert().returning(
    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
)


# dagster-postgres disposes nothing, which costs nothing with its unpooled engines; with a kept
# connection each, every instance a code server builds for a sensor or schedule evaluation left its
# connections open until the garbage collector found them: about three more a minute, 58 at a time,
# on an idle stack. These storages close them when their instance is disposed.


class PooledPostgresRunStorage(PostgresRunStorage):
    # Dagster disposes an instance's run and event log storage, never its schedule storage: the
    # run storage closes that one's connection too.
    disposed_with: tuple[PostgresScheduleStorage, ...] = ()

    def dispose(self) -> None:
        super().dispose()
        for storage in (self, *self.disposed_with):
            storage._engine.dispose()


class PlannedSubsetsPostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres's event log, recording a large run's planned partitions per asset."""

    planned_event_subsets_above = DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE
    tables_seen: set[str]  # set by PooledPostgresStorage, which gives its event log this class

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        # Dagster then plans a run's partitions in one event per asset; store_event splits the
        # events of small runs back into one per partition.
        return True

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()

    def store_event(self, event: EventLogEntry) -> None:
        for each in _planned_per_partition(event, self.planned_event_subsets_above):
            super().store_event(each)

    def has_table(self, table_name: str) -> bool:
        # Asked before every batch of asset event tags is written, each time a catalogue query on
        # a connection of its own; a table the process has seen does not go away.
        if table_name not in self.tables_seen and super().has_table(table_name):
            self.tables_seen.add(table_name)
        return table_name in self.tables_seen

    def store_event_batch(self, events: list[EventLogEntry]) -> None:
        if not events or {event.get_dagster_event().event_type for event in events} not in _ROW_BATCHED_EVENT_TYPES:
            super().store_event_batch(events)
            return
        # dagster-postgres's batch write, the rows given as parameters of one cached statement.
        rows = [self._event_to_row(event) for event in events]
        with self._connect() as conn:
            event_ids = [row[0] for row in conn.execute(_INSERT_RETURNING_IDS, rows)]
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            # As dagster-postgres does: the asset's entry from the batch's last event.
            self._store_asset_event(conn, events[-1], event_ids[-1])


def _planned_per_partition(event: EventLogEntry, limit: int) -> list[EventLogEntry]:
    """A planned event of at most `limit` partitions as one event per partition, as Dagster itself
    records them; any other event unchanged."""
    dagster_event = event.dagster_event
    if dagster_event is None or dagster_event.event_type != DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
        return [event]
    planned = dagster_event.event_specific_data
    subset = getattr(planned, "partitions_subset", None)
    if subset is None or len(subset) > limit:
        return [event]
    return [
        event._replace(
            dagster_event=dagster_event._replace(
                event_specific_data=planned._replace(partition=key, partitions_subset=None)
            )
        )
        for key in sorted(subset.get_partition_keys())
    ]


class PooledPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres run, event log and schedule storage, each engine keeping a connection."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: Any = None,
        token_provider: Any = None,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        pool_recycle_s: int = DEFAULT_POOL_RECYCLE_S,
        planned_event_subsets_above: int = DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE,
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        # The same object under the subclass that only adds the planned-event behaviour above:
        # building a second event log storage would connect and check its tables again.
        self._event_log_storage.__class__ = PlannedSubsetsPostgresEventLogStorage
        self._run_storage.__class__ = PooledPostgresRunStorage
        self._run_storage.disposed_with = (self._schedule_storage,)
        self._event_log_storage.planned_event_subsets_above = planned_event_subsets_above
        self._event_log_storage.tables_seen = set()
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            # dagster-postgres's own switch to a pooled engine; statement_timeout 0 keeps the
            # server's default (no limit), as the unpooled engine has.
            storage.optimize_for_webserver(statement_timeout=0, pool_recycle=pool_recycle_s, max_overflow=max_overflow)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **DagsterPostgresStorage.config_type(),
            "max_overflow": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=DEFAULT_MAX_OVERFLOW,
                description="Connections per engine beyond the one kept open, while threads write at once.",
            ),
            "pool_recycle_s": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=DEFAULT_POOL_RECYCLE_S,
                description="Seconds after which a kept connection is replaced.",
            ),
            "planned_event_subsets_above": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE,
                description=(
                    "Runs of more partitions than this record one planned event per asset instead "
                    "of one per partition (their partitions are not marked failed when they fail)."
                ),
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            max_overflow=config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW),
            pool_recycle_s=config_value.get("pool_recycle_s", DEFAULT_POOL_RECYCLE_S),
            planned_event_subsets_above=config_value.get(
                "planned_event_subsets_above", DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE
            ),
        )
