"""`dispatch-pipeline solver serve`: warm solver workers shared by every run on a host."""

from __future__ import annotations

import argparse
import logging
import os
import signal

from dispatch_pipeline.cli import UsageError
from dispatch_pipeline.cli.dagster_home import apply_project_env_file
from dispatch_pipeline.core.solver_service import ADDRESS_ENV, KEY_ENV
from dispatch_pipeline.placeholders import MAKE_SECRET, is_placeholder

MIN_KEY_CHARACTERS = 16


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "solver",
        help="run the solver service that Dagster runs share",
        description=(
            "Keep warm MILP solver workers that every Dagster run of this host (or network) uses "
            f"instead of starting its own. Runs find it through {ADDRESS_ENV} and authenticate "
            f"with {KEY_ENV} (the same secret on both sides). A run that cannot reach it starts "
            "its own workers; nothing else changes."
        ),
    )
    actions = parser.add_subparsers(dest="solver_action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="listen for runs' problems", description="Listen for runs' problems.")
    serve.add_argument(
        "--address", default=None,
        help=f"HOST:PORT or an absolute Unix socket path (default: {ADDRESS_ENV})",
    )
    serve.add_argument("--workers", type=int, default=0,
                       help="solver processes; 0 (the default): one per CPU this process may use")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dispatch_pipeline.core.solver_service import SolverService

    apply_project_env_file()  # the address and key `dagster dev` gives runs, from the same file
    address = args.address or os.environ.get(ADDRESS_ENV, "")
    if not address:
        raise UsageError(f"--address: not given, and {ADDRESS_ENV} is not set")
    if args.workers < 0:
        raise UsageError(f"--workers: must be 0 (one per CPU) or more (got {args.workers})")
    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise UsageError(f"{KEY_ENV}: not set (runs authenticate to the service with this secret)")
    if is_placeholder(key):
        raise UsageError(f"{KEY_ENV}: is the placeholder of .env.example ({key!r}); {MAKE_SECRET}")
    if len(key.strip()) < MIN_KEY_CHARACTERS:
        # Anyone who guesses it may have the service solve, and read the answers of, their problems.
        raise UsageError(
            f"{KEY_ENV}: {len(key.strip())} characters besides spaces, too few for a secret (at least "
            f"{MIN_KEY_CHARACTERS}); {MAKE_SECRET}"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        service = SolverService(address, key, args.workers or None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--address {address}: cannot listen there ({exc})") from None
    signal.signal(signal.SIGTERM, lambda *_: service.close())
    try:
        service.serve_forever()
    finally:
        service.close()
    return 0
