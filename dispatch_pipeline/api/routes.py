"""The HTTP endpoints. Blocking work (database, solver) runs in worker threads so the event
loop keeps serving; answers are serialised straight from the pydantic models."""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
import uuid
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, TypeAdapter, ValidationError

from dispatch_pipeline.api.auth import Grant, ensure_site_allowed, require_access
from dispatch_pipeline.api.dependencies import DATABASE_RETRY_AFTER_SECONDS, Database, get_database
from dispatch_pipeline.api.errors import (
    ApiError,
    echo,
    error_problems,
    field_problem,
    unprocessable,
)
from dispatch_pipeline.api.idempotency import (
    REPLAYED_HEADER,
    REPLAYED_RESPONSE_HEADER,
    openapi_parameters,
    read_key,
)
from dispatch_pipeline.api.limits import MAX_INTERVALS, oversized_arrays
from dispatch_pipeline.api.planning import plan_and_store
from dispatch_pipeline.api.schemas import (
    ERROR_RESPONSES,
    RUN_LIST_DEFAULT_LIMIT,
    RUN_LIST_MAX_LIMIT,
    DatabaseHealth,
    DispatchResponse,
    ErrorResponse,
    HealthResponse,
    LatestSchedule,
    RunDetail,
    RunList,
    RunSummary,
    SolverHealth,
    request_body_openapi,
)
from dispatch_pipeline.api.strictness import query_parameters, require_json_body
from dispatch_pipeline.core.calendar import FIRST_DATE, LAST_DATE
from dispatch_pipeline.core.documents import DocumentError, decode_utf8, json_type_name, parse_json
from dispatch_pipeline.core.request import (
    SITE_ID_PATTERN,
    is_site_id,
    parse_calendar_date,
    site_id_problem,
)
from dispatch_pipeline.storage import (
    IncompleteStoredRun,
    ListedRun,
    StoredRun,
    UnlistedRun,
    get_run,
    latest_run,
    list_runs_with_cost,
    registered_spelling,
)

router = APIRouter()
Access = Annotated[Grant, Depends(require_access)]
DatabaseDep = Annotated[Database, Depends(get_database)]
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such run."}}


