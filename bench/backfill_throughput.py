"""Backfill throughput: N sites x D days through Dagster, beside the raw solve of the same days.

    python bench/backfill_throughput.py                     # 10 sites x 365 days (the target)
    python bench/backfill_throughput.py --sites 2 --days 30 # a quick look
    python bench/backfill_throughput.py --day-ahead 100     # one day-ahead tick for 100 sites

Dagster runs on a persistent instance in a temporary DAGSTER_HOME (PostgreSQL storage when the
server at 127.0.0.1:5432 answers, as dagster_home/dagster.yaml configures it; else SQLite), the
application data in PostgreSQL (else SQLite). Runs are chunked as the assets' backfill policy
chunks an asset backfill (one site, up to --chunk dates per run) and run --concurrency at a time
(default 2, one per core). Each is created in the instance and started by dagster.yaml's run
launcher (WarmRunLauncher: a process forked from its fork server, which executes the run as
`dagster api execute_run` does), as the daemon's run queue starts them; the queue's polling
interval is not in the figure. A run's end is seen by watching its process through the launcher,
as run monitoring does, and then reading its status once: the daemon looks at runs every few
seconds, and reading every run in flight from the instance 20 times a second cost this process
and PostgreSQL about 8 CPU-s per backfill, more than the daemon would. With --launcher
new-interpreter each run is instead a new interpreter executing the code location's job
(`execute_job`), as Dagster's DefaultRunLauncher starts runs: interpreter, Dagster and library
imports are then paid by every run. Runs solve on a solver service started for the benchmark,
as deployed (`dispatch-pipeline solver serve`, --parallelism workers, warm before the clock
starts); with --no-solver-service each run starts its own workers instead, and their start-up is
in the figure too. The day-ahead mode runs the
tick's requests in this process, one after another.

Raw solve: the same site-days through the core alone (build_problem, MILP with fallback,
result assembly with explanations and KPIs), on the same number of warm solver workers. It is
timed just before and just after the backfill, and the ratio uses their mean: the machine's speed
drifts by several per cent over minutes, and one raw pass minutes away from the backfill would
put that drift into the ratio. With --rounds N the backfill is repeated N times (each adds a
run per partition, as re-materialising does), each between two raw passes, and the median ratio
is printed. The machine's speed can also swing by half within minutes (a shared host): the
solver workers' CPU-s for the same solves, in the backfill and in the raw passes, measure it, and
the ratio scaled by them is printed beside the plain one. Scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import cpu_seconds, descendants, is_solver_worker, stop

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
# The run launcher of dagster_home/dagster.yaml.
REPO_RUN_LAUNCHER = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "dagster_home" / "dagster.yaml").read_text()
)["run_launcher"]
TEMPLATES = ("KL_MALL", "BERLIN_DEPOT", "PHOENIX_OFFICE")
# The storage of dagster_home/dagster.yaml, on a scratch database.
DAGSTER_PG_YAML = """\
storage:
  custom:
    module: dispatch_pipeline.dagster_instance
    class: PooledPostgresStorage
    config:
      postgres_db:
        username: postgres
        password: ""
        hostname: 127.0.0.1
        db_name: {name}
        port: 5432
        scheme: postgresql+psycopg2
      planned_event_subsets_above: {planned_event_subsets_above}
telemetry:
  enabled: false
"""


def check_solved_on_service(runs: int, logs_before: dict[Path, int]) -> None:
    """Say so if a run solved on its own workers (the solver service was not reachable), from what
    the run logs gained since `logs_before` (their sizes in bytes then)."""
    on_service = 0
    for log in run_logs():
        with log.open("rb") as lines:
            lines.seek(logs_before.get(log, 0))
            on_service += lines.read().count(b"on solver service")
    if on_service != runs:
        print(f"  only {on_service} of {runs} run(s) solved on the solver service (see the run logs)")


def run_logs() -> list[Path]:
    """Where the run processes' event log lines go: a file per run started in a new interpreter,
    one file for the fork server's."""
    return sorted(Path(os.environ["DAGSTER_HOME"]).glob("run*.log"))


