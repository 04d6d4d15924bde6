"""`dispatch-pipeline demo`: three demo sites planned for the last week and tomorrow, via Dagster.

Registers the demo sites, generates their forecasts, materialises every site-day through Dagster
(in this process, on the instance of DAGSTER_HOME so the runs show in the UI), prints what was
planned and how to look at it in the Dagster UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import time
from pathlib import Path
from typing import Any

from dispatch_pipeline.cli import UsageError

PAST_DAYS = 7
PG_ENV = re.compile(r"env:\s*(DAGSTER_PG_[A-Z_]+)")


def register(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "demo",
        help="plan three demo sites for the last 7 days and tomorrow through Dagster",
        description="Register the demo sites, generate forecasts, materialise every site-day "
        "through Dagster and print a summary.",
    )
    parser.add_argument("--days", type=int, default=PAST_DAYS, help="past days to plan (default 7)")
    parser.add_argument("--database-url", default=None, help="override DATABASE_URL")
    parser.set_defaults(handler=run)


def dagster_home() -> Path | None:
    """DAGSTER_HOME, else ./dagster_home when it exists (exported so Dagster uses it too)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home and Path("dagster_home").is_dir():
        home = str(Path("dagster_home").resolve())
        os.environ["DAGSTER_HOME"] = home
    return Path(home) if home else None


def open_instance(home: Path | None) -> tuple[Any, str]:
    """The instance of `home`, or a temporary one (with the reason) when it cannot be used."""
    import dagster as dg

    if home is None:
        return dg.DagsterInstance.ephemeral(), "DAGSTER_HOME is not set"
    config = home / "dagster.yaml"
    text = config.read_text(encoding="utf-8") if config.exists() else ""
    unset = sorted({name for name in PG_ENV.findall(text) if not os.environ.get(name)})
    if unset:
        return dg.DagsterInstance.ephemeral(), f"{config} needs {', '.join(unset)}, which are not set"
    try:
        instance = dg.DagsterInstance.get()
        instance.get_dynamic_partitions("sites")  # touches the storage: fails now, not mid-demo
    except Exception as exc:
        return dg.DagsterInstance.ephemeral(), f"the instance of {home} is unusable ({exc})"
    return instance, ""


def demo_dates(today: dt.date, past_days: int) -> list[dt.date]:
    """The last `past_days` days and tomorrow (UTC calendar dates, read as each site's local date:
    the newest date partition is UTC tomorrow)."""
    return [today - dt.timedelta(days=n) for n in range(past_days, 0, -1)] + [today + dt.timedelta(days=1)]


def run(args: argparse.Namespace) -> int:
    if args.days < 0:
        raise UsageError(f"--days: must be >= 0 (got {args.days})")
    # Imported here: Dagster takes seconds to import and the other subcommands do not need it.
    from dispatch_pipeline.defs.automation.sensors import sync_site_partitions
    from dispatch_pipeline.defs.local_runs import build_local_job, run_site_day
    from dispatch_pipeline.defs.partitions import SiteDay
    from dispatch_pipeline.defs.resources import DispatchStorage
    from dispatch_pipeline.defs.resources_map import pipeline_resources
    from dispatch_pipeline.defs.stored_runs import latest_results
    from dispatch_pipeline.demo import demo_forecast, demo_sites
    from dispatch_pipeline.storage import database_url, open_database, save_forecast, upsert_site

    home = dagster_home()
    instance, fallback_reason = open_instance(home)
    if fallback_reason:
        print(f"Dagster instance: temporary ({fallback_reason}); these runs will not show in the UI.")
    else:
        print(f"Dagster instance: {home}")
    url = args.database_url or database_url()
    engine = open_database(url)
    print(f"Application database: {_safe(url)}")

    sites = demo_sites()
    today = dt.datetime.now(dt.UTC).date()
    dates = demo_dates(today, args.days)
    issued_at = dt.datetime.now(dt.UTC)
    for site in sites:
        upsert_site(engine, site)
        for date in dates:
            save_forecast(engine, site.site_id, demo_forecast(site, date), issued_at)
    sync_site_partitions(instance, [site.site_id for site in sites])
    print(f"Registered {len(sites)} demo sites; forecasts for {dates[0]} .. {dates[-2]} and {dates[-1]}")

    job = build_local_job(pipeline_resources(storage=DispatchStorage(database_url=url)))
    days = [SiteDay(site.site_id, date) for site in sites for date in dates]
    started = time.perf_counter()
    failures = []
    for day in days:
        result = run_site_day(job, instance, day, tags={"dispatch/source": "demo"})
        if not result.success:
            failures.append(day)
        print(f"  {'ok    ' if result.success else 'FAILED'} {day}  (run {result.run_id[:8]})", flush=True)
    elapsed = time.perf_counter() - started
    print(f"Materialised {len(days) - len(failures)} of {len(days)} site-days in {elapsed:.1f} s\n")

    stored = latest_results(engine, [day for day in days if day not in failures])
    print_summary(stored, sites)
    print(
        "\nOpen the Dagster UI to see lineage, checks and plots:\n"
        "  dagster dev -w workspace.yaml      (or: dg dev)\n"
        "  then http://127.0.0.1:3000  (Assets > dispatch_schedule > Partitions)"
    )
    if fallback_reason:
        print("  (set the DAGSTER_PG_* variables, or DAGSTER_HOME to a SQLite instance, to keep the runs)")
    return 1 if failures else 0


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


def _safe(url: str) -> str:
    """The URL without its password, for printing."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
