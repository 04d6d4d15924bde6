"""`dispatch-pipeline solve FILE|-`: plan one site-day and print the result as JSON."""

from __future__ import annotations

import argparse
import re

from dispatch_pipeline.cli import UsageError
from dispatch_pipeline.core.documents import DocumentError, parse_json, read_text
from dispatch_pipeline.core.request import TIMEOUT_MS_RANGE
from dispatch_pipeline.core.tariffs import CURRENCY_PATTERN


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
        "--currency", default="MYR", type=_currency_code,
        help="ISO 4217 code of the request's prices, for the explanations (a request carries none; default: MYR)",
    )
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
    from dispatch_pipeline import RequestError, solve_dispatch
    from dispatch_pipeline.core.milp import SolverUnavailable

    request = read_request(args.file)
    try:
        result = solve_dispatch(
            request,
            solver=args.solver,
            timeout_ms=args.timeout_ms,
            use_milp=False if args.no_milp else None,
            currency=args.currency,
        )
    except (RequestError, SolverUnavailable) as exc:
        raise UsageError(str(exc)) from None
    print(result.to_json())
    return 0
