"""`dispatch-pipeline solver serve` as a process of its own, and how runs find it: the
DISPATCH_SOLVER_SERVICE and DISPATCH_SOLVER_KEY variables that `default_solver()` reads."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dispatch_pipeline.cli import main
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.solver_service import (
    ADDRESS_ENV,
    KEY_ENV,
    ServiceClient,
    SolverService,
)
from dispatch_pipeline.defs.resources import DispatchSolver, default_solver
from tests.conftest import load_case

KEY = "serve-test-key-of-the-suite"
WORKER_MODULE = "dispatch_pipeline.core.worker"
# Generous bounds that only keep a broken service from hanging the test run.
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0


def _environment(**settings: str) -> dict[str, str]:
    """This environment without any solver service settings, plus `settings`."""
    environment = {k: v for k, v in os.environ.items() if k not in (ADDRESS_ENV, KEY_ENV)}
    return environment | settings


def _serve_command(address: Path) -> list[str]:
    return [sys.executable, "-m", "dispatch_pipeline.cli", "solver", "serve",
            "--address", str(address), "--workers", "1"]


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]  # after "pid (command)"
    return int(ppid), state


def _is_worker(pid: int) -> bool:
    """A live (not zombie) solver worker process."""
    found = _ppid_and_state(pid)
    if found is None or found[1] == "Z":
        return False
    with contextlib.suppress(OSError):
        return WORKER_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return False


def _worker_children(parent: int) -> set[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return {pid for pid in pids if (_ppid_and_state(pid) or (0, ""))[0] == parent and _is_worker(pid)}


@dataclass
class Served:
    process: subprocess.Popen
    address: Path
    log: Path
    workers: set[int] = field(default_factory=set)  # every worker pid seen, for the teardown

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process.poll() is None, f"the service exited ({self.process.returncode}):\n{self.output()}"
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                probe.connect(str(self.address))
                return
            assert time.monotonic() < deadline, f"nothing accepts at {self.address}:\n{self.output()}"
            time.sleep(0.1)


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[[], Served]]:
    """serve(): `solver serve` started in a directory of its own (no repository .env applies)."""
    started: list[Served] = []

    def start() -> Served:
        log = tmp_path / "serve.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                _serve_command(tmp_path / "solver.sock"), cwd=tmp_path, env=_environment(**{KEY_ENV: KEY}),
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        started.append(Served(process, tmp_path / "solver.sock", log))
        return started[-1]

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(EXIT_TIMEOUT_S)
        for pid in served.workers:  # each leads a process group of its own (core/runner.py)
            if _is_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def _no_local_workers():
    raise AssertionError("the client fell back to workers of its own: the service did not answer")


def test_the_served_service_solves_to_the_optimum_and_stops_on_sigterm(serve) -> None:
    served = serve()
    served.wait_until_accepting()
    assert "starting 1 worker, code " in served.output()  # --workers 1
    case = load_case("typical")
    problem = build_problem(case["request"])
    client = ServiceClient(str(served.address), KEY, "highs", _no_local_workers)
    try:
        solution = client.solve(problem, "highs", 30.0, 0.25)
        assert client.using_service
    finally:
        client.close()
    assert solution.termination == "optimal"
    expected = case["expected"]["objective_value"]
    assert objective_value(problem, solution.schedule) == pytest.approx(expected, rel=1e-6)

    served.workers |= _worker_children(served.process.pid)
    assert served.workers, "the service solved, so it has a worker process"
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(EXIT_TIMEOUT_S) == 0, served.output()
    assert not [pid for pid in served.workers if _is_worker(pid)], "workers outlived the service"
    assert not served.address.exists(), "the socket file is removed on the way out"


@pytest.mark.parametrize("key", [None, "", "change-me-solver-key", " " * 20, "abc"],
                         ids=["unset", "empty", "placeholder", "blank", "short"])
def test_without_a_key_of_its_own_it_refuses_to_start(tmp_path, key) -> None:
    environment = _environment() if key is None else _environment(**{KEY_ENV: key})
    refused = subprocess.run(
        _serve_command(tmp_path / "solver.sock"), cwd=tmp_path, env=environment,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=EXIT_TIMEOUT_S,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert KEY_ENV in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "solver.sock").exists(), "it never listened"


@pytest.fixture
def service_address(tmp_path) -> Iterator[str]:
    service = SolverService(str(tmp_path / "resource.sock"), KEY, workers=1)
    # Its worker started now, not in the background: close() kills the workers it has, not one
    # still starting (which would outlive this test until it noticed its caller gone).
    service.runner.warm()
    threading.Thread(target=service.serve_forever, daemon=True).start()
    yield str(service.bound_address)
    service.close()


def test_runs_find_the_service_and_its_key_in_the_environment_when_they_start(
    service_address, monkeypatch
) -> None:
    monkeypatch.setenv(ADDRESS_ENV, "solver:7433")  # set when the code location loads...
    monkeypatch.delenv(KEY_ENV, raising=False)
    solver = default_solver()
    monkeypatch.setenv(ADDRESS_ENV, service_address)  # ...and read again when a run starts
    monkeypatch.setenv(KEY_ENV, KEY)
    with solver.process_config_and_initialize_cm() as started:
        assert (started.service, started.service_key) == (service_address, KEY)
        assert isinstance(started.runner, ServiceClient) and started.runner.using_service
        assert started.placement == f"solver service {service_address}"


@pytest.mark.parametrize("address", [None, ""], ids=["unset", "empty"])
def test_without_a_service_address_runs_start_their_own_workers(address, monkeypatch) -> None:
    if address is None:
        monkeypatch.delenv(ADDRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(ADDRESS_ENV, address)
    monkeypatch.setenv(KEY_ENV, KEY)  # a key alone names no service
    solver = default_solver()
    assert solver == DispatchSolver()
    assert (solver.service, solver.service_key) == ("", "")


def test_its_help_says_what_workers_0_means(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["solver", "serve", "--help"])
    assert done.value.code == 0
    workers = " ".join(capsys.readouterr().out.split("--workers WORKERS")[-1].split())
    assert workers.startswith("solver processes; 0 (the default): one per CPU this process may use")