def json_response(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json", headers=headers)


@router.post(
    "/dispatch/run",
    response_model=DispatchResponse,
    responses={
        200: {"headers": REPLAYED_RESPONSE_HEADER},
        **ERROR_RESPONSES,
        415: {"model": ErrorResponse, "description": "Body not sent as application/json."},
    },
    openapi_extra={**request_body_openapi(), **openapi_parameters()},
    dependencies=[query_parameters()],
    summary="Plan one site-day and store the run",
    tags=["dispatch"],
)
async def run_dispatch(request: Request, access: Access, database: DatabaseDep) -> Response:
    require_json_body(request)
    idempotency_key = read_key(request)
    raw = parse_json_object(await request.body())
    too_long = oversized_arrays(raw)
    if too_long:
        raise unprocessable([
            field_problem(loc, f"has {length} values; at most {MAX_INTERVALS} intervals are accepted")
            for loc, length in too_long
        ])
    site_id = raw.get("site_id")
    # A site_id no site can have is the caller's mistake (422, from validation), not one this
    # token may not touch.
    if is_site_id(site_id):
        ensure_site_allowed(access, site_id)
    # A solve holds its thread while waiting for a solver process: bound how many do, so that
    # a burst of POSTs queues here and cannot take every thread from the reads and /healthz.
    # A request sent again with its Idempotency-Key is answered from storage in the same thread.
    planned = await anyio.to_thread.run_sync(
        lambda: plan_and_store(database, raw, access, idempotency_key), limiter=request.app.state.solve_slots
    )
    return json_response(planned.response, headers={REPLAYED_HEADER: "true"} if planned.replayed else None)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        # UTF-8 only (RFC 8259; a leading BOM is allowed, as for files): json.loads would also
        # guess UTF-16 or UTF-32 from the bytes.
        text = decode_utf8(body)
    except DocumentError as exc:
        raise unprocessable([field_problem([], f"body is {exc}", kind="json_invalid")]) from None
    try:
        data = parse_json(text, "body")
    except DocumentError as exc:
        raise unprocessable([field_problem([], str(exc), kind="json_invalid")]) from None
    if not isinstance(data, dict):
        raise unprocessable([field_problem([], f"must be a JSON object (got {json_type_name(data)})",
                                           kind="model_type")])
    return data


def _site_id(value: str) -> str:
    wrong = site_id_problem(value)
    if wrong:
        raise ValueError(wrong)
    return value


SiteIdQuery = Annotated[str, Query(pattern=SITE_ID_PATTERN, examples=["DEMO"]), AfterValidator(_site_id)]
# A string, then a date (_calendar_date): pydantic would read "0" as a Unix timestamp
# (1970-01-01), a guess, and a pattern's own message shows a regular expression, not the format.
DateQuery = Annotated[
    str | None,
    Query(
        description=(
            "The site's local day, YYYY-MM-DD. Without it, the most recently created run of any "
            "day: after a backfill or a what-if request that may not be tomorrow's plan, so a "
            "controller fetching the plan it will execute should name the day."
        ),
        examples=["2024-03-15"],
    ),
]


@router.get(
    "/dispatch/latest",
    response_model=LatestSchedule,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "No run for the site (and date)."}},
    summary="The most recent plan of a site (and local date)",
    dependencies=[query_parameters("site_id", "date")],
    tags=["dispatch"],
)
async def get_latest(site_id: SiteIdQuery, access: Access, database: DatabaseDep,
                     date: DateQuery = None) -> Response:
    ensure_site_allowed(access, site_id)
    day = _calendar_date(date)
    stored, planned_day, registered = await run_in_threadpool(_latest, database, site_id, day)
    if stored is None:
        on_date = f" on {day.isoformat()}" if day else ""
        # A mistyped site_id should not look like a day not planned yet, nor a site registered
        # and not planned yet (its first day-ahead tick still to come) like a mistyped one.
        if registered not in (None, site_id) and access.allows(registered):
            hint = f" (the registered site {registered!r} differs from it only in case)"
        elif planned_day is None:  # no run on any day
            hint = (" (the site is registered, and none of its days is planned yet)" if registered == site_id
                    else " (it has none on any day: is the site_id right?)" if day
                    else " (nor is a site of that id registered: is the site_id right?)")
        else:
            hint = f" (its most recently stored plan is of {planned_day.isoformat()})"
        raise ApiError(404, f"no dispatch run stored for site {site_id!r}{on_date}{hint}")
    run = stored.run
    return json_response(LatestSchedule(
        site_id=run.site_id, date=run.date, timezone=run.timezone, run_id=run.run_id,
        created_at=run.created_at, status=run.status, solver=run.solver,
        resolution_minutes=run.resolution_minutes, forecast_issued_at=run.forecast_issued_at,
        prices_issued_at=run.prices_issued_at, points=stored.points,
    ))


def _calendar_date(text: str | None) -> dt.date | None:
    return None if text is None else _query_date(text)


def _query_date(text: str) -> dt.date:
    """The query's `date`, or a 422 naming it."""
    try:
        date = parse_calendar_date(text)
    except ValueError as exc:
        problem = field_problem(["date"], str(exc), text)
    else:
        if FIRST_DATE <= date <= LAST_DATE:
            return date
        # As POST /dispatch/run says of it: no day out there can have a plan.
        problem = field_problem(["date"], f"outside the supported range {FIRST_DATE} to {LAST_DATE}", text)
    problem["loc"] = ["query", "date"]
    raise unprocessable([problem])


