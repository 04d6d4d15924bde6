"""What one backfill run costs, counted in instructions: repeatable where seconds are not.

    python bench/run_instructions.py                        # runs of 260 and 365 partitions
    python bench/run_instructions.py --partitions 30 60     # a quick look

CPU seconds on a shared virtual machine drift by 10% and more within minutes, which hides any
change smaller than that. Valgrind's callgrind counts the instructions a process executes, the
same to about 0.2% from one run to the next whatever else the machine does, so a change of 1%
to a run's cost shows. It is slow (about 50x), so it measures one run process at a time.

Each measured run is a new interpreter executing one backfill chunk of one site exactly as
bench/backfill_throughput.py does (code location import, instance on PostgreSQL, the job with
its IO managers and checks, solves on a solver service outside the count), once for the
pipeline and once for bench/dagster_floor.py's assets that do nothing, over the same partitions
and instance. Two sizes of run give each a fixed cost per run (interpreter, imports, run start)
and a cost per partition. Both sizes should lie on the same side of the instance's
planned_event_subsets_above (250) and of the 250-partition plot limit, or the fit mixes two paths.
Every kind of run is executed once untimed first, so the counts are of re-materialisations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SITE_ID = "BENCH_000"
KINDS = ("pipeline", "dagster_floor")
COLLECTED = re.compile(r"Collected : (\d+)")


def run_child(kind: str, first: str, last: str) -> None:
    """Execute one run in this process (under valgrind, when measured)."""
    sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]  # the runs' reconstructable jobs
    if kind == "pipeline":
        from backfill_throughput import _run_chunk

        service = (os.environ["BENCH_SOLVER_ADDRESS"], os.environ["BENCH_SOLVER_KEY"])
        ok, _, _ = _run_chunk(os.environ["BENCH_APP_URL"], 3000, 2, service, SITE_ID, first, last)
    else:
        from dagster_floor import _run

        ok, _ = _run(SITE_ID, first, last)
    sys.exit(0 if ok else 1)


def child_command(kind: str, first: str, last: str) -> list[str]:
    """This script executing one run in a new interpreter."""
    return [sys.executable, __file__, "--child", kind, first, last]


def count_instructions(kind: str, first: str, last: str, env: dict[str, str]) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child_command(kind, first, last)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{kind} run {first}..{last} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, nargs=2, default=(260, 365), metavar=("SMALL", "LARGE"))
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FIRST", "LAST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    small, large = sorted(args.partitions)
    if small == large:
        raise SystemExit("--partitions: two different sizes are needed to separate fixed and per-partition cost")

    sys.path.insert(0, str(BENCH_DIR.parent))
    from bench.backfill_throughput import (
        DAGSTER_PG_YAML,
        PG_URL,
        compile_package,
        make_fleet,
        postgres_available,
        scratch_postgres,
        settle_postgres,
        solver_service,
    )
    from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
    from dispatch_pipeline.dagster_instance import DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE

    if not postgres_available():
        raise SystemExit("needs the PostgreSQL server at 127.0.0.1:5432, as the backfill benchmark does")
    start = dt.date.fromisoformat(args.start)
    dates = [start + dt.timedelta(days=n) for n in range(large)]
    last_of = {n: dates[n - 1].isoformat() for n in (small, large)}
    import dagster as dg

    from dispatch_pipeline.storage import open_database

    with ExitStack() as stack:
        app_url = PG_URL.format(name=stack.enter_context(scratch_postgres("bench_app")))
        env = {
            **os.environ,
            **{name: os.environ.get(name, value) for name, value in EVENT_SETTINGS.items()},
            "BENCH_APP_URL": app_url,
            "PYTHONHASHSEED": "0",  # set and dict orders as well as the counts repeat
        }
        # An instance of its own per kind: the floor's assets bear the pipeline's asset keys.
        env_of = {}
        for kind in KINDS:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench_instructions_{kind}_")))
            (home / "dagster.yaml").write_text(
                DAGSTER_PG_YAML.format(
                    name=stack.enter_context(scratch_postgres("bench_dagster")),
                    planned_event_subsets_above=DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE,
                )
            )
            with dg.DagsterInstance.from_config(str(home)) as instance:
                instance.add_dynamic_partitions("sites", [SITE_ID])
            env_of[kind] = {**env, "DAGSTER_HOME": str(home)}
        address, key, _ = stack.enter_context(solver_service(Path(env_of["pipeline"]["DAGSTER_HOME"]), 2))
        env_of["pipeline"].update(BENCH_SOLVER_ADDRESS=address, BENCH_SOLVER_KEY=key)
        make_fleet(open_database(app_url), 1, dates)
        compile_package()
        settle_postgres(app_url)
        first = dates[0].isoformat()
        for kind in KINDS:
            warm = subprocess.run(
                child_command(kind, first, last_of[large]),
                env=env_of[kind], capture_output=True, text=True,
            )
            if warm.returncode != 0:
                raise SystemExit(f"the untimed {kind} run failed:\n{warm.stderr[-3000:]}")
        print(f"counting instructions of {len(KINDS) * 2} runs under callgrind, two at a time (about 50x slower)")
        jobs = [(kind, n) for kind in KINDS for n in (small, large)]

        def count(job: tuple[str, int]) -> int:
            kind, partitions = job
            return count_instructions(kind, first, last_of[partitions], env_of[kind])

        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(jobs, pool.map(count, jobs), strict=True))

    print(f"\n{'instructions (G)':<28}{small:>10} partitions{large:>10} partitions"
          f"{'fixed per run':>16}{'per partition':>16}")
    fits = {}
    for kind in KINDS:
        per_partition = (counts[kind, large] - counts[kind, small]) / (large - small)
        fixed = counts[kind, large] - per_partition * large
        fits[kind] = fixed, per_partition
        label = "pipeline run" if kind == "pipeline" else "Dagster alone (floor)"
        print(f"{label:<28}{counts[kind, small] / 1e9:>21.2f}{counts[kind, large] / 1e9:>21.2f}"
              f"{fixed / 1e9:>14.2f} G{per_partition / 1e6:>14.1f} M")
    own_fixed = fits["pipeline"][0] - fits["dagster_floor"][0]
    own_partition = fits["pipeline"][1] - fits["dagster_floor"][1]
    print(f"{'the pipeline beyond Dagster':<28}{'':>42}{own_fixed / 1e9:>14.2f} G{own_partition / 1e6:>14.1f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
