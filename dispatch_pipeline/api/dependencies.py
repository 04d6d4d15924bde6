"""The database the app talks to, opened (and migrated) on first use rather than at import."""

from __future__ import annotations

import logging
import threading

from fastapi import Request
from sqlalchemy import Engine, text

from dispatch_pipeline.storage import database_url, open_database

# A database restart or failover takes seconds; clients that honour Retry-After back off that long
# instead of hammering a server that cannot answer yet.
DATABASE_RETRY_AFTER_SECONDS = 5

log = logging.getLogger(__name__)


class Database:
    """Opens lazily so the app starts, and /healthz answers 503, while the database is down."""

    def __init__(self, url: str | None = None):
        self.url = url or database_url()
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = open_database(self.url)
                engine = self._engine
        return engine

    def check(self) -> str | None:
        """None when a query goes through, else the kind of failure. /healthz answers without a
        token, so the driver's message (host, database and user names) goes to the log only."""
        try:
            with self.engine().connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not reachable" to a health check
            log.warning("health check: the database is unreachable: %s: %s", type(exc).__name__, exc)
            return f"{type(exc).__name__} (the server's log has the details)"
        return None


def get_database(request: Request) -> Database:
    return request.app.state.database