def _latest(
    database: Database, site_id: str, date: dt.date | None
) -> tuple[StoredRun | None, dt.date | None, str | None]:
    """The latest run (of the date); when the date has none, the day of the site's most recently
    stored run, if any; and, when the site has none, the registered site `site_id` names: itself,
    or one whose id differs from it only in case."""
    engine = database.engine()
    stored = latest_run(engine, site_id, date)
    if stored is not None:
        return stored, stored.run.date, None
    latest = None if date is None else latest_run(engine, site_id, None)
    if latest is not None:
        return None, latest.run.date, None
    return None, None, registered_spelling(engine, site_id)


DayQuery = Annotated[str, Query(description="The site's local day, YYYY-MM-DD.", examples=["2024-03-15"])]


def _limit(value: Any) -> Any:
    """A count of runs as its client wrote it: digits only, in range. pydantic alone would take
    "1.0", "+5", "1_0" or " 5" too, guesses at what was meant."""
    if not isinstance(value, str):
        return value
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"must be a whole number from 1 to {RUN_LIST_MAX_LIMIT}")
    # Leading zeros do not count: "0001000" is 1000, as "01" is 1. Length first: int() of
    # thousands of digits is slow, and refused past 4300.
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(RUN_LIST_MAX_LIMIT)) or not 1 <= int(digits) <= RUN_LIST_MAX_LIMIT:
        raise ValueError(f"must be from 1 to {RUN_LIST_MAX_LIMIT}")
    return int(digits)


LimitQuery = Annotated[
    int,
    Query(
        ge=1, le=RUN_LIST_MAX_LIMIT,
        description=f"At most this many runs, the newest (1 to {RUN_LIST_MAX_LIMIT}); `more` says whether there are others.",
    ),
    BeforeValidator(_limit),
]
# A string, then a UUID (_query_run_id): parsed after the token's site is checked, as `date` is,
# so that a token limited to other sites hears 403 whatever it sent.
BeforeQuery = Annotated[
    str | None,
    Query(
        description=(
            "A `run_id` of this site-day, as the last page's `next_before` gives: only the runs after "
            "it (older, or as old with a lower `run_id`). A run of another site or day, or none, is a 422."
        ),
        json_schema_extra={"anyOf": [{"type": "string", "format": "uuid"}, {"type": "null"}]},
    ),
]


@router.get(
    "/dispatch/runs",
    response_model=RunList,
    responses=ERROR_RESPONSES,
    summary="Every stored run of a site's local date, newest first",
    description=(
        "A summary of each run (no points: `GET /dispatch/runs/{run_id}` has them), such as the "
        "plans of two strategies backfilled for the same day, re-plans, and runs stored through "
        "the API or the CLI. A day without runs is an empty list (200), whether or not the site is "
        "known: `GET /dispatch/latest` says which it is. Paged: while `more` is true, the same query "
        "with `before` set to the answer's `next_before` gives the next `limit` runs."
    ),
    dependencies=[query_parameters("site_id", "date", "limit", "before")],
    tags=["dispatch"],
)
async def list_day_runs(site_id: SiteIdQuery, date: DayQuery, access: Access, database: DatabaseDep,
                        limit: LimitQuery = RUN_LIST_DEFAULT_LIMIT, before: BeforeQuery = None) -> Response:
    ensure_site_allowed(access, site_id)
    day = _query_date(date)
    after = _query_run_id(before)
    try:
        # One more than asked: whether there are more is then known without counting them.
        listed = await run_in_threadpool(
            lambda: list_runs_with_cost(database.engine(), site_id, day, limit=limit + 1, before=after)
        )
    except UnlistedRun as exc:
        raise _unlisted(exc, access, before, site_id, day) from None
    page = listed[:limit]
    more = len(listed) > limit
    return json_response(RunList(
        site_id=site_id, date=day, runs=[_summary(entry) for entry in page], more=more,
        next_before=page[-1].run.run_id if more else None,
    ))


_RUN_ID = TypeAdapter(uuid.UUID)


