"""`dispatch-pipeline db upgrade|current`: the storage schema's migrations."""

from __future__ import annotations

import argparse

from dispatch_pipeline.cli import add_database_url_option


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "db",
        help="manage the database schema",
        description="Manage the schema of DATABASE_URL (else the demo's SQLite under DAGSTER_HOME "
        "or dagster_home/embedded).",
    )
    actions = parser.add_subparsers(dest="db_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("upgrade", "apply every pending migration (safe to run from several processes)"),
        ("current", "print the schema revision and the newest one this version knows"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        add_database_url_option(action)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dispatch_pipeline.cli.dagster_home import application_database_url
    from dispatch_pipeline.storage.database import KNOWN_REVISIONS, make_engine, missing_sqlite_file
    from dispatch_pipeline.storage.migrate import current_revision, head_revision, upgrade_database

    # A bad URL or a database out of reach is reported by main(), as for every other command.
    url = application_database_url(args.database_url)
    if args.db_action == "upgrade":
        upgrade_database(url)
    else:
        make_engine(url)  # refuses a URL it cannot use, without connecting
        if (missing := missing_sqlite_file(url)) is not None:  # reading must not create it
            print(f"revision: none (head: {head_revision()}): the file {missing} does not exist")
            return 0
    current, head = current_revision(url), head_revision()
    newer = current is not None and current not in KNOWN_REVISIONS
    # Newer: a rolled-back release's `db upgrade` (Compose's migrate service) must let it start.
    beyond = " (newer than this release: left as it is)" if newer else ""
    print(f"revision: {current or 'none'} (head: {head}){beyond}")
    return 0 if args.db_action == "current" or current == head or newer else 1
