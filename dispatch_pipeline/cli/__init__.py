"""The `dispatch-pipeline` command. Each subcommand lives in its own module with a `register`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from sqlalchemy import Engine

SUBCOMMAND_MODULES = ("solve", "serve", "db", "sites", "forecasts", "prices", "demo", "ui", "solver")


class UsageError(Exception):
    """Bad input from the user: printed on stderr, exit status 2, no traceback."""


def add_database_url_option(parser: argparse.ArgumentParser, help: str = "override DATABASE_URL") -> None:
    parser.add_argument("--database-url", default=None, type=_database_url, help=help)


def _database_url(text: str) -> str:
    # An empty value (`--database-url "$UNSET"`) would otherwise fall through to DATABASE_URL or
    # the demo's SQLite file: the command would write somewhere nobody asked for.
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected an SQLAlchemy URL such as postgresql://host/db (got {text!r})")
    return text


def say_where_stored(engine: Engine, file: TextIO | None = None) -> None:
    """The last line of a command that wrote: the database, which `.env`, DATABASE_URL,
    --database-url or the demo's SQLite file may have chosen (on stdout unless `file`)."""
    from dispatch_pipeline.storage.database import printable_url

    print(f"database: {printable_url(engine.url)}", file=file)


def add_host_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", type=_host, help="address to bind (default: 127.0.0.1)")


def _host(text: str) -> str:
    # An empty value (`--host "$UNSET"`) makes the server listen on every interface: a loopback
    # default must not turn public by accident. 0.0.0.0 says so on purpose.
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected an address such as 127.0.0.1 or 0.0.0.0 (got {text!r})")
    return text


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
    except BrokenPipeError:
        # The reader left (`solve ... | head`): no traceback, and no second error when Python
        # flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE
    except Exception as exc:
        problem = _storage_problem(exc, args)
        if problem is None:
            raise
        message, status = problem
        print(f"dispatch-pipeline {args.command}: {message}", file=sys.stderr)
        return status


def _storage_problem(exc: Exception, args: argparse.Namespace) -> tuple[str, int] | None:
    """What went wrong with the database or what it holds, and the exit status; None otherwise."""
    # Only a command that opened a database has imported these; `solve` never pays for them.
    stored_sites = sys.modules.get("dispatch_pipeline.storage.sites")
    if stored_sites is not None and isinstance(exc, stored_sites.StoredSiteInvalid):
        return str(exc), 1
    checks = sys.modules.get("dispatch_pipeline.storage.checks")
    if checks is not None and isinstance(exc, checks.StorageInputError):
        return str(exc), 2  # refused before anything was written; names the field and the value
    errors = sys.modules.get("sqlalchemy.exc")
    if errors is None:
        return None
    # A ProgrammingError before any statement: the driver refused the URL's options on connecting.
    refused_options = isinstance(exc, errors.ProgrammingError) and exc.statement is None
    if isinstance(exc, errors.ArgumentError | errors.NoSuchModuleError) or refused_options:
        from dispatch_pipeline.storage.database import printable_url

        given = getattr(args, "database_url", None)
        source, url = ("--database-url", given) if given else ("DATABASE_URL", os.environ.get("DATABASE_URL", ""))
        reason = str(exc.orig).strip() if refused_options else exc
        return f"{source} {printable_url(url.strip())!r} is not a URL SQLAlchemy can use: {reason}", 2
    from dispatch_pipeline.storage.database import INSUFFICIENT_PRIVILEGE, sqlstate

    refused_access = isinstance(exc, errors.ProgrammingError) and sqlstate(exc) == INSUFFICIENT_PRIVILEGE
    # A plain DatabaseError: SQLite's "file is not a database" (its subclasses are bugs, not this).
    if (
        isinstance(exc, errors.OperationalError | errors.InterfaceError)
        or type(exc) is errors.DatabaseError
        or refused_access
    ):
        # The server down or refusing us: the command was right, the environment was not.
        return f"cannot use the database: {str(exc.orig).strip() or type(exc.orig).__name__}", 1
    return None


if __name__ == "__main__":
    sys.exit(main())
