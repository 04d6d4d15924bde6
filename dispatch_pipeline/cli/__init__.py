"""The `dispatch-pipeline` command. Each subcommand lives in its own module with a `register`."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = ("solve", "serve", "db", "sites", "forecasts", "prices", "demo", "ui", "solver")


class UsageError(Exception):
    """Bad input from the user: printed on stderr, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatch-pipeline",
        description="Day-ahead battery dispatch for PV + battery sites.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"dispatch_pipeline.cli.{name}").register(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"dispatch-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
