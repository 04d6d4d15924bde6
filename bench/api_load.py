"""Load test of POST /dispatch/run on loopback: throughput, latency percentiles, errors, RSS.

    python bench/api_load.py                      # start a server on a scratch PostgreSQL database
    python bench/api_load.py -n 2000 -c 8
    python bench/api_load.py --url http://127.0.0.1:8002 --server-pid 1234   # a running server
    python bench/api_load.py -n 500 -c 2 --keys replay   # every request sent again with its Idempotency-Key

Without --url it starts `dispatch-pipeline serve` on a free loopback port with access logging off,
on --database-url (default: a scratch database created on PostgreSQL at 127.0.0.1:5432 and
dropped afterwards). Every request carries the 96-interval quick-start day. Peak RSS is sampled
from /proc every 50 ms for the server process and, separately, its solver worker children.
The client runs on the same machine and takes CPU from the server: numbers are conservative.

--keys sets the requests' Idempotency-Key: none (the default); unique, a new key on every request,
which the server looks up, then stores with the run it plans; replay, where each client first
stores one run under a key of its own (unmeasured) and then sends every request again under it:
answered from storage, nothing planned. A replay's answer must carry `Idempotent-Replayed: true`
and the run its key stored, and any other answer must not be replayed; anything else counts as an
error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.processes import cpu_seconds, descendants, is_solver_worker, stop  # noqa: E402

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# As dispatch_pipeline/api/idempotency.py names them.
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MODES = {
    "none": "no Idempotency-Key",
    "unique": "a new Idempotency-Key on every request (looked up, then stored with the run planned)",
    "replay": "every request sent again under its client's Idempotency-Key, whose run was stored "
              "before: answered from storage, nothing planned",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--requests", type=int, default=2000, help="requests to send (default 2000)")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--url", help="target a running server on loopback instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, for RSS")
    parser.add_argument("--database-url", help="database of the started server (default: scratch PostgreSQL)")
    parser.add_argument("--workers", type=int, default=1, help="server processes to start (default 1)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured requests first (default 16)")
    parser.add_argument("--token", help="bearer token to send (when the server requires one)")
    parser.add_argument("--keys", choices=tuple(KEY_MODES), default="none",
                        help="Idempotency-Key of each request: none (default), unique (a new one each), or "
                             "replay (one run stored per client under its key first, then every request "
                             "sent again under it)")
    args = parser.parse_args()
    if not 0 < args.requests <= 100_000 or not 0 < args.concurrency <= 256:
        parser.error("--requests must be in 1..100000 and --concurrency in 1..256")
    if args.url and urlparse(args.url).hostname not in LOOPBACK_HOSTS:
        parser.error(f"--url: loopback only (got {args.url})")
    return args


# ------------------------------------------------------------------------------------ server


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    import psycopg

    name = f"dispatch_api_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def started_server(database_url: str, workers: int) -> Iterator[tuple[str, int]]:
    port = free_loopback_port()
    env = dict(os.environ)
    env.pop("DISPATCH_API_TOKENS", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "dispatch_pipeline.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning",
         "--database-url", database_url],
        # Not the repository root: `serve` would apply a developer's ./.env (tokens, database).
        cwd=tempfile.gettempdir(), env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url, server.pid
    finally:
        stop(server)


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with status {server.returncode} before it was healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise SystemExit(f"server at {url} not healthy within {timeout_s:.0f} s")


# ------------------------------------------------------------------------------- memory (RSS)


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def family_cpu_seconds(pid: int) -> tuple[float, float]:
    """(server, solver workers) CPU seconds so far: what a request costs, whatever else runs."""
    family = descendants(pid)
    solvers = [p for p in family if is_solver_worker(p)]
    server = cpu_seconds(pid) + sum(cpu_seconds(p) for p in family if p not in solvers)
    return server, sum(cpu_seconds(p) for p in solvers)


@dataclass
class RssPeaks:
    server: int = 0  # the server process(es): uvicorn, and its worker processes with --workers > 1
    solver_workers: int = 0  # sum over the solver processes
    solver_worker_count: int = 0
    total: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample_forever(self, pid: int, every_s: float = 0.05) -> None:
        while not self.stop.is_set():
            family = descendants(pid)
            solvers = [p for p in family if is_solver_worker(p)]
            server = rss_bytes(pid) + sum(rss_bytes(p) for p in family if p not in solvers)
            solver_rss = sum(rss_bytes(p) for p in solvers)
            self.server = max(self.server, server)
            self.solver_workers = max(self.solver_workers, solver_rss)
            self.solver_worker_count = max(self.solver_worker_count, len(solvers))
            self.total = max(self.total, server + solver_rss)
            self.stop.wait(every_s)


# ------------------------------------------------------------------------------------- load


def quick_start_request() -> dict:
    from dispatch_pipeline.api.schemas import QUICK_START_REQUEST

    return QUICK_START_REQUEST


def new_key() -> str:
    return str(uuid.uuid4())


def store_keyed_runs(url: str, count: int, headers: dict[str, str]) -> list[tuple[str, str]]:
    """For --keys replay: one run stored under a new Idempotency-Key per client, as (key, run_id)."""
    stored = []
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(count):
            key = new_key()
            response = client.post("/dispatch/run", json=quick_start_request(), headers={KEY_HEADER: key})
            if response.status_code != 200 or REPLAYED_HEADER in response.headers:
                raise SystemExit(f"storing a run under an Idempotency-Key: HTTP {response.status_code}"
                                 f"{' (replayed)' if REPLAYED_HEADER in response.headers else ''} "
                                 f"{response.text[:300]}")
            stored.append((key, response.json()["run_id"]))
    return stored


def answer_problem(response: httpx.Response, stored_run_id: str | None) -> str | None:
    """What is wrong with a 200 answer, if anything: a replay (`stored_run_id`, the run its key
    stored) must be that run with `Idempotent-Replayed: true`; any other request must be planned."""
    if stored_run_id is None:
        return "replayed, not planned" if REPLAYED_HEADER in response.headers else None
    if response.headers.get(REPLAYED_HEADER) != "true":
        return "planned, not replayed"
    try:
        body = response.json()
    except ValueError:
        return "replay not JSON"
    if not isinstance(body, dict) or body.get("run_id") != stored_run_id:
        return "replayed another run"
    return None


@dataclass
class Outcomes:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    sent: int = 0


async def send_load(url: str, total: int, concurrency: int, max_seconds: float,
                    headers: dict[str, str], outcomes: Outcomes, keys: str = "none",
                    stored: list[tuple[str, str]] | None = None) -> float:
    """`stored`, with --keys replay: a (key, run_id) per client, whose requests replay that run."""
    request = quick_start_request()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + max_seconds
    remaining = iter(range(total))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:

        async def user(index: int) -> None:
            replayed_key, stored_run_id = stored[index] if stored else (None, None)
            for _ in remaining:
                if time.monotonic() > deadline:
                    return
                key = new_key() if keys == "unique" else replayed_key
                outcomes.sent += 1
                started = time.perf_counter()
                try:
                    response = await client.post("/dispatch/run", json=request,
                                                 headers={KEY_HEADER: key} if key else None)
                except httpx.HTTPError as exc:
                    outcomes.errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    outcomes.errors[f"HTTP {response.status_code}"] += 1
                elif problem := answer_problem(response, stored_run_id):
                    outcomes.errors[problem] += 1
                else:
                    outcomes.latencies_s.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(user(index) for index in range(concurrency)))
        return time.perf_counter() - started


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def report(args: argparse.Namespace, outcomes: Outcomes, wall_s: float, peaks: RssPeaks | None) -> None:
    ok = sorted(outcomes.latencies_s)
    mib = 1024 * 1024
    print(f"keys {args.keys}: {KEY_MODES[args.keys]}")
    print(f"requests: {outcomes.sent} sent, {len(ok)} ok, {sum(outcomes.errors.values())} errors"
          + (f" {dict(outcomes.errors)}" if outcomes.errors else ""))
    print(f"concurrency {args.concurrency}, wall {wall_s:.1f} s, throughput {len(ok) / wall_s:.1f} req/s")
    if ok:
        print(f"latency ms: p50 {1000 * percentile(ok, 0.50):.1f}  p95 {1000 * percentile(ok, 0.95):.1f}  "
              f"p99 {1000 * percentile(ok, 0.99):.1f}  mean {1000 * statistics.fmean(ok):.1f}  "
              f"max {1000 * ok[-1]:.1f}")
    if peaks:
        print(f"peak RSS: server {peaks.server / mib:.0f} MiB; solver workers "
              f"{peaks.solver_workers / mib:.0f} MiB over {peaks.solver_worker_count} processes; "
              f"total {peaks.total / mib:.0f} MiB")


def run_against(url: str, pid: int | None, args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    stored = store_keyed_runs(url, args.concurrency, headers) if args.keys == "replay" else None
    if args.warmup:
        asyncio.run(send_load(url, args.warmup, min(args.concurrency, args.warmup), 60, headers, Outcomes(),
                              args.keys, stored))
    peaks = None
    if pid:
        peaks = RssPeaks()
        threading.Thread(target=peaks.sample_forever, args=(pid,), daemon=True).start()
    outcomes = Outcomes()
    cpu_before = family_cpu_seconds(pid) if pid else None
    client_before = time.process_time()
    wall_s = asyncio.run(send_load(url, args.requests, args.concurrency, args.max_seconds, headers, outcomes,
                                   args.keys, stored))
    client_cpu_s = time.process_time() - client_before
    if peaks:
        peaks.stop.set()
    report(args, outcomes, wall_s, peaks)
    # CPU per request does not depend on what else the machine runs, unlike the latencies.
    print(f"cpu ms/request: client {1000 * client_cpu_s / max(1, outcomes.sent):.1f}", end="")
    if cpu_before:
        server_s, solvers_s = (b - a for a, b in zip(cpu_before, family_cpu_seconds(pid), strict=True))
        print(f"  server {1000 * server_s / max(1, outcomes.sent):.1f}"
              f"  solver workers {1000 * solvers_s / max(1, outcomes.sent):.1f}", end="")
    print(f"  (machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 1 if outcomes.errors else 0


def main() -> int:
    args = parse_args()
    if args.url:
        return run_against(args.url.rstrip("/"), args.server_pid, args)
    with contextlib.ExitStack() as stack:
        database_url = args.database_url or stack.enter_context(scratch_postgres())
        url, pid = stack.enter_context(started_server(database_url, args.workers))
        print(f"server {url} (pid {pid}), database {urlparse(database_url).path.lstrip('/')}")
        return run_against(url, pid, args)


if __name__ == "__main__":
    sys.exit(main())
