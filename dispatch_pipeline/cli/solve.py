"""`dispatch-pipeline solve FILE|-`: plan one site-day and print the result as JSON; with
`--store`, as the REST API plans it for a registered site, and stored."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from dispatch_pipeline.cli import UsageError, add_database_url_option
from dispatch_pipeline.core.documents import DocumentError, parse_json, read_text
from dispatch_pipeline.core.request import TIMEOUT_MS_RANGE
from dispatch_pipeline.core.tariffs import CURRENCY_PATTERN, DEFAULT_CURRENCY

if TYPE_CHECKING:
    from dispatch_pipeline.core.result import DispatchResult


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "solve",
        help="solve one dispatch request (JSON file, or - for stdin) and print the result",
        description="Solve one dispatch request and print the result, with its points, as JSON.",
    )
    parser.add_argument("file", metavar="FILE|-", help="request JSON following the dispatch contract")
    parser.add_argument("--solver", choices=("highs", "cbc"), default="highs", help="MILP solver (default: highs)")
    parser.add_argument(
        "--timeout-ms", type=_timeout_ms, default=None,
        help=f"override the request's timeout_ms ({TIMEOUT_MS_RANGE.start}..{TIMEOUT_MS_RANGE.stop - 1})",
    )
    parser.add_argument("--no-milp", action="store_true", help="use the rule-based schedule only")
    parser.add_argument(
        "--currency", default=None, type=_currency_code,
        help="currency code of the request's prices, three capital letters as in ISO 4217, for the "
        "explanations (a request carries none; "
        f"default: a registered site's with --store, else {DEFAULT_CURRENCY})",
    )
    parser.add_argument(
        "--store", action="store_true",
        help="plan as POST /dispatch/run does (a registered site's timezone, bess, limits, weights, "
        "demand charge and stored PV forecast fill what the request leaves out) and store the run, "
        "source 'cli', "
        "in the application database (DATABASE_URL, else the demo's SQLite)",
    )
    add_database_url_option(parser, help="with --store: override DATABASE_URL")
    parser.set_defaults(handler=run)


def _currency_code(text: str) -> str:
    if not re.fullmatch(CURRENCY_PATTERN, text):
        raise argparse.ArgumentTypeError(f"expected three capital letters such as EUR (got {text!r})")
    return text


def _timeout_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole milliseconds (got {text!r})") from None
    if value not in TIMEOUT_MS_RANGE:
        raise argparse.ArgumentTypeError(
            f"must be in {TIMEOUT_MS_RANGE.start}..{TIMEOUT_MS_RANGE.stop - 1} (got {value})"
        )
    return value


def read_request(source: str) -> object:
    try:
        return parse_json(read_text(source), source)
    except DocumentError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from dispatch_pipeline import RequestError
    from dispatch_pipeline.core.milp import SolverUnavailable

    if args.database_url is not None and not args.store:
        raise UsageError("--database-url is for --store: without it nothing is read or stored")
    request = read_request(args.file)
    try:
        result = _solve_and_store(request, args) if args.store else _solve(request, args)
    except (RequestError, SolverUnavailable) as exc:
        raise UsageError(str(exc)) from None
    if not args.store:
        # Its run_id names no stored run: GET /dispatch/runs/{run_id} would not find it.
        print(f"dispatch-pipeline solve: run {result.run_id} not stored (--store stores it)", file=sys.stderr)
    print(result.to_json())
    return 0


def _solve(request: object, args: argparse.Namespace) -> DispatchResult:
    from dispatch_pipeline import RequestError, solve_dispatch

    try:
        return solve_dispatch(
            request,
            solver=args.solver,
            timeout_ms=args.timeout_ms,
            use_milp=False if args.no_milp else None,
            currency=args.currency or DEFAULT_CURRENCY,
        )
    except RequestError as exc:
        if not any(problem.startswith("pv_kw: missing") for problem in exc.problems):
            raise
        # The site may well have a stored forecast: this command just did not read it, so the
        # core's "no stored PV forecast" would be untrue.
        raise RequestError([
            "pv_kw: missing; without --store, solve reads no database: send pv_kw, or add --store "
            "to plan with a registered site's stored forecast"
            if problem.startswith("pv_kw: missing") else problem
            for problem in exc.problems
        ]) from None


def _solve_and_store(request: object, args: argparse.Namespace) -> DispatchResult:
    import datetime as dt

    from dispatch_pipeline.cli.dagster_home import application_database_url
    from dispatch_pipeline.core.request import RequestError, parse_request
    from dispatch_pipeline.core.solve import solve_problem, with_overrides
    from dispatch_pipeline.site_requests import (
        complete_from_site,
        registered_site,
        site_problem,
    )
    from dispatch_pipeline.storage import (
        StorageInputError,
        check_runs_storable,
        open_database,
        save_runs,
    )
    from dispatch_pipeline.storage.database import engine_for_checks, printable_url

    # One clock reading: a request without `date` near local midnight is judged, and takes its
    # stored PV, on the day it plans.
    now = dt.datetime.now(dt.UTC)
    raw = with_overrides(request, timeout_ms=args.timeout_ms, use_milp=False if args.no_milp else None)
    if not isinstance(raw, dict):
        parse_request(raw)  # refuses it, naming what was sent instead of a JSON object
    url = application_database_url(args.database_url)
    # Where the database does not exist yet or has no tables, no site is registered: the request
    # is judged against none. Where it has them, the site is read first, from the schema as it
    # stands, so that one refusal names every problem, those against the site's stored values too.
    # The database is opened (so created, or migrated) only once the request is accepted, as a
    # refused command must leave no trace.
    reader = engine_for_checks(url)
    # A site stored broken: exit 1, naming its fault.
    registered = None if reader is None else registered_site(reader, raw)
    site = registered.site if registered is not None else None
    if site is not None and args.currency not in (None, site.currency):
        # The stored explanations would name prices in a currency the site is not billed in.
        raise UsageError(
            f"--currency {args.currency}: site {site.site_id!r} is registered in {site.currency}; "
            "leave --currency out to use it"
        )
    completed = complete_from_site(raw, site, now) if site is not None else None
    try:
        parsed = parse_request(completed.data if completed else raw, today=now)
    except RequestError as exc:
        if completed is None:
            raise
        raise RequestError([completed.noted(problem.partition(":")[0], problem) for problem in exc.problems]) from None
    # A registered site's stored PV forecast, which a request without pv_kw is planned on, is read
    # from the current schema (its rows' stored_at came with 0006): only then is the database
    # migrated before the plan, where it is at an older revision, and a refusal found from there
    # on (that forecast incomplete, say) comes after the upgrade.
    engine = open_database(url) if registered is not None and parsed.pv_kw is None else reader
    problem, issues = site_problem(engine, parsed, registered, now)
    currency = args.currency or (site.currency if site else DEFAULT_CURRENCY)
    result = solve_problem(problem, solver=args.solver, currency=currency, issues=issues)
    try:
        # Checked before the database is opened, which creates its tables where there are none
        # and migrates an older schema: a plan refused here must leave neither behind.
        check_runs_storable([result], source="cli")
        engine = open_database(url)
        save_runs(engine, [result], source="cli")
    except StorageInputError as exc:
        raise UsageError(f"the inputs give a plan that cannot be stored: {exc}") from None
    # On stderr: stdout carries the result's JSON.
    print(
        f"dispatch-pipeline solve: run {result.run_id} stored in {printable_url(engine.url)}",
        file=sys.stderr,
    )
    return result
