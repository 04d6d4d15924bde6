"""A request for a registered site, completed from storage: the site's timezone, battery, limits,
weights and demand charge (of the tariff in force on the request's local day) where the request
leaves them out, and its stored PV forecast when it sends none.

The REST API and `dispatch-pipeline solve --store` plan the same request the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Engine

from dispatch_pipeline.core.calendar import (
    PIPELINE_RESOLUTION_MINUTES,
    LocalDay,
    local_day,
    next_local_date,
)
from dispatch_pipeline.core.problem import DispatchProblem, build_problem, request_day
from dispatch_pipeline.core.request import (
    RESOLUTIONS_MINUTES,
    DispatchRequest,
    RequestError,
    array_length_problems,
    is_site_id,
    parse_calendar_date,
    raw_array_length_problems,
)
from dispatch_pipeline.core.result import InputIssues
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.storage import (
    RegisteredSite,
    get_registered_site,
    load_forecast,
    registered_case_variant,
)
from dispatch_pipeline.storage.forecasts import latest_issue, latest_write

# Request fields a registered site supplies when the request leaves them out; an object given
# for one of them patches the site's value field by field.
SITE_SUPPLIED_OBJECTS = ("bess", "limits", "weights")


def registered_site(
    engine: Engine, raw: Any, *, may_name: Callable[[str], bool] = lambda _: True
) -> RegisteredSite | None:
    """The stored site the raw request names, if any, with its registration's `updated_at`
    (StoredSiteInvalid if it is stored broken).

    A site_id that breaks its pattern names no site: validation reports it with the rest. One
    differing only in case from a registered site's is a RequestError: planned as a site of its
    own, with the contract's default battery, it would be a typo's plan stored under an id no
    site can ever be registered under. The error names that site only where `may_name` says the
    caller may know of it.
    """
    site_id = raw.get("site_id") if isinstance(raw, dict) else None
    if not is_site_id(site_id):
        return None
    found = get_registered_site(engine, site_id)
    if found is None and (registered := registered_case_variant(engine, site_id)):
        which = f"the registered site {registered!r}" if may_name(registered) else "a registered site"
        raise RequestError([
            f"site_id: differs only in case from {which} (got {site_id!r}); site ids are compared exactly"
        ])
    return found


@dataclass(frozen=True)
class CompletedRequest:
    """A raw request completed from its registered site, and the fields ("bess.soc_max") the
    site supplied."""

    data: dict[str, Any]
    site: Site
    supplied: frozenset[str]

    def noted(self, field: str, message: str) -> str:
        """`message` about `field`, saying which of the values it involves are the site's.

        A rule broken between a field the caller sent and one the site supplied is reported at
        either, so the message must say whose value is whose.
        """
        theirs = [name for name in (field, *COMPARED_WITH.get(field, ())) if name in self.supplied]
        if not theirs:
            return message
        return f"{message} (stored for site {self.site.site_id!r}, as the request left it out: {', '.join(theirs)})"


# The fields a rule at a field compares it with (core/request.py's cross-field checks). A rule
# added there must be listed here: a request is judged before its site is read too
# (problems_whatever_the_site), and a rule involving a field the site fills can only be judged
# with the site's value.
COMPARED_WITH = {
    "bess.soc_max": ("bess.soc_min",),
    "bess.soc_final_min": ("bess.soc_min", "bess.soc_max"),
}


def site_fills(raw: dict[str, Any], field: str) -> bool:
    """Whether a registered site's stored value stands in for `field` ("timezone", "bess.soc_max")
    of `raw` (complete_from_site): the request leaves it out, and a site has one for it.

    Decided on the raw keys, not the parsed model: the model fills contract defaults, which would
    hide what the caller actually sent.
    """
    name, _, member = field.partition(".")
    if field == "timezone":
        return raw.get("timezone") is None
    if name in SITE_SUPPLIED_OBJECTS and member and "." not in member:
        sent = raw.get(name, {})
        # Anything but an object is left for validation to reject with the caller's own value.
        return isinstance(sent, dict) and member not in sent
    if field == "tariff.demand_charge_per_kw":
        # The prices are the request's own; the peak it pays for is the site's.
        tariff = raw.get("tariff")
        return isinstance(tariff, dict) and "demand_charge_per_kw" not in tariff
    return False


@dataclass(frozen=True)
class ProblemsWhateverTheSite:
    """What is wrong with a raw request whatever a registered site stores (problems_whatever_the_site):
    the contract's field errors, for each caller to word its own way, and core's messages on the
    local day and the arrays' lengths."""

    field_errors: list[ErrorDetails]
    day_problems: list[str]


