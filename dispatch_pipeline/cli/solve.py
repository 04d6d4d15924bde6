"""`dispatch-pipeline solve FILE|-`: plan one site-day and print the result as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dispatch_pipeline.cli import UsageError


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "solve",
        help="solve one dispatch request (JSON file, or - for stdin) and print the result",
        description="Solve one dispatch request and print the result, with its points, as JSON.",
    )
    parser.add_argument("file", metavar="FILE|-", help="request JSON following the dispatch contract")
    parser.add_argument("--solver", choices=("highs", "cbc"), default="highs", help="MILP solver (default: highs)")
    parser.add_argument("--timeout-ms", type=int, default=None, help="override the request's timeout_ms")
    parser.add_argument("--no-milp", action="store_true", help="use the rule-based schedule only")
    parser.add_argument("--currency", default="MYR", help="currency label used in explanations")
    parser.set_defaults(handler=run)


def read_request(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


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
