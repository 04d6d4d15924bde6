"""Run MILP solves in warm worker processes under a hard wall-clock limit.

A solver is native code: it can hang past its own time limit or take the process down with it.
Each solve therefore runs in a worker process that the caller kills when the deadline passes,
and the caller goes on with the rule-based schedule. Workers are plain interpreters started with
`python -m dispatch_pipeline.core.worker` (no fork of a threaded server, no re-import of the
caller's main script) and warm up once, so a solve costs a pipe round trip, not a process start.
Starting a worker is not part of a solve's timeout: servers warm their workers at start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from dispatch_pipeline.core.milp import MilpFailure, MilpTimeout

WORKER_START_TIMEOUT_S = 120.0
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a container's CPU quota.

    `os.cpu_count()` is the host's count; in a Kubernetes pod limited to one CPU on a 32-core
    node it would start 32 workers of a few hundred MB each.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cpus)


class SolverCrashed(MilpFailure):
    """The worker process died during a solve."""


class SolverPool(Protocol):
    """Where MILP solves run: this process's own workers, or a solver service's."""

    size: int

    def solve(
        self, problem: Any, solver: str, timeout_s: float, grace_s: float,
        on_start: Callable[[], None] | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


class _Worker:
    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # The worker must import whatever the caller can (an editable checkout, a test module).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatch_pipeline.core.worker", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own process group (in the caller's session), so that a kill reaches what it
            # started too (CBC runs as a child process), and a Ctrl-C meant for the caller does
            # not land mid-solve.
            process_group=0,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        if not self.conn.poll(WORKER_START_TIMEOUT_S):
            self.kill()
            raise SolverCrashed("the solver worker did not start")
        try:
            self.conn.recv()
        except EOFError:
            self.kill()
            raise SolverCrashed(f"the solver worker died on start (exit code {self.process.poll()})") from None

    def call(self, function: Callable, args: tuple, hard_deadline: float) -> Any:
        try:
            self.conn.send((function, args))
        except OSError:  # it died while idle (the OOM killer, say)
            self.kill()
            raise SolverCrashed(
                f"the solver process had died before the solve (exit code {self.process.returncode})"
            ) from None
        remaining = max(0.0, hard_deadline - time.monotonic())
        if not self.conn.poll(remaining):
            self.kill()
            raise MilpTimeout("the solver did not answer within timeout_ms and was stopped")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            # Killed before reaped: what it started (CBC) is still in its group, and goes too.
            self.kill()
            raise SolverCrashed(f"the solver process crashed (exit code {self.process.returncode})") from None
        if kind == "failure":
            raise payload
        return payload

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.returncode is None:  # not reaped yet: the group is still its own
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        with contextlib.suppress(Exception):
            self.conn.close()


class MilpRunner:
    """A bounded set of warm solver processes shared by every thread of this process.

    `solve_function(problem, solver, deadline)` runs in the worker; it is `solve_milp` unless a
    test swaps in one that hangs or crashes.
    """

    def __init__(self, size: int | None = None, solve_function: Callable | None = None):
        from dispatch_pipeline.core.milp import solve_milp

        self.size = size or available_cpus()
        self.solve_function = solve_function or solve_milp
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._started = 0  # workers alive or starting, idle or busy
        self._changed = threading.Condition()
        self._closed = False

    def _acquire(self) -> _Worker:
        dead = []
        try:
            with self._changed:
                while True:
                    while not self._closed and not self._idle and self._started >= self.size:
                        # Woken by a release, by a start that failed (which frees a place to
                        # retry), or by close.
                        self._changed.wait()
                    if self._closed:
                        raise MilpFailure("the solver pool was closed")
                    if not self._idle:
                        self._started += 1
                        break
                    worker = self._idle.pop()
                    if worker.alive:
                        self._busy.add(worker)
                        return worker
                    dead.append(worker)  # died while idle: its place goes to a new one
                    self._started -= 1
        finally:
            for worker in dead:
                worker.kill()
        return self._mark_busy(self._start())

    def _mark_busy(self, worker: _Worker) -> _Worker:
        with self._changed:
            self._busy.add(worker)
        return worker

    def _start(self) -> _Worker:
        """A new worker in a place already counted in `_started`."""
        try:
            return _Worker()
        except BaseException:
            with self._changed:
                self._started -= 1
                self._changed.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._changed:
            self._busy.discard(worker)
            keep = worker.alive and not self._closed
            replace = not keep and not self._closed
            if keep:
                self._idle.append(worker)
            elif not replace:
                self._started -= 1
            self._changed.notify()
        if not keep:
            worker.kill()
        if replace:
            # A killed or crashed worker's place is filled at once, so that the next solve does
            # not wait for a start (about a second) that its timeout does not count.
            threading.Thread(target=self._start_idle, name="milp-worker-start", daemon=True).start()

    def solve(
        self, problem: Any, solver: str, timeout_s: float, grace_s: float, on_start: Callable[[], None] | None = None
    ) -> Any:
        """Solve in a worker with `timeout_s` for the solver; kill it `grace_s` after that.

        The clock starts when a worker takes the problem (then `on_start` is called), not while
        the problem waits for one.
        """
        worker = self._acquire()
        answered = True
        try:
            if on_start is not None:
                on_start()
            deadline = time.monotonic() + timeout_s
            answered = False
            result = worker.call(self.solve_function, (problem, solver, deadline), deadline + grace_s)
            answered = True
            return result
        except MilpFailure:
            answered = True  # a failure answered, or a worker killed: nothing left unread
            raise
        finally:
            if not answered:
                # Interrupted while waiting (a run being terminated): the answer still on its way
                # would be read as the next problem's.
                worker.kill()
            self._release(worker)

    def warm(self, count: int | None = None, *, wait: bool = True) -> None:
        """Start up to `count` (default: all) workers at once, so the first solves need not.

        With `wait=False` they start in the background: a solve asking for a worker meanwhile
        takes the first one ready. A worker that fails to start is simply not there; the next
        solve that needs it starts another and sees the error.
        """
        with self._changed:
            missing = max(0, min(count or self.size, self.size) - self._started)
            self._started += missing
        starters = [
            threading.Thread(target=self._start_idle, name="milp-worker-start", daemon=True)
            for _ in range(missing)
        ]
        for starter in starters:
            starter.start()
        if wait:
            for starter in starters:
                starter.join()

    def _start_idle(self) -> None:
        with contextlib.suppress(Exception):
            self._release(self._start())

    def close(self) -> None:
        """Stop every worker, busy ones too: a process exiting must not leave a hung solver."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._started -= len(idle)
            self._changed.notify_all()
        for worker in idle + busy:
            worker.kill()


_default: MilpRunner | None = None
_default_lock = threading.Lock()


def default_runner() -> MilpRunner:
    global _default
    with _default_lock:
        if _default is None:
            _default = MilpRunner()
            atexit.register(_default.close)
        return _default