def problems_whatever_the_site(raw: dict[str, Any], today: dt.datetime) -> ProblemsWhateverTheSite:
    """The problems of `raw` that no registered site's stored values could cure, found without
    reading the site: before the database is opened, or while it is down.

    A problem is left for the judgement with the site when it is at a field the request leaves to
    its site (site_fills), or when its rule compares the field with one: judged against the
    contract's default instead, a valid request could be refused. The arrays' lengths are judged
    when the local day is the request's own (its timezone given, or no site can supply one).
    """
    site_may_fill = is_site_id(raw.get("site_id"))  # an id outside the pattern names no site
    day_is_known = not site_may_fill or not site_fills(raw, "timezone")
    try:
        request = DispatchRequest.model_validate(raw)
    except ValidationError as exc:
        field_errors = [
            error for error in exc.errors()
            if not (site_may_fill and _site_may_cure(raw, ".".join(str(part) for part in error["loc"])))
        ]
        lengths = raw_array_length_problems(raw, today=today) if day_is_known else []
        return ProblemsWhateverTheSite(field_errors, lengths)
    if not day_is_known:
        return ProblemsWhateverTheSite([], [])
    try:
        day = request_day(request, today=today)
    except RequestError as exc:
        return ProblemsWhateverTheSite([], exc.problems)
    arrays = {"load_kw": request.load_kw, "tariff.buy": request.tariff.buy, "tariff.sell": request.tariff.sell}
    if request.pv_kw is not None:  # else the site's stored forecast, of the day's length
        arrays["pv_kw"] = request.pv_kw
    return ProblemsWhateverTheSite([], array_length_problems(arrays, day))


def _site_may_cure(raw: dict[str, Any], field: str) -> bool:
    return any(site_fills(raw, name) for name in (field, *COMPARED_WITH.get(field, ())))


def complete_from_site(raw: dict[str, Any], site: Site, now: dt.datetime) -> CompletedRequest:
    """The request with the site's stored values where the raw JSON leaves them out (site_fills).

    The demand charge is that of the tariff in force on the request's local day (its `date`, else
    the site's tomorrow at `now`); a `date` that is no calendar date leaves it out, as the request
    is refused at `date` whatever it is.
    """
    merged = dict(raw)
    supplied: set[str] = set()
    if site_fills(raw, "timezone"):
        merged["timezone"] = site.timezone
        supplied.add("timezone")
    for name in SITE_SUPPLIED_OBJECTS:
        filled = {
            member: value for member, value in getattr(site, name).model_dump().items()
            if site_fills(raw, f"{name}.{member}")
        }
        if filled:
            merged[name] = {**raw.get(name, {}), **filled}
            supplied |= {f"{name}.{member}" for member in filled}
    date = _requested_date(raw, site, now)
    if site_fills(raw, "tariff.demand_charge_per_kw") and date is not None:
        merged["tariff"] = {**raw["tariff"], "demand_charge_per_kw": site.tariff_on(date).demand_charge_per_kw}
        supplied.add("tariff.demand_charge_per_kw")
    return CompletedRequest(merged, site, frozenset(supplied))


def _requested_date(raw: dict[str, Any], site: Site, now: dt.datetime) -> dt.date | None:
    """The local date `raw` plans, read as the contract reads it; None when it is none.

    In the site's timezone: a request in another is refused (site_problem).
    """
    date = raw.get("date")
    if date is None:
        return next_local_date(site.timezone, now)
    if type(date) is dt.date:
        return date
    try:
        return parse_calendar_date(date) if isinstance(date, str) else None
    except ValueError:
        return None


