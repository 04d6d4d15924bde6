"""POST /dispatch/run's work, in one synchronous call made from a worker thread: fill in the
registered site's values (site_requests), validate, solve (in a solver process), store in one
transaction; every failure as the HTTP error it is, a bad body as a 422 even while the database
is down. With an `Idempotency-Key`, a request sent again answers with the run its key stored
(api/idempotency.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from dispatch_pipeline.api.auth import Grant, ensure_site_allowed
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
from dispatch_pipeline.api.idempotency import request_key, reused
from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.request import DispatchRequest, RequestError, raw_array_length_problems
from dispatch_pipeline.core.result import DispatchResponse, InputIssues
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.core.solve import solve_problem
from dispatch_pipeline.core.tariffs import DEFAULT_CURRENCY
from dispatch_pipeline.site_requests import (
    complete_from_site,
    problems_whatever_the_site,
    registered_site,
    site_problem,
)
from dispatch_pipeline.storage import (
    IdempotencyKey,
    KeyedRun,
    StorageInputError,
    StoredSiteInvalid,
    get_run,
    keyed_run,
    save_keyed_run,
    save_runs,
)


@dataclass(frozen=True)
class Planned:
    """POST /dispatch/run's answer; `replayed` when it is the run an earlier request with the same
    idempotency key stored, nothing planned now."""

    response: DispatchResponse
    replayed: bool = False


def plan_and_store(database: Database, raw: dict[str, Any], access: Grant,
                   idempotency_key: str | None = None) -> Planned:
    """Solve the raw JSON request and store the run (source "api"); ApiError 422 for bad input,
    with nothing written. Its messages name only the sites `access` allows.

    With `idempotency_key`: a run the caller stored under the key with this same request is the
    answer, read back, nothing solved; one stored with another request makes a 422 (naming this
    request's own problems too); with none stored, the new run is stored with the key.

    While the database is down, input no stored site could make valid is still refused with a
    422 naming what is wrong: a 503 would have the client retry its own mistake.
    """
    # One clock reading: a request without `date` near local midnight must take its stored PV
    # from the day it plans, and be judged on that day with or without its site.
    now = clock()
    key = None if idempotency_key is None else request_key(idempotency_key, access, raw)
    try:
        engine = database.engine()
        stored = None if key is None else keyed_run(engine, key.scope, key.key)
    except DATABASE_FAILURES:
        refuse_whatever_the_site(raw, now)
        raise
    # `stored` only with a key. Another request under it is judged first: its 422 names the body's
    # problems too.
    if stored is not None and stored.fingerprint == key.fingerprint:
        return replay(engine, key, stored, access)
    try:
        site, problem, issues = judge(engine, raw, access, now)
    except ApiError as exc:
        if stored is None or exc.status_code != 422:
            raise
        raise reused(key, stored, exc) from None
    if stored is not None:
        raise reused(key, stored)
    result = solve_problem(problem, currency=site.currency if site else DEFAULT_CURRENCY, issues=issues)
    try:
        if key is None:
            save_runs(engine, [result], source="api")
        else:
            stored, saved = save_keyed_run(engine, result, key, source="api")
            if not saved:
                # Sent again while this one was solving, and stored first: one run per key.
                return replay(engine, key, stored, access)
    except StorageInputError as exc:
        # Finite inputs of absurd size can overflow the plan's sums; refuse rather than store inf.
        raise unprocessable([field_problem([], f"the inputs give a plan that cannot be stored: {exc}")]) from None
    return Planned(result.response())


def judge(engine: Engine, raw: dict[str, Any], access: Grant,
          now: dt.datetime) -> tuple[Site | None, DispatchProblem, InputIssues]:
    """The problem to solve for the raw request, completed from its registered site; an ApiError
    (a 422 naming every bad field) when there is none."""
    try:
        registered = registered_site(engine, raw, may_name=access.allows)
    except DATABASE_FAILURES:
        refuse_whatever_the_site(raw, now)
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
    return site, problem, issues


def refuse_whatever_the_site(raw: dict[str, Any], now: dt.datetime) -> None:
    """The 422 of what is wrong with the request whatever its site stores, if anything is: the
    database is down. Judged only then, so that with the database up every problem, the site's
    included, is named in one answer."""
    found = problems_whatever_the_site(raw, now)
    if problems := error_problems(found.field_errors) + request_problems(RequestError(found.day_problems)):
        raise unprocessable(problems) from None


def replay(engine: Engine, key: IdempotencyKey, stored: KeyedRun, access: Grant) -> Planned:
    """The answer the run stored under `key` was given, read back; a 422 when `key` came with
    another request then."""
    if stored.fingerprint != key.fingerprint:
        raise reused(key, stored)
    # The caller's own run, of the site its request names; unless its token lost the site since.
    ensure_site_allowed(access, stored.site_id)
    run = get_run(engine, stored.run_id)
    if run is None:
        # Deleted by hand between the two reads, and its key with it: sent again, it is planned.
        raise ApiError(500, f"the run {stored.run_id} stored under this Idempotency-Key was deleted "
                            "while it was read; send the request again")
    return Planned(run.to_result().response(), replayed=True)


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


