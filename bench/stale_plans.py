"""Time what `stale_plan_sensor` asks the database at each evaluation: which of a fleet's days
ahead have a latest plan older than a forecast issued since (default 1,000 sites x 2 days).

    .venv/bin/python bench/stale_plans.py                 # scratch PostgreSQL database
    .venv/bin/python bench/stale_plans.py --sites 100 --url sqlite:////tmp/stale.sqlite

Each site-day gets a stored plan and a forecast issue it read; a tenth of the sites then get a
newer issue of their first day's morning. Only `stale_plans` is timed, not filling the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import pandas as pd

from bench.storage_write import scratch_postgres, synthetic_results
from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.storage import open_database, save_forecasts, save_runs
from dispatch_pipeline.storage.staleness import DayWindow, stale_plans

DAYS_PER_SITE = 2
READ_ISSUE = dt.datetime(2014, 12, 31, 9, 0, tzinfo=dt.UTC)
NEWER_ISSUE = READ_ISSUE + dt.timedelta(hours=6)


def run(url: str, sites: int, repeat: int) -> None:
    engine = open_database(url)
    print(f"database: {engine.url.render_as_string(hide_password=True)}")
    results = [
        result.model_copy(update={"forecast_issued_at": READ_ISSUE})
        for result in synthetic_results(sites * DAYS_PER_SITE, sites)
    ]
    save_runs(engine, results, source="dagster")
    windows = {}
    frames: dict[str, list[pd.DataFrame]] = {}
    for result in results:
        day = local_day(result.date, result.timezone, result.resolution_minutes)
        windows[(result.site_id, result.date)] = DayWindow(result.site_id, result.date, day.start_utc, day.end_utc)
        frames.setdefault(result.site_id, []).append(
            pd.DataFrame({"ts": day.timestamps(), "load_kw": np.full(day.intervals, 50.0), "pv_kw": 0.0})
        )
    save_forecasts(engine, {site_id: pd.concat(days) for site_id, days in frames.items()}, READ_ISSUE)
    morning = {
        site_id: days[0].iloc[:32] for n, (site_id, days) in enumerate(sorted(frames.items())) if n % 10 == 0
    }
    save_forecasts(engine, morning, NEWER_ISSUE)
    print(f"{len(results)} plans of {sites} sites stored; {len(morning)} sites issued anew")
    for attempt in range(1, repeat + 1):
        started = time.perf_counter()
        stale = stale_plans(engine, windows)
        elapsed = time.perf_counter() - started
        print(f"stale_plans #{attempt}: {elapsed * 1000:.0f} ms for {len(windows)} site-days, {len(stale)} stale")
    assert len(stale) == len(morning), (len(stale), len(morning))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--url", help="SQLAlchemy URL (default: a scratch PostgreSQL database)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.url:
        run(args.url, args.sites, args.repeat)
    else:
        with scratch_postgres() as url:
            run(url, args.sites, args.repeat)


if __name__ == "__main__":
    main()