def machine_cpu_seconds() -> float:
    """CPU time spent by the whole machine so far (every process, PostgreSQL's included; not the
    time a hypervisor gave to other guests)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds() -> float | None:
    """CPU time of the local PostgreSQL server so far (its live processes, and the backends that
    have exited); None when it does not run on this machine."""
    pids = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _command(p) == "postgres"]
    if not pids:
        return None
    ticks = 0
    for pid in pids:
        try:
            fields = (pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if _command(Path("/proc") / fields[1]) != "postgres":  # the postmaster: its exited backends
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _command(pid: Path) -> str:
    try:
        return (pid / "comm").read_text().strip()
    except OSError:
        return ""


def solver_workers_cpu_seconds(parent: int) -> float:
    """CPU time so far of the solver worker processes below `parent` (a worker killed meanwhile,
    and what it used, is not in it)."""
    return sum(cpu_seconds(pid) for pid in descendants(parent) if is_solver_worker(pid))


def postgres_available() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN).close()
        return True
    except psycopg.OperationalError:
        return False


@contextmanager
def scratch_postgres(prefix: str):
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            from dispatch_pipeline.storage import close_engines

            close_engines()
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def settle_postgres(app_url: str) -> None:
    """Statistics for the freshly written tables and their pages flushed, so that neither timed
    phase shares the machine with autovacuum or a checkpoint caused by the setup (a deployment's
    tables were analysed long before a backfill)."""
    import psycopg

    with psycopg.connect(app_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        connection.execute("CHECKPOINT")


def make_fleet(engine, count: int, dates: list[dt.date]):
    """`count` sites cycling through the demo templates, each with forecasts for `dates`."""
    from dispatch_pipeline.demo import demo_forecast, demo_site
    from dispatch_pipeline.storage import save_forecast, upsert_site

    # Copies of a template share its timezone, so they can share its generated forecasts.
    forecasts = {}
    for template in TEMPLATES[: min(count, len(TEMPLATES))]:
        forecasts[template] = pd.concat([demo_forecast(template, d) for d in dates], ignore_index=True)
    issued_at = dt.datetime.now(dt.UTC)
    sites = []
    for n in range(count):
        template = TEMPLATES[n % len(TEMPLATES)]
        site = demo_site(template).model_copy(update={"site_id": f"BENCH_{n:03d}"})
        upsert_site(engine, site)
        save_forecast(engine, site.site_id, forecasts[template], issued_at)
        sites.append(site)
    return sites


def compile_package() -> None:
    """Byte-compile the package's sources, as an installed image has them. Every run is a new
    interpreter, and from an editable install with PYTHONDONTWRITEBYTECODE set each would compile
    the package again (0.2-0.3 CPU-s per run process) - a cost a deployment does not pay."""
    import compileall

    import dispatch_pipeline

    compileall.compile_dir(Path(dispatch_pipeline.__file__).parent, quiet=1)


def raw_solve_seconds(engine, sites, dates, parallelism: int, timeout_ms: int) -> tuple[float, float, float, int]:
    """Wall time of the core alone on the same site-days; (seconds, machine CPU-s, CPU-s of the
    solver workers, fallbacks)."""
    from dispatch_pipeline.core.problem import build_problem
    from dispatch_pipeline.core.site import site_request
    from dispatch_pipeline.core.solve import assemble_result, choose_schedule
    from dispatch_pipeline.defs.resources import shared_runner
    from dispatch_pipeline.storage import load_forecast

    runner = shared_runner(parallelism)
    runner.warm()
    # Inputs are read before the clock starts: this is the solve alone.
    requests = []
    for site in sites:
        for date in dates:
            day = site.local_day(date)
            frame = load_forecast(engine, site.site_id, day.start_utc, day.end_utc)
            requests.append(
                (site, site_request(site, date, frame["load_kw"], frame["pv_kw"], timeout_ms=timeout_ms))
            )

    def solve(item):
        site, request = item
        started = time.perf_counter()
        problem = build_problem(request)
        outcome = choose_schedule(problem, "highs", runner)
        solve_ms = (time.perf_counter() - started) * 1000
        return assemble_result(problem, outcome, solve_ms, "highs", site.currency)

    started, cpu, workers_cpu = time.perf_counter(), machine_cpu_seconds(), solver_workers_cpu_seconds(os.getpid())
    with ThreadPoolExecutor(max_workers=runner.size) as pool:
        results = list(pool.map(solve, requests))
    seconds, cpu = time.perf_counter() - started, machine_cpu_seconds() - cpu
    workers_cpu = solver_workers_cpu_seconds(os.getpid()) - workers_cpu
    return seconds, cpu, workers_cpu, sum(r.status == "fallback" for r in results)


@contextmanager
def solver_service(directory: Path, workers: int):
    """`dispatch-pipeline solver serve` on a Unix socket: (address, key, process id)."""
    from dispatch_pipeline.core.solver_service import wait_until_serving

    address, key = str(directory / "solver.sock"), uuid.uuid4().hex
    service = subprocess.Popen(
        [sys.executable, "-m", "dispatch_pipeline.cli", "solver", "serve", "--address", address,
         "--workers", str(workers)],
        env={**os.environ, "DISPATCH_SOLVER_KEY": key},
    )
    try:
        wait_until_serving(address)
        yield address, key, service.pid
    finally:
        stop(service)


def code_location_job():
    """The code location's job of every pipeline asset (the one the day-ahead schedule starts;
    an asset backfill's runs execute the same assets, resources and executor), as a run worker
    loads it: for `build_reconstructable_job`."""
    from dispatch_pipeline.definitions import defs
    from dispatch_pipeline.defs.automation.jobs import DAY_AHEAD_JOB_NAME

    return defs.resolve_job_def(DAY_AHEAD_JOB_NAME)


def chunk_run_settings(timeout_ms: int, parallelism: int, service, site_id: str, first: str, last: str):
    """A backfill run's tags (its partition range) and run config (the solver's settings)."""
    from dispatch_pipeline.defs.partitions import SiteDay, partition_range_tags

    days = [SiteDay(site_id, dt.date.fromisoformat(first)), SiteDay(site_id, dt.date.fromisoformat(last))]
    tags = {"dagster/backfill": "bench", **partition_range_tags(days)}
    solver_config = {"timeout_ms": timeout_ms, "parallelism": parallelism}
    if service:
        solver_config.update(service=service[0], service_key=service[1])
    return tags, {"resources": {"solver": {"config": solver_config}}}


def run_environment(app_url: str, service) -> None:
    """What a run process reads from its environment: the application database, the solver service."""
    from dispatch_pipeline.core.solver_service import ADDRESS_ENV, KEY_ENV

    os.environ["DATABASE_URL"] = app_url
    if service:
        os.environ[ADDRESS_ENV], os.environ[KEY_ENV] = service[:2]


def _run_chunk(app_url: str, timeout_ms: int, parallelism: int, service: tuple[str, str, int] | tuple[str, str] | None,
               site_id: str, first: str, last: str):
    """One backfill run in a new interpreter, as Dagster's DefaultRunLauncher starts it: the code
    location loaded from `dispatch_pipeline.definitions` with its resources read from the
    environment, the instance from DAGSTER_HOME, the job executed by `execute_job` (no output
    capture, unlike `execute_in_process`); (ok, seconds, CPU-s of this process)."""
    started = time.perf_counter()
    # The run's event log lines go where a launched run's go: to a file, not this terminal.
    sys.stdout = sys.stderr = open(Path(os.environ["DAGSTER_HOME"]) / f"run_{site_id}_{first}.log", "a")  # noqa: SIM115
    run_environment(app_url, service)
    import dagster as dg

    tags, run_config = chunk_run_settings(timeout_ms, parallelism, service, site_id, first, last)
    job = dg.build_reconstructable_job(Path(__file__).stem, code_location_job.__name__)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, tags=tags, run_config=run_config)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return result.success, time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def backfill_chunks(sites, dates, chunk: int) -> list[tuple[str, str, str]]:
    """(site, first date, last date) of each run, as the assets' backfill policy chunks a backfill."""
    return [
        (site.site_id, dates[i].isoformat(), dates[min(i + chunk, len(dates)) - 1].isoformat())
        for site in sites
        for i in range(0, len(dates), chunk)
    ]


