"""`dispatch-pipeline demo`: three demo sites planned for the last week and tomorrow, via Dagster.

Registers the demo sites, generates their forecasts, materialises every site-day through Dagster
(in this process, on the instance the UI uses: see `cli/dagster_home.py`), prints what was
planned and how to look at it in the Dagster UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dispatch_pipeline.cli import UsageError, add_database_url_option
from dispatch_pipeline.cli.dagster_home import (
    DagsterHome,
    application_database_url,
    apply_project_env_file,
    choose_dagster_home,
    reads_variables,
)

if TYPE_CHECKING:
    from dispatch_pipeline.defs.partitions import SiteDay

PAST_DAYS = 7
# The runs' event logs are in the instance (and the UI); the terminal gets warnings and the summary.
QUIET_RUNS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "demo",
        help=f"plan the demo sites for the last {PAST_DAYS} days (--days) and tomorrow through Dagster",
        description="Register the demo sites, generate forecasts, materialise every site-day "
        "through Dagster and print a summary.",
    )
    parser.add_argument("--days", type=int, default=PAST_DAYS, help="past days to plan (default %(default)s)")
    add_database_url_option(parser)
    parser.set_defaults(handler=run)


def open_instance(home: DagsterHome) -> Any:
    """The instance of `home`, its storage touched so that a bad one fails now, not mid-demo."""
    import dagster as dg

    from dispatch_pipeline.defs.partitions import SITES_PARTITIONS_NAME

    from_env_file = [name for name in home.from_env_file if name.startswith("DAGSTER_PG_") and "PASSWORD" not in name]
    hint = (
        f" (./.env sets {', '.join(f'{name}={os.environ[name]}' for name in from_env_file)}: "
        "for a run outside Compose, point them at a server this machine reaches)"
        if from_env_file else ""
    )
    # Dagster retries a connection for seconds, logging each attempt: a host name that does not
    # resolve (.env's Compose service `db`, outside Compose) never will, and is said at once.
    host = os.environ.get("DAGSTER_PG_HOST", "").strip()
    if host and "DAGSTER_PG_HOST" in reads_variables(home.path):
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            raise UsageError(
                f"the Dagster instance in {home.path} is unusable: DAGSTER_PG_HOST={host} is no host "
                f"this machine knows ({exc.strerror}){hint}"
            ) from None
    try:
        instance = dg.DagsterInstance.get()
        instance.get_dynamic_partitions(SITES_PARTITIONS_NAME)
    except Exception as exc:
        raise UsageError(f"the Dagster instance in {home.path} is unusable: {exc}{hint}") from exc
    return instance


def demo_dates(today: dt.date, past_days: int) -> list[dt.date]:
    """The last `past_days` days before `today` and tomorrow (a site's local dates)."""
    return [today - dt.timedelta(days=n) for n in range(past_days, 0, -1)] + [today + dt.timedelta(days=1)]


def local_today(timezone: str, now_utc: dt.datetime) -> dt.date:
    return now_utc.astimezone(ZoneInfo(timezone)).date()


def demo_runs(sites: list[tuple[str, dt.date]], past_days: int) -> list[list[SiteDay]]:
    """Per (site, its local today), its past days in one run (as a backfill chunk plans history)
    and its tomorrow in another (as the day-ahead schedule does)."""
    from dispatch_pipeline.defs.partitions import SiteDay

    history, tomorrows = [], []
    for site_id, today in sites:
        *past, tomorrow = demo_dates(today, past_days)
        if past:
            history.append([SiteDay(site_id, date) for date in past])
        tomorrows.append([SiteDay(site_id, tomorrow)])
    return history + tomorrows


def _check_first_date(earliest_today: dt.date, past_days: int) -> None:
    """Refuse, before anything is written, days before the first date partition."""
    from dispatch_pipeline.defs.partitions import START_DATE

    first = dt.date.fromisoformat(START_DATE)
    tomorrow = earliest_today + dt.timedelta(days=1)
    if first > tomorrow:
        # No --days helps: not even tomorrow, which the demo always plans, is a partition.
        raise UsageError(
            f"DISPATCH_PARTITIONS_START: the date partitions start on {first}, after the demo's "
            f"tomorrow ({tomorrow}): set it to a date no later than {earliest_today - dt.timedelta(days=past_days)}"
        )
    most = max((earliest_today - first).days, 0)
    if past_days > most:
        raise UsageError(
            f"--days: at most {most} (got {past_days}): the date partitions start on {first} "
            "(DISPATCH_PARTITIONS_START)"
        )


def run(args: argparse.Namespace) -> int:
    if args.days < 0:
        raise UsageError(f"--days: must be >= 0 (got {args.days})")
    # Before the pipeline's modules read their settings (DISPATCH_PARTITIONS_START, ...) on import:
    # ./.env's values are those `dagster dev` and the UI's code location plan with.
    apply_project_env_file()
    # Imported here: Dagster takes seconds to import and the other subcommands do not need it.
    try:
        # The whole code location, as the runs below load it: its modules check every setting
        # when imported, and that is to happen before anything is written.
        import dispatch_pipeline.definitions  # noqa: F401
        from dispatch_pipeline.defs.automation.sensors import sync_site_partitions
        from dispatch_pipeline.defs.common import SOURCE_TAG
        from dispatch_pipeline.defs.local_runs import build_local_job, run_site_days
        from dispatch_pipeline.defs.resources import DispatchStorage
        from dispatch_pipeline.defs.resources_map import pipeline_resources
        from dispatch_pipeline.defs.stored_runs import latest_results
    except ValueError as exc:
        # A pipeline setting (DISPATCH_PLANNING_TIME, ...) the code location does not load with:
        # its message names the variable and its value.
        raise UsageError(str(exc)) from None
    from dispatch_pipeline.demo import demo_forecast, demo_sites
    from dispatch_pipeline.storage import open_database, save_forecast, upsert_sites
    from dispatch_pipeline.storage.database import printable_url

    sites = demo_sites()
    issued_at = dt.datetime.now(dt.UTC)
    # Each site's own today: at 17:00 UTC it is already tomorrow in Kuala Lumpur.
    todays = [(site.site_id, local_today(site.timezone, issued_at)) for site in sites]
    _check_first_date(min(today for _, today in todays), args.days)  # before anything is opened

    home = choose_dagster_home()
    # Said before the instance is opened: when it cannot be, these are what to look at.
    home.announce()
    instance = open_instance(home)
    url = application_database_url(args.database_url)
    engine = open_database(url)
    print(f"Application database: {printable_url(url)}")

    refuse_to_replace_other_sites(engine, sites, printable_url(url))
    upsert_sites(engine, sites)  # all of them or, refused, none
    for site, (_, today) in zip(sites, todays, strict=True):
        for date in demo_dates(today, args.days):
            save_forecast(engine, site.site_id, demo_forecast(site, date), issued_at)
    sync_site_partitions(instance, {site.site_id: site.timezone for site in sites})
    past = "" if args.days == 0 else "the last day and " if args.days == 1 else f"the last {args.days} days and "
    print(f"Registered {len(sites)} demo sites with forecasts for {past}tomorrow, each in its own timezone: "
          + ", ".join(f"{site_id} tomorrow {today + dt.timedelta(days=1)}" for site_id, today in todays))

    job = build_local_job(pipeline_resources(storage=DispatchStorage(database_url=url)))
    runs = demo_runs(todays, args.days)
    days = [day for run_days in runs for day in run_days]
    started = time.perf_counter()
    failures = []
    for run_days in runs:
        result = run_site_days(job, instance, run_days, tags={SOURCE_TAG: "demo"}, run_config=QUIET_RUNS)
        if not result.success:
            failures.extend(run_days)
        first, last = run_days[0], run_days[-1]
        span = first.date.isoformat() + ("" if first == last else f"..{last.date.isoformat()}")
        print(f"  {'ok    ' if result.success else 'FAILED'} {first.site_id:<16} {span:<22} "
              f"{len(run_days)} site-day(s)  (run {result.run_id[:8]})", flush=True)
    elapsed = time.perf_counter() - started
    print(f"Materialised {len(days) - len(failures)} of {len(days)} site-days in {len(runs)} runs "
          f"in {elapsed:.1f} s\n")

    stored = latest_results(engine, [day for day in days if day not in failures])
    print_summary(stored, sites)
    print(ui_hint(home, url))
    return 1 if failures else 0


def ui_hint(home: DagsterHome, url: str) -> str:
    """How to open the demo's runs in the UI. A database the UI would not find by itself (given
    with --database-url) is named: the UI's runs, sensors and schedule would otherwise plan
    against DATABASE_URL's or the instance's SQLite file, where the demo sites are not."""
    from dispatch_pipeline.storage import database_url
    from dispatch_pipeline.storage.database import normalize_url, printable_url

    home_setting = f"DAGSTER_HOME={home.path}"
    url = normalize_url(url)
    if url == database_url():
        commands = (
            "  make ui      (or: .venv/bin/dispatch-pipeline ui; `dg dev` or `dagster dev -w workspace.yaml`\n"
            f"               with {home_setting})\n"
        )
    else:
        # Every command needs it, `make ui` too (the docstring says why).
        url_setting = f"DATABASE_URL={printable_url(url)}"
        commands = (
            f"  {url_setting} make ui\n"
            "               (or, with that DATABASE_URL: .venv/bin/dispatch-pipeline ui; `dg dev` or\n"
            f"               `dagster dev -w workspace.yaml` with {home_setting})\n"
        )
    return (
        "\nThese runs are in the Dagster UI, with their lineage, checks and plots:\n"
        + commands
        + "  then open http://127.0.0.1:3000  (Assets > dispatch_schedule > Partitions; Runs)"
    )


def refuse_to_replace_other_sites(engine: Any, sites: list[Any], where: str) -> None:
    """UsageError naming the demo's site ids registered with other definitions: the demo would
    replace an operator's site, and overshadow its forecasts with generated ones."""
    from dispatch_pipeline.storage import StoredSiteInvalid, get_site

    def registered_otherwise(site: Any) -> bool:
        try:
            stored = get_site(engine, site.site_id)
        except StoredSiteInvalid:
            return True
        return stored is not None and stored != site

    others = [site.site_id for site in sites if registered_otherwise(site)]
    if others:
        raise UsageError(
            f"{', '.join(others)}: registered in {where} with a definition other than the demo's; the "
            "demo would replace it and store generated forecasts over its days. Run the demo on a "
            "database of its own (--database-url sqlite:///demo.sqlite), or remove the site first "
            f"(dispatch-pipeline sites remove {others[0]})"
        )


def print_summary(results: dict[str, Any], sites: list[Any]) -> None:
    currency = {site.site_id: site.currency for site in sites}
    header = (
        f"{'site':<16} {'date':<10} {'status':<8} {'solver':<13} {'objective':>11} "
        f"{'total_cost':>11} {'savings':>9} {'cur':<4} fallback"
    )
    print(header)
    print("-" * len(header))
    for result in sorted(results.values(), key=lambda r: (r.site_id, r.date)):
        print(
            f"{result.site_id:<16} {result.date.isoformat():<10} {result.status:<8} "
            f"{result.solver:<13} {result.objective_value:>11.2f} {result.kpis.total_cost:>11.2f} "
            f"{result.kpis.savings_vs_baseline:>9.2f} {currency.get(result.site_id, ''):<4} "
            f"{result.fallback_reason or '-'}"
        )
    print(
        "objective: the weighted sum the plan minimises (total_cost, battery wear, curtailment and "
        "violation penalties);\ntotal_cost: energy bought minus sold plus the demand charge; "
        "savings: against the same day without a battery"
    )
