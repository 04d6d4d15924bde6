"""`dispatch-pipeline sites add|import|list|remove`: the registered sites of the fleet."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from dispatch_pipeline.cli import UsageError, add_database_url_option, say_where_stored


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "sites",
        help="register, list and remove sites",
        description="Register sites in the application database (DATABASE_URL, else the demo's "
        "SQLite under DAGSTER_HOME or dagster_home/embedded). Dagster's site_partitions_sensor "
        "picks new sites up within a minute; no redeploy needed.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser(
        "add",
        help="add or replace one site (YAML or JSON mapping; - for stdin)",
        description="Add or replace one site: the fields of a sites.yaml entry, from FILE or stdin (-).",
    )
    add.add_argument("file", metavar="FILE|-", help="one site: the fields of a sites.yaml entry")
    add.set_defaults(handler=run_add)

    import_ = actions.add_parser(
        "import",
        help="add or replace every site of a sites file (YAML, or `sites list --json`)",
        description="Add or replace every site of a sites file, checked whole: every bad entry is named.",
    )
    import_.add_argument(
        "file", metavar="FILE",
        help="YAML or JSON: a top-level `sites:` list, or the list alone as `sites list --json` prints it",
    )
    import_.set_defaults(handler=run_import)

    list_ = actions.add_parser(
        "list",
        help="list registered sites",
        description="List the registered sites (--json: their full definitions, as `sites import` takes them).",
    )
    list_.add_argument("--json", action="store_true", help="print the full definitions as JSON")
    list_.set_defaults(handler=run_list)

    remove = actions.add_parser(
        "remove",
        help="remove sites from the fleet; their stored plans, forecasts and prices stay",
        description="Delete the sites' definitions (all of them or, if one is not registered, none): "
        "they are planned no more. Their stored plans, forecasts and prices stay, and so do their "
        "Dagster partitions, so that past runs stay browsable. Each removed site's definition is "
        "printed on stdout as stored, one JSON object per line, which `sites add -` takes back "
        "(`sites remove OLD_SITE > OLD_SITE.json`); what stays is said on stderr.",
    )
    remove.add_argument("site_ids", nargs="+", metavar="SITE_ID")
    remove.set_defaults(handler=run_remove)

    for sub in (add, import_, list_, remove):
        add_database_url_option(sub)


def _url(args: argparse.Namespace) -> str:
    from dispatch_pipeline.cli.dagster_home import application_database_url

    return application_database_url(args.database_url)


def _save(args: argparse.Namespace, sites: list[Any]) -> Any:
    from dispatch_pipeline.core.documents import source_name
    from dispatch_pipeline.storage import (
        StorageInputError,
        open_database,
        read_sites,
        stored_timezones_and_currencies,
        upsert_sites,
    )
    from dispatch_pipeline.storage.database import engine_for_checks
    from dispatch_pipeline.storage.sites import refuse_site_ids_differing_only_in_case

    url, site_ids = _url(args), [site.site_id for site in sites]
    try:
        # Asked before opening the database, which would create it (or its tables) or migrate its
        # schema for a refused file; without tables, no site is registered, so only the file's own
        # ids can clash. upsert_sites asks again in its transaction.
        if (reader := engine_for_checks(url)) is None:
            refuse_site_ids_differing_only_in_case(None, site_ids)
        else:
            with reader.connect() as connection:
                refuse_site_ids_differing_only_in_case(connection, site_ids)
        engine = open_database(url)
        before = stored_timezones_and_currencies(engine, site_ids)
        # Those the model still accepts: a stored row it refuses has no tariffs to compare.
        stored = {site.site_id: site for site in read_sites(engine, before)[0]}
        upsert_sites(engine, sites)  # one transaction: a file's sites are stored together
    except StorageInputError as exc:
        raise UsageError(f"{source_name(args.file)}: {exc}") from None
    for site in sites:
        # The same definition again (a daily import of one sites.yaml) changes nothing: no
        # updated_at moves, no plan is made again; "replaced" would say otherwise.
        unchanged = site.site_id in stored and stored[site.site_id].model_dump(mode="json") == site.model_dump(mode="json")
        done = "unchanged" if unchanged else "replaced" if site.site_id in before else "registered"
        print(f"{done} {site.site_id} ({site.timezone})")
        timezone, currency = before.get(site.site_id, (site.timezone, site.currency))
        if timezone != site.timezone:
            _warn(
                f"site {site.site_id}: timezone changed from {timezone} to {site.timezone}; its stored "
                "plans keep their days in the old one (plan again the days you need), and stored "
                "forecasts and prices are read by the new local days"
            )
        if currency != site.currency:
            _warn(
                f"site {site.site_id}: currency changed from {currency} to {site.currency}; its stored "
                f"price series are now read as {site.currency}"
            )
        if site.site_id in stored and (note := _past_tariff_change(stored[site.site_id], site)):
            _warn(note)
    return engine


def _past_tariff_change(stored: Any, site: Any, today: dt.date | None = None) -> str | None:
    """What to say when `site` prices some local day before `today` (the site's local today) by
    another tariff than `stored`, the definition it replaces: backfills of those days would bill
    them otherwise than they were. None when every past day keeps its tariff."""
    from zoneinfo import ZoneInfo

    from dispatch_pipeline.core.calendar import FIRST_DATE
    from dispatch_pipeline.core.site import days_priced_otherwise

    today = today or dt.datetime.now(ZoneInfo(site.timezone)).date()
    spans = days_priced_otherwise(stored, site, FIRST_DATE, today)
    if not spans:
        return None
    days = ", ".join(
        f"every day before {end}" if start == FIRST_DATE
        else f"the days {start} to {end - dt.timedelta(days=1)}" if end - start > dt.timedelta(days=1)
        else f"{start}"
        for start, end in spans
    )
    kept = [tariff.model_dump(mode="json") for tariff in (*(e.tariff for e in site.tariff_history), site.tariff)]
    if stored.tariff.model_dump(mode="json") not in kept:
        why = "no tariff_history entry keeps the one registered until now"
        hint = "To keep past days on the old tariff, list it under tariff_history with until: <first day of the new one>."
    else:
        first = spans[0][0]
        why = (
            f"on {first}: {stored.tariff_in_force(first).describe()} as registered until now, "
            f"{site.tariff_in_force(first).describe()} now"
        )
        hint = (
            "To keep past days on the tariffs registered until now, give each its tariff_history "
            "entry with until: the first day of the next one."
        )
    return (
        f"site {site.site_id}: its tariff changes for {days} too ({why}); backfills of those days "
        f"will use the new one. {hint}"
    )


def _warn(message: str) -> None:
    print(f"dispatch-pipeline sites: warning: {message}", file=sys.stderr)


def run_add(args: argparse.Namespace) -> int:
    from dispatch_pipeline.core.documents import DocumentError, parse_yaml, read_text, source_name
    from dispatch_pipeline.core.site import SiteConfigError, parse_site

    try:
        data = parse_yaml(read_text(args.file), args.file)  # YAML is a superset of JSON
    except DocumentError as exc:
        raise UsageError(str(exc)) from None
    use = "`sites import FILE`" if args.file == "-" else f"`sites import {args.file}`"
    if isinstance(data, dict) and "sites" in data:
        raise UsageError(f"{source_name(args.file)} holds a `sites:` list: use {use}")
    if isinstance(data, list):
        raise UsageError(
            f"{source_name(args.file)}: holds a list of {len(data)} {'entry' if len(data) == 1 else 'entries'}; `sites add` takes one site "
            f"as a mapping (drop the leading `- ` of a pasted sites.yaml entry, or select one object of "
            f"`sites list --json`), and {use} takes several: such a list, or one under `sites:`"
        )
    try:
        sites = [parse_site(data, source=source_name(args.file))]
    except SiteConfigError as exc:
        raise UsageError(str(exc)) from None
    say_where_stored(_save(args, sites))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from dispatch_pipeline.core.site import SiteConfigError, load_sites_yaml

    try:
        sites = load_sites_yaml(args.file)
    except SiteConfigError as exc:
        raise UsageError(str(exc)) from None
    engine = _save(args, sites)
    print(f"{len(sites)} site(s) imported")
    say_where_stored(engine)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from dispatch_pipeline.storage import open_database, read_sites
    from dispatch_pipeline.storage.database import why_without_tables

    # Listing only reads: a mistyped URL must not leave behind a database, or one with empty tables.
    url = _url(args)
    if empty := why_without_tables(url):
        if args.json:
            print("[]")
        else:
            print(f"no sites registered: {empty} (add sites with `dispatch-pipeline sites import FILE`)")
        return 0
    sites, invalid = read_sites(open_database(url))
    for fault in invalid:
        print(f"dispatch-pipeline sites list: {fault}", file=sys.stderr)
    status = 1 if invalid else 0
    if args.json:
        print(json.dumps([site.model_dump(mode="json") for site in sites], indent=2))
        return status
    if not sites and not invalid:
        print("no sites registered (add some with `dispatch-pipeline sites import FILE`)")
        return 0
    header = f"{'site_id':<20} {'timezone':<22} {'pv_kwp':>8} {'bess_kwh':>9} {'currency':<8} name"
    print(header)
    for site in sites:
        print(
            # As stored, not rounded: a 0.01 kWh battery must not read as none.
            f"{site.site_id:<20} {site.timezone:<22} {site.pv_kwp!r:>8} "
            f"{site.bess.capacity_kwh!r:>9} {site.currency:<8} {site.name}"
        )
    return status


def run_remove(args: argparse.Namespace) -> int:
    from dispatch_pipeline.storage import StorageInputError, open_database, remove_sites
    from dispatch_pipeline.storage.database import engine_for_checks, why_without_tables
    from dispatch_pipeline.storage.sites import refuse_unregistered_site_ids

    # Nothing to remove where nothing was ever stored: a mistyped URL must not leave behind a
    # database (or its tables) for a command that is refused, nor one at an older revision be
    # migrated for it.
    url = _url(args)
    if (reader := engine_for_checks(url)) is None:
        empty = why_without_tables(url)
        raise UsageError(f"site_id: is not a registered site, as none is: {empty} (got {args.site_ids[0]!r})")
    try:
        with reader.connect() as connection:
            refuse_unregistered_site_ids(connection, args.site_ids)
        engine = open_database(url)
        removed = remove_sites(engine, args.site_ids)  # asks again, the rows locked
    except StorageInputError as exc:
        raise UsageError(str(exc)) from None
    for site_id, site in removed.items():
        # The definition is gone from the database: this line is its last copy, valid or not.
        # Alone on stdout, so that it can be saved as a file `sites add` reads.
        print(json.dumps(site.definition, sort_keys=True))
        print(
            f"removed {site_id}: no longer planned; its {site.stored_runs} stored plan(s), forecasts and "
            "prices stay (its definition is on stdout, which `sites add -` takes back)",
            file=sys.stderr,
        )
    print(
        "their Dagster partitions stay, so that past runs stay browsable: leave them out of backfills "
        "(deploy/backfill.py --sites), or delete them in the UI once their history no longer matters",
        file=sys.stderr,
    )
    say_where_stored(engine, file=sys.stderr)
    return 0
