"""`dispatch-pipeline ui`: the Dagster UI (and daemon) on the instance the demo wrote to."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from dispatch_pipeline.cli import UsageError, add_host_option
from dispatch_pipeline.cli.dagster_home import choose_dagster_home
from dispatch_pipeline.storage.database import database_url, printable_url

WORKSPACE = Path("workspace.yaml")
SUPERSEDED_WARNING = "Function `dev_command` is superseded"


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "ui",
        help="start the Dagster UI and daemon (dagster dev) on the demo's instance",
        description=(
            "Run `dagster dev -w workspace.yaml` on the Dagster instance `demo` uses: DAGSTER_HOME "
            "if set, else dagster_home/ when the variables its dagster.yaml reads are set, else "
            "the embedded SQLite instance in dagster_home/embedded. Run it from the repository root."
        ),
    )
    add_host_option(parser)
    parser.add_argument("--port", type=int, default=3000, help="port (default: 3000)")
    parser.set_defaults(handler=run)


def refuse_unusable_address(host: str, port: int) -> None:
    """UsageError when the UI could not listen on host:port: dagster dev logs that error and goes
    on running its daemon, with no UI, while the URL it printed shows whatever holds the port."""
    try:
        # Every address the name resolves to, each on a socket of its own, as asyncio's
        # create_server (the web server's) binds them.
        for family, kind, _, _, address in set(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)):
            with socket.socket(family, kind) as probe:
                # A port left in TIME_WAIT by the last UI is free to the server too.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port, or "
            "--host an address of this machine"
        ) from None


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port: must be in 1..65535 (got {args.port})")
    if not WORKSPACE.is_file():
        raise UsageError(f"no ./{WORKSPACE} here: run this from the repository root")
    refuse_unusable_address(args.host, args.port)
    home = choose_dagster_home()
    home.announce()
    # The runs and sensors it starts read and write there; without DATABASE_URL, an SQLite file
    # beside the instance, which a shell that set it elsewhere for `demo` would not expect.
    print(f"Application data (sites, forecasts, plans): {printable_url(database_url())}")
    print(f"Starting the Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    # A background job of a non-interactive shell starts with SIGINT ignored, and exec keeps
    # that; dagster dev gives SIGTERM SIGINT's handler, so it could then not be stopped at all.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(
        sys.executable,
        [
            sys.executable,
            # Dagster's advice to type `dg dev` instead is for people typing `dagster dev`.
            "-W", f"ignore:{SUPERSEDED_WARNING}:FutureWarning",
            "-m", "dagster", "dev", "-w", str(WORKSPACE), "-h", args.host, "-p", str(args.port),
        ],
    )
    return 0  # not reached: the process is now dagster dev
