"""POST /dispatch/run's work, in one synchronous call made from a worker thread: fill in the
registered site's values (site_requests), validate, solve (in a solver process), store in one
transaction; every failure as the HTTP error it is, a bad body as a 422 even while the database
is down."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError

from dispatch_pipeline.api.auth import Grant
from dispatch_pipeline.api.dependencies import Database
from dispatch_pipeline.api.errors import (
    DATABASE_FAILURES,
    ApiError,
    error_problems,
    field_problem,
    from_request_error,
    request_problems,
    unprocessable,
    validation_problems,
)
from dispatch_pipeline.core.request import DispatchRequest, RequestError, raw_array_length_problems
from dispatch_pipeline.core.result import DispatchResponse
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.core.solve import solve_problem
from dispatch_pipeline.core.tariffs import DEFAULT_CURRENCY
from dispatch_pipeline.site_requests import (
    complete_from_site,
    problems_whatever_the_site,
    registered_site,
    site_problem,
)
from dispatch_pipeline.storage import StorageInputError, StoredSiteInvalid, save_runs


def plan_and_store(database: Database, raw: dict[str, Any], access: Grant) -> DispatchResponse:
    """Solve the raw JSON request and store the run (source "api"); ApiError 422 for bad input,
    with nothing written. Its messages name only the sites `access` allows.

    While the database is down, input no stored site could make valid is still refused with a
    422 naming what is wrong: a 503 would have the client retry its own mistake.
    """
    # One clock reading: a request without `date` near local midnight must take its stored PV
    # from the day it plans, and be judged on that day with or without its site.
    now = clock()
    try:
        engine = database.engine()
        registered = registered_site(engine, raw, may_name=access.allows)
    except DATABASE_FAILURES:
        # Judged only now, so that with the database up every problem, the site's included, is
        # named in one answer.
        found = problems_whatever_the_site(raw, now)
        if problems := error_problems(found.field_errors) + request_problems(RequestError(found.day_problems)):
            raise unprocessable(problems) from None
        raise
    except StoredSiteInvalid as exc:
        # The operator's data, not the caller's request: a server error, with its reason.
        raise ApiError(500, f"cannot plan: {exc}") from None
    except RequestError as exc:
        raise from_request_error(exc) from None
    site = registered.site if registered is not None else None
    request = validate(raw, site, now)
    try:
        problem, issues = site_problem(engine, request, registered, now)
    except RequestError as exc:
        raise from_request_error(exc) from None
    result = solve_problem(problem, currency=site.currency if site else DEFAULT_CURRENCY, issues=issues)
    try:
        save_runs(engine, [result], source="api")
    except StorageInputError as exc:
        # Finite inputs of absurd size can overflow the plan's sums; refuse rather than store inf.
        raise unprocessable([field_problem([], f"the inputs give a plan that cannot be stored: {exc}")]) from None
    return result.response()


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def validate(raw: dict[str, Any], site: Site | None, now: dt.datetime) -> DispatchRequest:
    """The request completed from its registered site, or a 422 naming every bad field (and
    whose value it is), and every array whose length is not the local day's when that day can
    be told."""
    completed = complete_from_site(raw, site, now) if site else None
    data = completed.data if completed else raw
    try:
        return DispatchRequest.model_validate(data)
    except ValidationError as exc:
        lengths = RequestError(raw_array_length_problems(data, today=now))
        problems = validation_problems(exc) + request_problems(lengths)
        if completed:
            for problem in problems:
                problem["msg"] = completed.noted(".".join(str(part) for part in problem["loc"][1:]), problem["msg"])
        raise unprocessable(problems) from None