def site_problem(
    engine: Engine | None, request: DispatchRequest, registered: RegisteredSite | None, now: dt.datetime
) -> tuple[DispatchProblem, InputIssues]:
    """The problem of a validated request, its PV taken from storage when it sends none, when
    that stored forecast was issued, and when the registration of the site read last changed.
    `engine` None: a database without tables, where no site is registered (`registered` None),
    asked nothing.

    `now` is the one clock reading that decides a request without `date`: near local midnight,
    the PV must come from the day it plans.
    """
    site = registered.site if registered is not None else None
    if site is not None and request.timezone not in (None, site.timezone):
        # Its forecasts, its stored plans and "latest" on a date all mean the site's own local
        # day: a plan of another 24 hours stored under that date would be read back as the day's.
        raise RequestError([
            f"timezone: site {site.site_id!r} is registered in {site.timezone}, and a date is its "
            f"local day there; leave timezone out or send {site.timezone!r} (got {request.timezone!r})"
        ])
    pv_kw, issues = (None, InputIssues()) if request.pv_kw is not None else stored_pv(engine, request, site, now)
    problem = build_problem(request, pv_kw=pv_kw, default_timezone=site.timezone if site else None, today=now)
    if registered is not None:
        issues = replace(issues, site_updated=registered.updated_at)
    return problem, issues


def stored_pv(
    engine: Engine | None, request: DispatchRequest, site: Site | None, now: dt.datetime
) -> tuple[list[float], InputIssues]:
    """The site's most recently issued PV forecast for exactly the request's local day, averaged
    over the request's intervals when it is stored finer (the pipeline's quarter-hours), and the
    latest issue among the intervals read (and when the newest of their rows was written)."""
    if site is None or engine is None:  # no engine: a database without tables, so no site
        raise RequestError([
            f"pv_kw: missing, and site {request.site_id!r} is not registered, so there is no "
            "stored PV forecast to use; send pv_kw"
        ])
    if request.resolution_minutes < PIPELINE_RESOLUTION_MINUTES:
        raise RequestError([
            f"pv_kw: missing, and stored forecasts are quarter-hourly: a {request.resolution_minutes}-minute "
            f"request of site {request.site_id!r} needs a PV value for each of its intervals (none is "
            "invented between stored ones); send pv_kw"
        ])
    timezone = request.timezone or site.timezone
    date = request.date or next_local_date(timezone, now)
    try:
        day = local_day(date, timezone, request.resolution_minutes)
    except ValueError as exc:
        raise RequestError([str(exc)]) from None
    frame = load_forecast(engine, site.site_id, day.start_utc, day.end_utc)
    expected = list(day.timestamps())
    stored = list(frame["ts"])
    issued = InputIssues(forecast=latest_issue(frame), forecast_stored=latest_write(frame))
    if stored == expected:
        return frame["pv_kw"].tolist(), issued
    per_interval = _stored_intervals_per_interval(stored, day)
    if per_interval is not None:
        # Mean power over the longer interval: the same energy as the stored ones.
        return frame["pv_kw"].to_numpy().reshape(-1, per_interval).mean(axis=1).tolist(), issued
    covered = len(set(stored) & set(expected))
    if covered == len(expected):
        found = f"is in {len(stored)} intervals on {date} in {timezone}, not the request's {len(expected)}"
    else:
        found = f"covers {covered} of the {len(expected)} interval starts of {date} in {timezone}"
    raise RequestError([
        f"pv_kw: missing, and the stored forecast of site {site.site_id!r} {found} "
        f"({request.resolution_minutes}-minute); send pv_kw"
    ])


def _stored_intervals_per_interval(stored: list, day: LocalDay) -> int | None:
    """How many stored intervals make one of the day's, when the stored forecast covers the day
    completely at a finer resolution that divides the day's."""
    for finer in RESOLUTIONS_MINUTES:
        if finer >= day.resolution_minutes or day.resolution_minutes % finer:
            continue
        if stored == list(local_day(day.date, day.timezone, finer).timestamps()):
            return day.resolution_minutes // finer
    return None
