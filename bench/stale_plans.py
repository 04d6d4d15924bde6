"""Time what `stale_plan_sensor` asks the database at each evaluation: which of a fleet's days
ahead have a latest plan older than a forecast issued or rewritten since (default 1,000 sites x
2 days).

    .venv/bin/python bench/stale_plans.py                 # scratch PostgreSQL database
    .venv/bin/python bench/stale_plans.py --sites 100 --url sqlite:////tmp/stale.sqlite

Each site-day gets a forecast issue and a stored plan that read it; a tenth of the sites then get
a newer issue of their first day's morning, and another tenth the same issue of it loaded again
with other values. Only `stale_plans` is timed, not filling the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.storage_write import scratch_postgres, synthetic_results
from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.storage import load_forecast, open_database, save_forecasts, save_runs
from dispatch_pipeline.storage.forecasts import latest_write
from dispatch_pipeline.storage.staleness import DayWindow, stale_plans

DAYS_PER_SITE = 2
READ_ISSUE = dt.datetime(2014, 12, 31, 9, 0, tzinfo=dt.UTC)
NEWER_ISSUE = READ_ISSUE + dt.timedelta(hours=6)


def run(url: str, sites: int, repeat: int) -> None:
    engine = open_database(url)
    print(f"database: {engine.url.render_as_string(hide_password=True)}")
    results = synthetic_results(sites * DAYS_PER_SITE, sites)
    windows = {}
    frames: dict[str, list[pd.DataFrame]] = {}
    for result in results:
        day = local_day(result.date, result.timezone, result.resolution_minutes)
        windows[(result.site_id, result.date)] = DayWindow(result.site_id, result.date, day.start_utc, day.end_utc)
        frames.setdefault(result.site_id, []).append(
            pd.DataFrame({"ts": day.timestamps(), "load_kw": np.full(day.intervals, 50.0), "pv_kw": 0.0})
        )
    save_forecasts(engine, {site_id: pd.concat(days) for site_id, days in frames.items()}, READ_ISSUE)
    # One load: every row was written at the same time, which each plan keeps as the pipeline does.
    first = windows[(results[0].site_id, results[0].date)]
    written = latest_write(load_forecast(engine, first.site_id, first.start_utc, first.end_utc))
    save_runs(
        engine,
        [result.model_copy(update={"forecast_issued_at": READ_ISSUE, "forecast_stored_at": written}) for result in results],
        source="dagster",
    )
    ordered = sorted(frames.items())
    morning = {site_id: days[0].iloc[:32] for n, (site_id, days) in enumerate(ordered) if n % 10 == 0}
    save_forecasts(engine, morning, NEWER_ISSUE)
    corrected = {site_id: days[0].iloc[:32].assign(load_kw=55.0) for n, (site_id, days) in enumerate(ordered) if n % 10 == 5}
    save_forecasts(engine, corrected, READ_ISSUE)
    print(
        f"{len(results)} plans of {sites} sites stored; {len(morning)} sites issued anew, "
        f"{len(corrected)} loaded again under the issue their plans read"
    )
    for attempt in range(1, repeat + 1):
        started = time.perf_counter()
        stale = stale_plans(engine, windows)
        elapsed = time.perf_counter() - started
        print(f"stale_plans #{attempt}: {elapsed * 1000:.0f} ms for {len(windows)} site-days, {len(stale)} stale")
    assert len(stale) == len(morning) + len(corrected), (len(stale), len(morning), len(corrected))


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
