"""`create_app()`: the FastAPI application of the dispatch API (served by `dispatch-pipeline serve`)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from sqlalchemy.exc import ProgrammingError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatch_pipeline.api import auth
from dispatch_pipeline.api.dependencies import DATABASE_RETRY_AFTER_SECONDS, Database
from dispatch_pipeline.api.errors import (
    DATABASE_FAILURES,
    ApiError,
    error_response,
    handle_api_error,
    handle_http_exception,
    handle_validation_error,
)
from dispatch_pipeline.api.head import HeadAsGet
from dispatch_pipeline.api.limits import MAX_BODY_BYTES, BodySizeLimit
from dispatch_pipeline.api.routes import router
from dispatch_pipeline.api.schemas import request_component_schemas
from dispatch_pipeline.core.runner import default_runner
from dispatch_pipeline.storage import IncompleteStoredRun

log = logging.getLogger(__name__)

# Requests being planned per solver process: enough to keep each busy while the next request's
# site lookup and the last one's database write run in their own threads.
SOLVES_IN_THREADS_PER_SOLVER = 3

DESCRIPTION = f"""
Day-ahead battery dispatch for PV + battery sites, per the dispatch contract.

**Authentication.** When the server sets `{auth.TOKENS_ENV}`, every endpoint but `/healthz`,
`/docs`, `/redoc` and `/openapi.json` needs `Authorization: Bearer <token>`. The variable holds comma-separated entries `TOKEN` (all
sites) or `TOKEN:SITE1|SITE2` (only those sites). Missing or unknown token: 401; a token not
allowed on the request's site: 403.

**Retries.** `POST /dispatch/run` takes an optional `Idempotency-Key` header (1 to 255 printable
ASCII characters). The same key sent again with the same body is answered with the run it stored,
and `Idempotent-Replayed: true`, without planning again; with another body it is a 422. Keys are
the caller's own (its token's), last as long as their run (no expiry), and a refused request
stores none.

**Limits.** Bodies over {MAX_BODY_BYTES} bytes: 413. Arrays over 2016 values: 422.

**Errors.** Input invalid whatever a registered site stores is a 422 even while the database is
down; a request the database is needed for then answers 503 with `Retry-After`. Every GET endpoint
answers HEAD with the GET's status and headers and no body; a 405's `Allow` names the methods the
endpoint takes.
"""


def create_app(database_url: str | None = None) -> FastAPI:
    """The API on `database_url` (default: `DATABASE_URL`, else SQLite under DAGSTER_HOME).

    The database is opened and migrated, and the solver processes started, at start-up; a
    database that is down then is retried on each request (and /healthz says 503).
    """
    database = Database(database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        error = await run_in_threadpool(database.check)
        if error:
            log.error("database not reachable at start-up (%s); retrying on each request", error)
        # The first request must not pay for starting the solver processes (seconds).
        await run_in_threadpool(default_runner().warm)
        yield

    app = FastAPI(
        title="dispatch-pipeline API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.database = database
    app.state.solve_slots = anyio.CapacityLimiter(SOLVES_IN_THREADS_PER_SOLVER * default_runner().size)
    app.state.tokens = auth.load_token_table(os.environ.get(auth.TOKENS_ENV))
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    # Added last, so outermost: a 413 answered to a HEAD loses its content too.
    app.add_middleware(HeadAsGet)
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    for database_failure in DATABASE_FAILURES:
        app.add_exception_handler(database_failure, _database_unavailable)
    app.add_exception_handler(ProgrammingError, _programming_error)
    app.add_exception_handler(IncompleteStoredRun, _incomplete_stored_run)
    # Last: whatever else fails still answers in the one error shape, not as plain text.
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: _openapi(app)
    return app


async def _database_unavailable(_request: Any, exc: Exception) -> Any:
    log.error("database failure: %s", exc)
    return error_response(503, "database unavailable; try again later",
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


async def _programming_error(request: Any, exc: ProgrammingError) -> Any:
    if exc.statement is None:  # refused on connecting: the URL's options, not a statement
        return await _database_unavailable(request, exc)
    log.error("database statement failed", exc_info=exc)
    return error_response(500, "internal error: a database statement failed")


async def _incomplete_stored_run(_request: Any, exc: IncompleteStoredRun) -> Any:
    log.error("%s", exc)
    return error_response(500, f"internal error: {exc}")


async def _internal_error(request: Any, exc: Exception) -> Any:
    # One line: Starlette raises the exception again once the answer is sent, and the server
    # logs its traceback then.
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(500, "internal error; the server's log has the details")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the hand-parsed POST body's model (see routes.run_dispatch)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, component in request_component_schemas().items():
            components.setdefault(name, component)
        app.openapi_schema = schema
    return app.openapi_schema
