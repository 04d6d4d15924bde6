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
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Connections beyond the kept one, while several threads of a process (the daemon's) write at once;
# closed again when returned. 20 is dagster-webserver's default for the same setting.
DEFAULT_MAX_OVERFLOW = 20
# Reopen a kept connection after this long, so a server-side idle timeout never finds it first.
DEFAULT_POOL_RECYCLE_S = 3600


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
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
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
        )