def new_interpreter_backfill_seconds(app_url, timeout_ms, parallelism, service, chunks, concurrency):
    """The backfill's runs, `concurrency` at a time, each in a new interpreter (spawned), as the
    DefaultRunLauncher starts them; (seconds, failed runs, CPU-s of the run processes)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    failed, run_cpu = 0, 0.0
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=concurrency, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = [pool.submit(_run_chunk, app_url, timeout_ms, parallelism, service, *c) for c in chunks]
        for n, (future, (site_id, first, last)) in enumerate(zip(futures, chunks, strict=True), 1):
            ok, seconds, cpu = future.result()
            run_cpu += cpu
            failed += not ok
            print(f"  run {n}/{len(chunks)}: {site_id} {first}..{last} "
                  f"{'ok' if ok else 'FAILED'} in {seconds:.1f} s (process start included)", flush=True)
    return time.perf_counter() - started, failed, run_cpu


@contextmanager
def output_to(path: Path):
    """This process's stdout and stderr (the file descriptors, which children inherit) into `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def launched_backfill_seconds(instance, timeout_ms, parallelism, service, chunks, concurrency):
    """The backfill's runs created in the instance and started by its run launcher (dagster.yaml's
    WarmRunLauncher), `concurrency` at a time, as the daemon's run queue starts them (without its
    polling interval); (seconds, failed runs, CPU-s of the run processes)."""
    import dagster as dg
    from dagster._core.launcher import WorkerStatus

    from bench.processes import command_line, reaped_children_cpu_seconds

    launcher = instance.run_launcher
    with output_to(Path(os.environ["DAGSTER_HOME"]) / "runs.log"):
        # Its run processes write their event log lines where a daemon's would: to a file.
        launcher.start_fork_server()
    fork_server = next(pid for pid in descendants(os.getpid()) if "forkserver" in command_line(pid))
    reaped_cpu = reaped_children_cpu_seconds(fork_server)
    job = dg.build_reconstructable_job(Path(__file__).stem, code_location_job.__name__)
    job_def, origin = job.get_definition(), job.get_python_origin()
    waiting, in_flight, failed = list(chunks), {}, 0
    started = time.perf_counter()
    while waiting or in_flight:
        while waiting and len(in_flight) < concurrency:
            chunk = waiting.pop(0)
            tags, run_config = chunk_run_settings(timeout_ms, parallelism, service, *chunk)
            run = instance.create_run_for_job(job_def, run_config=run_config, tags=tags, job_code_origin=origin)
            instance.launch_run(run.run_id, workspace=None)
            # With the process id the launcher tagged it with, which the watch below looks at.
            in_flight[run.run_id] = (chunk, time.perf_counter(), instance.get_run_by_id(run.run_id))
        time.sleep(0.05)
        for run_id, ((site_id, first, last), run_started, launched) in list(in_flight.items()):
            # Whether its process is still there, as run monitoring asks the launcher: reading
            # the run from the instance 20 times a second would cost more CPU than the
            # daemon's polling every few seconds does.
            if launcher.check_run_worker_health(launched).status == WorkerStatus.RUNNING:
                continue
            run = instance.get_run_by_id(run_id)
            if run.is_finished:
                del in_flight[run_id]
                ok = run.status == dg.DagsterRunStatus.SUCCESS
                failed += not ok
                print(f"  run {len(chunks) - len(waiting) - len(in_flight)}/{len(chunks)}: {site_id} {first}..{last} "
                      f"{'ok' if ok else 'FAILED'} in {time.perf_counter() - run_started:.1f} s", flush=True)
    seconds = time.perf_counter() - started
    return seconds, failed, reaped_children_cpu_seconds(fork_server) - reaped_cpu


