"""`dispatch-pipeline serve`: run the REST API with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from dispatch_pipeline.cli import UsageError, add_database_url_option, add_host_option
from dispatch_pipeline.cli.dagster_home import application_database_url, apply_project_env_file

APP_FACTORY = "dispatch_pipeline.api.app:create_app"


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="serve the dispatch REST API",
        description=(
            "Serve the dispatch REST API (POST /dispatch/run, GET /dispatch/latest, "
            "GET /dispatch/runs, GET /dispatch/runs/{run_id}, GET /healthz; docs at /docs). "
            "Run from the repository "
            "root, ./.env applies over the shell as for the other commands. The database is "
            "--database-url, else DATABASE_URL, else the SQLite file of the instance `demo` and "
            "`ui` use; set DISPATCH_API_TOKENS to require "
            "bearer tokens ('TOKEN' or 'TOKEN:SITE1|SITE2', comma-separated). Each worker "
            "process starts one solver process per CPU it may use."
        ),
    )
    add_host_option(parser)
    parser.add_argument("--port", type=int, default=8002, help="port (default: 8002)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    add_database_url_option(parser)
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port: must be in 1..65535 (got {args.port})")
    if args.workers < 1:
        raise UsageError(f"--workers: must be at least 1 (got {args.workers})")
    import uvicorn

    from dispatch_pipeline.api.auth import TOKENS_ENV, TokenTable
    from dispatch_pipeline.storage.database import make_engine, printable_url

    apply_project_env_file()
    tokens = os.environ.get(TOKENS_ENV, "")
    try:
        # Fail here with exit status 2, not in every worker at start-up.
        if tokens.strip() and not TokenTable.parse(tokens).grants:
            raise ValueError(f"{TOKENS_ENV}: no token in {tokens!r}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # Through the environment, so every worker process (and create_app()) sees it; resolved as
    # the data commands resolve it, so the API serves the plans `make demo` stored.
    os.environ["DATABASE_URL"] = application_database_url(args.database_url)
    # A URL SQLAlchemy cannot use fails here, once, rather than as 503s from every worker.
    make_engine(os.environ["DATABASE_URL"])
    print(f"dispatch-pipeline serve: database {printable_url(os.environ['DATABASE_URL'])}", file=sys.stderr)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=not args.no_access_log,
        log_level=args.log_level,
    )
    return 0
