"""Time `save_runs` on N synthetic site-days: the backfill path (default 3,650 days x 96 points).

    .venv/bin/python bench/storage_write.py                      # scratch PostgreSQL database
    .venv/bin/python bench/storage_write.py --method executemany # compare the write paths
    .venv/bin/python bench/storage_write.py --url sqlite:////tmp/bench.sqlite

The machine's load matters (the database server shares the CPUs): note `uptime` with the numbers.
Without --url a scratch database is created on the PostgreSQL at 127.0.0.1:5432 (user postgres)
and dropped afterwards. Only save_runs is timed, not building the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.request import Weights
from dispatch_pipeline.core.result import BINDING_NAMES, DispatchResult, Kpis, Point
from dispatch_pipeline.storage import bulk, open_database, save_runs
from dispatch_pipeline.storage.runs import write as runs_write
from dispatch_pipeline.storage.tables import KPI_COLUMNS

ADMIN_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def synthetic_results(count: int, sites: int, seed: int = 0) -> list[DispatchResult]:
    rng = random.Random(seed)
    start = dt.date(2015, 1, 1)
    days_per_site = -(-count // sites)
    results = []
    for n in range(count):
        site, day = divmod(n, days_per_site)
        date = start + dt.timedelta(days=day)
        points = [
            Point(
                ts=ts,
                pv_set_kw=rng.uniform(0, 60),
                batt_ch_kw=rng.uniform(0, 50),
                batt_dis_kw=0.0,
                grid_imp_kw=rng.uniform(0, 80),
                grid_exp_kw=0.0,
                curtail_kw=0.0,
                soc=rng.uniform(0.1, 0.9),
                reason=f"Charging {rng.uniform(0, 50):.1f} kW from PV surplus (buy 0.22 MYR/kWh)",
                reason_code="charge_pv_surplus",
                binding=rng.sample(BINDING_NAMES, rng.randint(0, 2)),
                marginal_cost_per_kwh=rng.uniform(0, 0.5),
            )
            for ts in local_day(date, "Asia/Kuala_Lumpur", 15).iso_timestamps()
        ]
        results.append(
            DispatchResult(
                run_id=uuid.uuid4(),
                status="ok",
                fallback_used=False,
                solver="milp",
                objective_value=rng.uniform(10, 100),
                kpis=Kpis(**{name: rng.uniform(0, 100) for name in KPI_COLUMNS}),
                site_id=f"BENCH_{site:03d}",
                date=date,
                timezone="Asia/Kuala_Lumpur",
                resolution_minutes=15,
                milp_solver="highs",
                mip_gap=1e-5,
                solve_ms=rng.uniform(20, 500),
                timeout_ms=3000,
                objective_config=Weights(),
                points=points,
            )
        )
    return results


@contextmanager
def scratch_postgres() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    name = f"dispatch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_CONNINFO, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            from dispatch_pipeline.storage import close_engines

            close_engines()
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(url: str, count: int, sites: int, method: str, repeat: int) -> None:
    if method == "executemany":
        runs_write.bulk_insert = bulk.executemany_rows  # type: ignore[assignment]
    engine = open_database(url)
    print(f"database: {engine.url.render_as_string(hide_password=True)}  write path: {method}")
    started = time.perf_counter()
    results = synthetic_results(count, sites)
    points = sum(len(r.points) for r in results)
    print(f"built {count} results ({points} points) in {time.perf_counter() - started:.1f} s")
    for attempt in range(1, repeat + 1):
        if attempt > 1:  # runs are immutable: a repeat needs fresh ids
            results = [r.model_copy(update={"run_id": uuid.uuid4()}) for r in results]
        started, cpu_started = time.perf_counter(), time.process_time()
        save_runs(engine, results, source="cli")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(
            f"save_runs #{attempt}: {elapsed:.2f} s (client CPU {cpu:.2f} s)  "
            f"({count / elapsed:,.0f} runs/s, {2 * points / elapsed:,.0f} schedule+explanation rows/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--count", type=int, default=3650, help="site-days to save")
    parser.add_argument("--sites", type=int, default=10, help="spread over this many sites")
    parser.add_argument("--url", help="SQLAlchemy URL (default: a scratch PostgreSQL database)")
    parser.add_argument(
        "--method",
        choices=["auto", "executemany"],
        default="auto",
        help="auto: COPY on PostgreSQL/psycopg, executemany elsewhere",
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.url:
        run(args.url, args.count, args.sites, args.method, args.repeat)
    else:
        with scratch_postgres() as url:
            run(url, args.count, args.sites, args.method, args.repeat)


if __name__ == "__main__":
    main()