def day_ahead_seconds(job, instance, definitions, storage, sites) -> tuple[float, int, int]:
    """One 14:00 tick for every site (all in one timezone): evaluate the schedule, run what it
    requests, one run after another; (seconds, site-days stored, runs)."""
    import dagster as dg

    from dispatch_pipeline.defs.automation.day_ahead import day_ahead_dispatch_schedule
    from dispatch_pipeline.defs.local_runs import run_requested

    tick = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(6, 0), tzinfo=dt.UTC)  # 14:00 in KL
    started = time.perf_counter()
    with dg.build_schedule_context(
        scheduled_execution_time=tick, instance=instance,
        repository_def=definitions.get_repository_def(), resources={"storage": storage},
    ) as context:
        requests = day_ahead_dispatch_schedule.evaluate_tick(context).run_requests or []
    stored = 0
    for request in requests:
        result = run_requested(job, instance, request)
        stored += sum(event.asset_key.to_user_string() == "dispatch_kpis"
                      for event in result.get_asset_materialization_events())
    return time.perf_counter() - started, stored, len(requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", default="2024-01-01", help="first date (default 2024-01-01)")
    parser.add_argument("--chunk", type=int, default=365, help="partitions per run (backfill policy)")
    parser.add_argument("--parallelism", type=int, default=os.cpu_count() or 1, help="solver workers")
    parser.add_argument("--timeout-ms", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="backfill runs in flight at once (the run queue's backfill limit is 4)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite for both stores, even with PostgreSQL up")
    parser.add_argument("--planned-event-subsets", action=argparse.BooleanOptionalAction, default=True,
                        help="runs of more than 250 partitions plan them in one event per asset, as "
                             "the instance storage does (default); off: one per partition, Dagster's default")
    parser.add_argument("--skip-raw", action="store_true", help="skip the raw solve timing")
    parser.add_argument("--rounds", type=int, default=1,
                        help="backfill this many times, each between two raw passes; prints the median ratio")
    parser.add_argument("--solver-service", action=argparse.BooleanOptionalAction, default=True,
                        help="runs solve on a shared solver service (default), else on their own workers")
    parser.add_argument("--launcher", choices=("warm", "new-interpreter"), default="warm",
                        help="how run processes start: forked by dagster_home/dagster.yaml's WarmRunLauncher "
                             "(default), or each in a new interpreter, as Dagster's DefaultRunLauncher starts them")
    parser.add_argument("--day-ahead", type=int, default=0, metavar="N",
                        help="instead: time one day-ahead tick for N sites (in the KL timezone)")
    args = parser.parse_args()

    # Dagster's event settings as deployments have them (.env.example, Compose, Helm).
    from dispatch_pipeline.cli.dagster_home import EVENT_SETTINGS
    from dispatch_pipeline.dagster_instance import DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE

    for name, value in EVENT_SETTINGS.items():
        os.environ.setdefault(name, value)
    use_pg = not args.sqlite and postgres_available()
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_dagster_home_")))
        # Not the repository root: `solver serve` and Dagster's run processes apply a ./.env over
        # the environment (as `dagster dev` does), and a developer's would redirect the runs.
        stack.callback(os.chdir, os.getcwd())
        os.chdir(home)
        if use_pg:
            app_url = PG_URL.format(name=stack.enter_context(scratch_postgres("bench_app")))
            (home / "dagster.yaml").write_text(
                DAGSTER_PG_YAML.format(
                    name=stack.enter_context(scratch_postgres("bench_dagster")),
                    # Off: every run plans its partitions one event each, as Dagster does by default.
                    planned_event_subsets_above=(
                        DEFAULT_PLANNED_EVENT_SUBSETS_ABOVE if args.planned_event_subsets else 10**9
                    ),
                )
            )
        else:
            app_url = f"sqlite:///{home / 'dispatch.sqlite'}"
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with (home / "dagster.yaml").open("a") as instance_yaml:
            instance_yaml.write(yaml.safe_dump({"run_launcher": REPO_RUN_LAUNCHER}))
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"storage: {'PostgreSQL' if use_pg else 'SQLite'} (Dagster instance and application data)")

        import dagster as dg

        from dispatch_pipeline.defs.local_runs import build_local_job
        from dispatch_pipeline.defs.resources import DispatchSolver, DispatchStorage
        from dispatch_pipeline.defs.resources_map import pipeline_resources
        from dispatch_pipeline.storage import open_database

        engine = open_database(app_url)
        storage = DispatchStorage(database_url=app_url)
        resources = pipeline_resources(
            storage=storage, solver=DispatchSolver(timeout_ms=args.timeout_ms, parallelism=args.parallelism)
        )
        job = build_local_job(resources)
        instance = stack.enter_context(dg.DagsterInstance.get())

        if args.day_ahead:
            from dispatch_pipeline.definitions import ASSETS
            from dispatch_pipeline.defs.automation.day_ahead import day_ahead_dispatch_schedule
            from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
            from dispatch_pipeline.demo import demo_site

            tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
            t = time.perf_counter()
            # All copies of the KL site, so that every site is due at the same tick.
            from dispatch_pipeline.demo import demo_forecast
            from dispatch_pipeline.storage import save_forecast, upsert_site

            frame = demo_forecast("KL_MALL", tomorrow)
            sites = [demo_site("KL_MALL").model_copy(update={"site_id": f"TICK_{n:03d}"}) for n in range(args.day_ahead)]
            for site in sites:
                upsert_site(engine, site)
                save_forecast(engine, site.site_id, frame, dt.datetime.now(dt.UTC))
            instance.add_dynamic_partitions("sites", [s.site_id for s in sites])
            print(f"setup: {len(sites)} sites in {time.perf_counter() - t:.1f} s")
            definitions = dg.Definitions(assets=ASSETS, jobs=[day_ahead_dispatch_job],
                                         schedules=[day_ahead_dispatch_schedule], resources=resources)
            seconds, stored, runs = day_ahead_seconds(job, instance, definitions, storage, sites)
            print(f"\nday-ahead tick: {stored} of {len(sites)} site(s) planned and stored in {seconds:.1f} s "
                  f"in {runs} run(s), executed in this process")
            return 0

        start = dt.date.fromisoformat(args.start)
        dates = [start + dt.timedelta(days=n) for n in range(args.days)]
        # Started first: its workers warm up while the fleet is written, not while anything is timed.
        service = stack.enter_context(solver_service(home, args.parallelism)) if args.solver_service else None
        t = time.perf_counter()
        sites = make_fleet(engine, args.sites, dates)
        compile_package()
        instance.add_dynamic_partitions("sites", [s.site_id for s in sites])
        if use_pg:
            settle_postgres(app_url)
        print(f"setup: {len(sites)} sites x {len(dates)} days of forecasts in {time.perf_counter() - t:.1f} s")

        def time_raw() -> tuple[float, float, float]:
            seconds, cpu, workers_cpu, fallbacks = raw_solve_seconds(
                engine, sites, dates, args.parallelism, args.timeout_ms
            )
            print(f"raw solve: {seconds:.1f} s, solver workers {workers_cpu:.1f} CPU-s ({fallbacks} fallbacks)",
                  flush=True)
            return seconds, cpu, workers_cpu

        partitions = len(sites) * len(dates)
        chunks = backfill_chunks(sites, dates, args.chunk)
        run_environment(app_url, service)
        raw_before = None if args.skip_raw else time_raw()
        ratios, scaled, any_failed = [], [], False
        for round_number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"\nround {round_number} of {args.rounds}")
            logs_before = {log: log.stat().st_size for log in run_logs()}
            cpu, pg_cpu = machine_cpu_seconds(), postgres_cpu_seconds()
            own_cpu = own_cpu_seconds()
            service_cpu = service and (cpu_seconds(service[2]), solver_workers_cpu_seconds(service[2]))
            if args.launcher == "warm":
                dagster, failed, run_cpu = launched_backfill_seconds(
                    instance, args.timeout_ms, args.parallelism, service, chunks, args.concurrency
                )
            else:
                dagster, failed, run_cpu = new_interpreter_backfill_seconds(
                    app_url, args.timeout_ms, args.parallelism, service, chunks, args.concurrency
                )
            dagster_cpu = machine_cpu_seconds() - cpu
            own_cpu = own_cpu_seconds() - own_cpu
            pg_cpu = None if pg_cpu is None else postgres_cpu_seconds() - pg_cpu
            if service:
                service_cpu = (cpu_seconds(service[2]) - service_cpu[0],
                               solver_workers_cpu_seconds(service[2]) - service_cpu[1])
                # Read after the CPU counters: the logs hold a line per event.
                check_solved_on_service(len(chunks), logs_before)
            any_failed |= bool(failed)
            raw_after = None if args.skip_raw else time_raw()

            print(f"\n{'':<28}{'seconds':>10}{'ms/site-day':>13}{'machine CPU-s':>15}")
            if raw_before and raw_after:
                raw = (raw_before[0] + raw_after[0]) / 2
                raw_cpu = (raw_before[1] + raw_after[1]) / 2
                print(f"{'raw core solve (mean)':<28}{raw:>10.1f}{raw * 1000 / partitions:>13.1f}{raw_cpu:>15.1f}")
            print(f"{'Dagster + storage backfill':<28}{dagster:>10.1f}{dagster * 1000 / partitions:>13.1f}"
                  f"{dagster_cpu:>15.1f}")
            if raw_before and raw_after:
                ratios.append(dagster / raw)
                print(f"overhead ratio (Dagster / mean of the raw passes before and after): {ratios[-1]:.2f}x "
                      f"(against each: {dagster / raw_before[0]:.2f}x, {dagster / raw_after[0]:.2f}x)")
            print(f"backfill CPU-s: run processes {run_cpu:.1f} (their own solver workers not included)"
                  + ("" if pg_cpu is None else f", PostgreSQL {pg_cpu:.1f}")
                  + f", this process (creating, launching and watching the runs) {own_cpu:.1f}"
                  + f", the rest (solver service or workers, other) {dagster_cpu - run_cpu - (pg_cpu or 0) - own_cpu:.1f}")
            if service:
                raw_workers = (raw_before[2] + raw_after[2]) / 2 if raw_before and raw_after else None
                print(f"solver service CPU-s: its workers {service_cpu[1]:.1f}"
                      + ("" if raw_workers is None else f" (the raw passes' workers: {raw_workers:.1f})")
                      + f", passing problems to them {service_cpu[0]:.1f}")
                if raw_workers and service_cpu[1] > 0:
                    # The same solves cost the workers more CPU when the host is slower: their
                    # CPU-s measure its speed during the backfill against the raw passes'.
                    scaled.append(ratios[-1] * raw_workers / service_cpu[1])
                    print(f"overhead ratio at the raw passes' machine speed (scaled by the workers' CPU-s "
                          f"for the same solves): {scaled[-1]:.2f}x")
            where = "on the solver service" if service else "per run"
            started_how = "forked by the WarmRunLauncher" if args.launcher == "warm" else "each in a new interpreter"
            print(f"{partitions} site-days in {len(chunks)} run(s) {started_how}, {args.concurrency} at a time, {failed} failed; "
                  f"{args.parallelism} solver worker(s) {where}, chunk {args.chunk}")
            raw_before = raw_after
        if len(ratios) > 1:
            print(f"\noverhead ratios of {len(ratios)} rounds: {', '.join(f'{r:.2f}x' for r in ratios)}; "
                  f"median {statistics.median(ratios):.2f}x")
            if len(scaled) == len(ratios):
                print(f"at the raw passes' machine speed: {', '.join(f'{r:.2f}x' for r in scaled)}; "
                      f"median {statistics.median(scaled):.2f}x")
        return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
