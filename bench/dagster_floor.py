"""What Dagster alone costs a backfill run of the pipeline's shape: the floor under its overhead.

    python bench/dagster_floor.py            # 3 runs of 365 partitions
    python bench/dagster_floor.py --runs 5 --days 90

The same five site x date assets (forecast, tariff -> schedule -> explanations, KPIs), the same
partitions, backfill policy, in-process executor, instance (PostgreSQL as dagster_home/dagster.yaml
configures it, on a scratch database; else SQLite) and event batching as bench/backfill_throughput.py,
but assets that do nothing and an IO manager that stores nothing. Each run is a new process
executing the job as a launched run does, so its CPU time is the interpreter, Dagster's import,
instance and run start, and one materialisation event per asset and partition: what every backfill
run pays before the pipeline reads, solves or stores anything. Compare it with the CPU-s per run
process that bench/backfill_throughput.py prints.
"""


import argparse
import datetime as dt
import io
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import dagster as dg

# Only Dagster at the top: a run process re-imports this module, and its CPU time is meant to be
# Dagster's. The partitions have the pipeline's shape (dispatch_pipeline/defs/partitions.py):
# dynamic sites x daily dates, keys "date|site", and its backfill policy.
SITES_PARTITIONS_NAME = "sites"
site_day_partitions = dg.MultiPartitionsDefinition(
    {
        "site": dg.DynamicPartitionsDefinition(name=SITES_PARTITIONS_NAME),
        "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=3),
    }
)
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=365)
warnings.filterwarnings("ignore", category=dg.BetaWarning)
IO_MANAGER_KEY = "stores_nothing"


class StoresNothing(dg.ConfigurableIOManager):
    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        pass

    def load_input(self, context: dg.InputContext) -> None:
        return None


def _idle_asset(name: str, deps: tuple[str, ...] = ()) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=list(deps),
        partitions_def=site_day_partitions,
        backfill_policy=BACKFILL_POLICY,
        io_manager_key=IO_MANAGER_KEY,
    )
    def idle(context: dg.AssetExecutionContext) -> dict[str, None]:
        return dict.fromkeys(context.partition_keys)

    return idle


ASSETS = [
    _idle_asset("site_forecast"),
    _idle_asset("site_tariff"),
    _idle_asset("dispatch_schedule", ("site_forecast", "site_tariff")),
    _idle_asset("dispatch_explanations", ("dispatch_schedule",)),
    _idle_asset("dispatch_kpis", ("dispatch_schedule",)),
]
floor_job = dg.define_asset_job("floor_job", selection=[asset.key for asset in ASSETS])
defs = dg.Definitions(
    assets=ASSETS, jobs=[floor_job], resources={IO_MANAGER_KEY: StoresNothing()}, executor=dg.in_process_executor
)


def idle_pipeline_job() -> dg.JobDefinition:
    """For `build_reconstructable_job`."""
    return defs.resolve_job_def("floor_job")


def _run(site_id: str, first: str, last: str) -> tuple[bool, float]:
    """One run in this new process, as bench/backfill_throughput.py runs a chunk; (ok, CPU-s)."""
    sys.stdout = io.StringIO()  # the run's event log lines
    tags = {
        "dagster/asset_partition_range_start": f"{first}|{site_id}",
        "dagster/asset_partition_range_end": f"{last}|{site_id}",
    }
    job = dg.build_reconstructable_job(Path(__file__).stem, idle_pipeline_job.__name__)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, tags=tags)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return result.success, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--days", type=int, default=365, help="partitions per run (one site's dates)")
    parser.add_argument("--start", default="2024-01-01")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.backfill_throughput import (
        DAGSTER_PG_YAML,
        postgres_available,
        postgres_cpu_seconds,
        scratch_postgres,
    )
    from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
    from dispatch_pipeline.dagster_instance import DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE

    for name, value in EVENT_SETTINGS.items():  # as deployments set them
        os.environ.setdefault(name, value)
    start = dt.date.fromisoformat(args.start)
    last = start + dt.timedelta(days=args.days - 1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the runs' reconstructable job
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_floor_home_")))
        use_pg = postgres_available()
        if use_pg:
            (home / "dagster.yaml").write_text(
                DAGSTER_PG_YAML.format(
                    name=stack.enter_context(scratch_postgres("bench_floor")),
                    planned_event_subsets_above=DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE,
                )
            )
        else:
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        sites = [f"FLOOR_{n:03d}" for n in range(args.runs)]
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(SITES_PARTITIONS_NAME, sites)
        print(f"instance: {'PostgreSQL' if use_pg else 'SQLite'}; {args.runs} run(s) of {args.days} partitions x 5 assets")

        cpu, pg_cpu = [], postgres_cpu_seconds()
        context = multiprocessing.get_context("spawn")
        for site in sites:  # one at a time: each run's own CPU, nothing else competing
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                ok, seconds = pool.submit(_run, site, start.isoformat(), last.isoformat()).result()
            if not ok:
                print(f"run for {site} failed")
                return 1
            cpu.append(seconds)
            print(f"  run {len(cpu)}: {seconds:.2f} CPU-s", flush=True)
        pg_cpu = None if pg_cpu is None else (postgres_cpu_seconds() - pg_cpu) / len(sites)
    print(f"\nDagster alone: median {statistics.median(cpu):.2f} CPU-s per run process"
          + ("" if pg_cpu is None else f", PostgreSQL {pg_cpu:.2f} CPU-s per run")
          + f"; {5 * args.days} materialisation events per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
