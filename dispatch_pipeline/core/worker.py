"""The solver worker process: `python -m dispatch_pipeline.core.worker FD`.

It talks to its parent over the socket FD with multiprocessing's Connection framing: it receives
(function, args) and answers ("ok", value) or ("failure", MilpFailure). Functions travel by
reference, so the worker imports them by module name.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection


def _warm_up() -> None:
    # The first compile of a Pyomo model pays for lazy imports (about a second); pay it here.
    from dispatch_pipeline.core.milp import solve_milp
    from dispatch_pipeline.core.problem import build_problem

    request = {
        "site_id": "WARMUP",
        "date": "2024-01-01",
        "resolution_minutes": 60,
        "load_kw": [10.0] * 24,
        "pv_kw": [0.0] * 6 + [20.0] * 12 + [0.0] * 6,
        "tariff": {"buy": [0.2] * 8 + [0.5] * 16, "sell": [0.1] * 24},
    }
    solve_milp(build_problem(request), "highs", time.monotonic() + 60)


def _end_with_the_caller(conn: Connection) -> None:
    """Stop this worker, and what it started, as soon as the caller's end of the socket closes.

    A caller that dies by SIGKILL (the OOM killer) cannot kill its workers, and a worker busy in
    a hung solve never reads the EOF. The kernel closes the dead caller's socket, which this
    thread sees while the solve goes on (HiGHS releases the GIL; CBC is a child process).
    PR_SET_PDEATHSIG would not do: it follows the thread that started the worker, and workers
    are started from short-lived threads.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLRDHUP)
    poller.poll()
    if os.getpgrp() == os.getpid():  # started in a group of its own (see runner._Worker)
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(0)


def serve(conn: Connection) -> None:
    from dispatch_pipeline.core.milp import MilpFailure

    threading.Thread(target=_end_with_the_caller, args=(conn,), name="caller-watch", daemon=True).start()
    _warm_up()
    # A Pyomo model is tens of thousands of objects; a collector pass that lands mid-solve over
    # everything imported costs 100-500 ms. So: freeze what warm-up left (never rescanned), solve
    # with the collector off, and collect each model's garbage after the answer has gone out,
    # where it costs the caller nothing (about 3 ms).
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        conn.send(("ready", os.getpid()))
    except OSError:  # the pool closed while this worker warmed up: nobody to serve
        return
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError):  # the caller closed or reset its end: nobody left to serve
            return
        try:
            conn.send(("ok", function(*args)))
        except MilpFailure as exc:
            conn.send(("failure", exc))
        except Exception as exc:
            conn.send(("failure", MilpFailure(f"{type(exc).__name__}: {exc}")))
        gc.collect()


def main() -> None:
    fd = int(sys.argv[1])
    # HiGHS prints a banner on stdout, and the parent's stdout may be a JSON answer (the CLI).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    serve(Connection(fd))


if __name__ == "__main__":
    main()