def _query_run_id(text: str | None) -> uuid.UUID | None:
    """The query's `before`, or a 422 naming it as FastAPI's own for a malformed run_id."""
    if text is None:
        return None
    try:
        return _RUN_ID.validate_python(text)
    except ValidationError as exc:
        raise unprocessable(error_problems(exc.errors(), ("query", "before"))) from None


def _unlisted(exc: UnlistedRun, access: Grant, given: str | None, site_id: str, day: dt.date) -> ApiError:
    """The 422 of a `before` that is no run of the listed site-day. A run of a site the token may
    not access is no stored run to it, as GET /dispatch/runs/{run_id} answers 404 for it."""
    if exc.found is not None and access.allows(exc.found[0]):
        why = f"it is a run of site {exc.found[0]!r} on {exc.found[1].isoformat()}"
    else:
        why = "no stored run has this id"
    return unprocessable([{
        "loc": ["query", "before"],
        "msg": f"must be a run of site {site_id!r} on {day.isoformat()}, as next_before names; {why}",
        "type": "value_error",
        "input": echo(given),
    }])


def _summary(entry: ListedRun) -> RunSummary:
    run = entry.run
    return RunSummary(
        run_id=run.run_id, created_at=run.created_at, source=run.source, status=run.status, solver=run.solver,
        milp_solver=run.milp_solver, fallback_reason=run.fallback_reason, objective_value=run.objective_value,
        total_cost=entry.total_cost, forecast_issued_at=run.forecast_issued_at,
        prices_issued_at=run.prices_issued_at,
    )


@router.get(
    "/dispatch/runs/{run_id}",
    response_model=RunDetail,
    # No 403: another site's run is not found, so a restricted token learns nothing of it.
    responses={**{code: answer for code, answer in ERROR_RESPONSES.items() if code != 403}, **NOT_FOUND},
    summary="One stored run with its KPIs and points",
    dependencies=[query_parameters()],
    tags=["dispatch"],
)
async def get_run_detail(run_id: Annotated[uuid.UUID, Path()], access: Access,
                         database: DatabaseDep) -> Response:
    not_found = ApiError(404, f"no dispatch run with id {str(run_id)!r}")
    try:
        stored = await run_in_threadpool(lambda: get_run(database.engine(), run_id))
    except IncompleteStoredRun as exc:
        # Nor may a damaged run of another site be heard of.
        if not access.allows(exc.site_id):
            raise not_found from None
        raise
    # Another site's run is "not found" too: a 403 would tell a restricted token that it exists.
    if stored is None or not access.allows(stored.run.site_id):
        raise not_found
    run = stored.run
    return json_response(RunDetail(
        **run.model_dump(exclude={"dagster_run_id"}),
        fallback_used=run.status == "fallback",
        kpis=stored.kpis,
        points=stored.points,
    ))


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Database unreachable or no solver."}},
    summary="Database reachable and MILP solver present (no token needed)",
    tags=["health"],
)
async def healthz(database: DatabaseDep) -> Response:
    answer = await _health(database)
    return json_response(answer, _health_status(answer), headers=_health_headers(answer))


async def _health(database) -> HealthResponse:
    error = await run_in_threadpool(database.check)
    solvers = SolverHealth(highs=_highspy_present(), cbc=shutil.which("cbc") is not None)
    healthy = error is None and solvers.highs
    return HealthResponse(
        status="ok" if healthy else "unavailable",
        database=DatabaseHealth(ok=error is None, error=error),
        solvers=solvers,
    )


def _health_status(answer: HealthResponse) -> int:
    return 200 if answer.status == "ok" else 503


def _health_headers(answer: HealthResponse) -> dict[str, str] | None:
    # As every endpoint answers while the database is down; a missing solver does not come back by waiting.
    return None if answer.database.ok else {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}


def _highspy_present() -> bool:
    # find_spec, not import: the solver runs in the worker processes, not in this one.
    return importlib.util.find_spec("highspy") is not None
