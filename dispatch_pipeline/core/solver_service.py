"""A solver service: warm solver workers that outlive the runs they solve for.

Every Dagster run is a new process. Starting its own solver workers costs each run about a
second of CPU per worker (Python, Pyomo, SciPy, HiGHS), which over a backfill of many short runs
is a large share of all the work. A service started once per host (`dispatch-pipeline solver
serve`) keeps its workers warm, and runs send it their problems instead. Its workers enforce the
hard timeout exactly as a run's own would: the service kills a worker that overruns.

A run never depends on the service being there: when it cannot be reached, runs different code,
or goes away mid-run, the run starts its own workers and solves there (`ServiceClient`).

Protocol: `multiprocessing.connection` framing with its HMAC challenge on the shared key, before
anything is unpickled. Then, per connection:

    service -> client   ("hello", {"code": fingerprint, "workers": n, "solvers": [...]})
    client  -> service  ("solve", problem, solver, timeout_s, grace_s)
    service -> client   ("waiting",) every HEARTBEAT_S while no worker is free, then
                        ("started",) when a worker takes the problem, then
                        ("ok", MilpSolution) or ("failure", MilpFailure)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from dispatch_pipeline.core.milp import SOLVERS, MilpFailure, MilpTimeout
from dispatch_pipeline.core.runner import MilpRunner, SolverPool
from dispatch_pipeline.core.solve import missing_solver

log = logging.getLogger(__name__)

# Where runs find the service, and the secret they authenticate with.
ADDRESS_ENV = "DISPATCH_SOLVER_SERVICE"
KEY_ENV = "DISPATCH_SOLVER_KEY"
CONNECT_TIMEOUT_S = 5.0
# A connecting run answers the challenge at once; the service drops one that does not by then.
AUTH_TIMEOUT_S = 10.0
# How long a problem may wait for one of the service's workers before the run stops counting on
# the service. Waiting is normal when several runs share it; this long is not.
QUEUE_TIMEOUT_S = 300.0
# While a problem waits for a worker the service says so this often; a client that hears nothing
# for SILENCE_LIMIT_S takes the service for frozen (stopped, its host paused, the network cut:
# nothing closes the connection) and solves on its own workers instead of waiting out the queue.
HEARTBEAT_S = 2.0
# Pause after a connection could not be taken (no file descriptor or thread left) before the next.
ACCEPT_BACKOFF_S = 0.1
SILENCE_LIMIT_S = 10.0
# Beyond the worker's own kill deadline: time for the answer to cross the network. Within the
# contract's bound on a plan (timeout_ms + 0.5 s) with the kill grace of 0.25 s; a service that
# has not answered by then is frozen (stopped, its host paused, the network cut).
ANSWER_MARGIN_S = 0.2
CORE_DIR = Path(__file__).resolve().parent


class ServiceUnavailable(Exception):
    """The solver service cannot be used; the message says why."""


@functools.cache  # the source does not change under a running process
def code_fingerprint() -> str:
    """A digest of the optimisation core's source: a service and a run must solve alike."""
    digest = hashlib.sha256()
    for path in sorted(CORE_DIR.rglob("*.py")):
        digest.update(path.relative_to(CORE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def parse_address(text: str) -> tuple[str, int] | str:
    """`host:port` for TCP, or a filesystem path (absolute, or `unix:PATH`) for a Unix socket."""
    text = text.strip()
    if text.startswith("unix:"):
        return text.removeprefix("unix:")
    if text.startswith("/"):
        return text
    host, sep, port = text.rpartition(":")
    if sep and host and port.isdigit() and int(port) > 65535:
        raise ValueError(f"solver service address: port {port} is outside 0..65535 (got {text!r})")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"solver service address: expected HOST:PORT or an absolute Unix socket path (got {text!r})"
        )
    return host.strip("[]"), int(port)


def _authkey(key: str | bytes) -> bytes:
    key = key.encode() if isinstance(key, str) else key
    if not key:
        raise ValueError("solver service key: must not be empty (it authenticates runs to the service)")
    return key


def _open_connection(address: tuple[str, int] | str, timeout_s: float) -> socket.socket:
    if not isinstance(address, str):
        return socket.create_connection(address, timeout=timeout_s)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _connect(address: tuple[str, int] | str, authkey: bytes, timeout_s: float) -> Connection:
    try:
        sock = _open_connection(address, timeout_s)
        sock.settimeout(None)  # Connection reads the descriptor directly: it must block
    except OSError as exc:
        raise ServiceUnavailable(f"cannot connect: {exc}") from None
    conn = Connection(sock.detach())
    try:
        if not conn.poll(timeout_s):
            raise ServiceUnavailable("no answer to the connection")
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    except ServiceUnavailable:
        conn.close()
        raise
    except Exception as exc:  # AuthenticationError, a reset, a closed socket
        conn.close()
        raise ServiceUnavailable(f"authentication failed ({type(exc).__name__}: {exc}); is the key the same?") from None
    return conn


class SolverService:
    """Serves solves from a pool of warm workers to every run that connects with the key."""

    def __init__(self, address: str, authkey: str | bytes, workers: int | None = None):
        self.address = parse_address(address)
        self._authkey = _authkey(authkey)
        self.runner = MilpRunner(workers)
        self.hello = {"code": code_fingerprint(), "workers": self.runner.size, "solvers": installed_solvers()}
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)  # a socket file left by a service that was killed
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self._socket = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(self.address)
        self._socket.listen(128)
        self._closed = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()

    @property
    def bound_address(self) -> tuple[str, int] | str:
        """The address actually listened on (the port, when 0 asked for any free one)."""
        return self.address if isinstance(self.address, str) else self._socket.getsockname()[:2]

    def serve_forever(self) -> None:
        # In the background: runs may connect at once, and their first problems wait for the
        # first worker ready.
        self.runner.warm(wait=False)
        log.info("solver service on %s: starting %d worker%s, code %s", self.bound_address,
                 self.runner.size, "" if self.runner.size == 1 else "s", self.hello["code"])
        while not self._closed.is_set():
            try:
                sock, _ = self._socket.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                _cannot_take_a_connection(exc)
                continue
            try:
                threading.Thread(target=self._serve_client, args=(sock,), name="solver-client", daemon=True).start()
            except RuntimeError as exc:  # no thread left
                sock.close()
                _cannot_take_a_connection(exc)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._socket.close()
        with self._clients_lock:
            clients, self._clients = self._clients, set()
        for sock in clients:
            # Shutdown, not just close: it wakes the thread blocked reading from this client,
            # and the client sees the service go.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.runner.close()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)

    def _serve_client(self, sock: socket.socket) -> None:
        with self._clients_lock:
            if self._closed.is_set():
                sock.close()
                return
            self._clients.add(sock)
        conn = Connection(os.dup(sock.fileno()))
        # A peer that connects and never authenticates would hold this thread for good: after
        # AUTH_TIMEOUT_S its connection is shut, which ends the blocked read.
        watchdog = threading.Timer(AUTH_TIMEOUT_S, _shut, args=(sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            # Authenticated in this thread, so a client that stalls holds up nobody else.
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            watchdog.cancel()
            conn.send(("hello", self.hello))
            while True:
                kind, *args = conn.recv()
                conn.send(self._answer(conn, kind, args))
        except (EOFError, OSError):
            pass  # the run finished or went away
        except Exception as exc:  # a failed authentication, a message that does not unpickle
            log.warning("solver service: dropped a connection: %s: %s", type(exc).__name__, exc)
        finally:
            watchdog.cancel()
            conn.close()
            with self._clients_lock:
                self._clients.discard(sock)
            sock.close()

    def _answer(self, conn: Connection, kind: str, args: list[Any]) -> tuple[str, Any]:
        if kind != "solve" or len(args) != 4:
            return "failure", MilpFailure(f"solver service: unknown request {kind!r}")
        problem, solver, timeout_s, grace_s = args
        # Under one lock: no heartbeat interleaves its bytes with "started" or follows it.
        sending = threading.Lock()
        taken = threading.Event()

        def still_waiting() -> None:
            with sending:
                if not taken.is_set():
                    conn.send(("waiting",))

        def started() -> None:
            with sending:
                taken.set()
                conn.send(("started",))

        heartbeat = threading.Thread(target=_beat_until, args=(taken, still_waiting), daemon=True)
        heartbeat.start()
        try:
            return "ok", self.runner.solve(problem, solver, timeout_s, grace_s, on_start=started)
        except MilpFailure as exc:
            return "failure", exc
        finally:
            taken.set()
            heartbeat.join()


def _cannot_take_a_connection(exc: Exception) -> None:
    # Out of file descriptors or threads (hundreds of runs' problems queued, peers that never
    # authenticate): the connections served so far go on, and so must the service; a client
    # refused meanwhile solves on its own workers.
    log.warning("solver service: cannot take a connection now (%s); retrying", exc)
    time.sleep(ACCEPT_BACKOFF_S)


def _beat_until(taken: threading.Event, beat: Callable[[], None]) -> None:
    while not taken.wait(HEARTBEAT_S):
        try:
            beat()
        except OSError:
            return  # the client left; the solve notices when it answers


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def installed_solvers() -> list[str]:
    """The solvers this host can run (CBC is an optional install): clients send a problem for
    another one elsewhere, rather than have it fall back here for want of it."""
    return [solver for solver in SOLVERS if missing_solver(solver) is None]


class _ServiceLost(Exception):
    def __init__(self, reason: str, solving_for_s: float = 0.0):
        super().__init__(reason)
        self.solving_for_s = solving_for_s  # how long the lost solve's clock had been running


class ServiceClient:
    """A solver pool backed by a solver service, with this process's own workers as the fallback.

    One connection per thread that solves at once. Any trouble with the service itself (gone,
    restarted, stuck) switches this client to local workers for good and repeats the solve there:
    a run never loses a plan, or its optimum, to the service.
    """

    def __init__(
        self,
        address: str,
        authkey: str | bytes,
        solver: str,
        local_pool: Callable[[], SolverPool],
        on_fallback: Callable[[str], None] = log.warning,
    ):
        self.address = parse_address(address)
        self._authkey = _authkey(authkey)
        self._local_pool = local_pool
        self._on_fallback = on_fallback
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._local: SolverPool | None = None
        self._solver = solver
        conn, hello = self._open()
        self.size = int(hello["workers"])
        self._idle.append(conn)

    def _open(self) -> tuple[Connection, dict[str, Any]]:
        """A connection to a service that runs this code and has the solver. Checked on every
        connection: a service restarted mid-run may be another one (a deploy)."""
        conn = _connect(self.address, self._authkey, CONNECT_TIMEOUT_S)
        try:
            hello = self._hello(conn)
            if hello.get("code") != code_fingerprint():
                raise ServiceUnavailable(
                    f"it runs other solver code ({hello.get('code')}, this run {code_fingerprint()}); "
                    "restart it after a deploy"
                )
            if self._solver not in hello.get("solvers", ()):
                raise ServiceUnavailable(f"solver {self._solver!r} is not installed there")
        except BaseException:
            conn.close()
            raise
        return conn, hello

    @staticmethod
    def _hello(conn: Connection) -> dict[str, Any]:
        try:
            if conn.poll(CONNECT_TIMEOUT_S):
                kind, hello = conn.recv()
                if kind == "hello":
                    return hello
        except (EOFError, OSError, ValueError):
            pass
        raise ServiceUnavailable("it did not introduce itself")

    @property
    def using_service(self) -> bool:
        return self._local is None

    def solve(
        self, problem: Any, solver: str, timeout_s: float, grace_s: float,
        on_start: Callable[[], None] | None = None,
    ) -> Any:
        if self._local is None:
            try:
                return self._solve_remote(problem, solver, timeout_s, grace_s, on_start)
            except _ServiceLost as exc:
                self._fall_back(str(exc))
                if exc.solving_for_s:
                    # Its clock started on the service: solving again here gets what is left of it.
                    remaining = timeout_s - exc.solving_for_s
                    if remaining <= 0:
                        raise MilpTimeout(f"the solver service was lost mid-solve ({exc}), with no time left to solve again") from None
                    return self._local.solve(problem, solver, remaining, grace_s)
        return self._local.solve(problem, solver, timeout_s, grace_s, on_start)

    def _solve_remote(
        self, problem: Any, solver: str, timeout_s: float, grace_s: float, on_start: Callable[[], None] | None
    ) -> Any:
        conn = self._checkout()
        keep = False
        started_at = None
        try:
            try:
                conn.send(("solve", problem, solver, timeout_s, grace_s))
                message = self._wait_for_a_worker(conn)
                # ("started",): the solver's clock runs from here. A request refused before any
                # worker took it is answered at once, without it.
                if message == ("started",):
                    started_at = time.monotonic()
                    if on_start is not None:
                        on_start()
                    if not conn.poll(timeout_s + grace_s + ANSWER_MARGIN_S):
                        # Its own kill would have answered by now: the next problems go to this
                        # process's workers rather than wait on it again.
                        raise _ServiceLost("it did not answer past its own kill deadline", time.monotonic() - started_at)
                    message = conn.recv()
            except (EOFError, OSError) as exc:
                solving_for_s = 0.0 if started_at is None else time.monotonic() - started_at
                raise _ServiceLost(
                    f"the connection broke ({type(exc).__name__})", solving_for_s
                ) from None
            kind, payload = message
            keep = True
        finally:
            self._checkin(conn, keep)
        if kind == "failure" and started_at is None:
            # Refused before any worker took it (the service cannot start its workers, say):
            # nothing about this problem, so this process's own workers solve it in full time.
            raise _ServiceLost(f"it could not solve ({payload})")
        if kind == "failure":
            raise payload
        return payload

    @staticmethod
    def _wait_for_a_worker(conn: Connection) -> Any:
        """The service's first message past its heartbeats."""
        queued_until = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            if not conn.poll(SILENCE_LIMIT_S):
                raise _ServiceLost(f"it fell silent for {SILENCE_LIMIT_S:.0f} s while a problem waited for a worker")
            message = conn.recv()
            if message != ("waiting",):
                return message
            if time.monotonic() > queued_until:
                raise _ServiceLost(f"no worker of the service took a problem within {QUEUE_TIMEOUT_S:.0f} s")

    def _checkout(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn, _ = self._open()
            return conn
        except ServiceUnavailable as exc:
            raise _ServiceLost(str(exc)) from None

    def _checkin(self, conn: Connection, keep: bool) -> None:
        if keep:
            with self._lock:
                if self._local is None:
                    self._idle.append(conn)
                    return
        conn.close()

    def _fall_back(self, reason: str) -> None:
        with self._lock:
            if self._local is not None:
                return
            self._local = self._local_pool()
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._on_fallback(f"solver service at {_describe(self.address)}: {reason}; solving with this process's own workers")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _describe(address: tuple[str, int] | str) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def wait_until_serving(address: str, timeout_s: float = 60.0) -> None:
    """Block until something listens at `address` (for scripts that start a service)."""
    parsed = parse_address(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _open_connection(parsed, 1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"nothing listens at {address} after {timeout_s:.0f} s") from None
            time.sleep(0.1)
