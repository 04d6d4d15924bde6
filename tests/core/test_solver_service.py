"""The solver service: runs solve on its warm workers, and never lose a plan when it goes away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core import solver_service
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.milp import MilpTimeout
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.runner import MilpRunner
from dispatch_pipeline.core.solver_service import (
    ServiceClient,
    ServiceUnavailable,
    SolverService,
    parse_address,
)
from tests import fakes
from tests.conftest import load_case

KEY = "test-key"


class LocalPool:
    """The client's fallback: counts how often the client had to start local workers."""

    def __init__(self) -> None:
        self.created: list[MilpRunner] = []

    def __call__(self) -> MilpRunner:
        runner = MilpRunner(size=1)
        self.created.append(runner)
        return runner

    def close(self) -> None:
        for runner in self.created:
            runner.close()


@pytest.fixture
def local_pool() -> Iterator[LocalPool]:
    pool = LocalPool()
    yield pool
    pool.close()


@pytest.fixture
def start_service(tmp_path) -> Iterator[Callable[..., tuple[SolverService, str]]]:
    services: list[SolverService] = []

    def start(solve_function: Callable | None = None, workers: int = 1, tcp: bool = False):
        address = "127.0.0.1:0" if tcp else str(tmp_path / f"solver{len(services)}.sock")
        service = SolverService(address, KEY, workers)
        if solve_function is not None:
            service.runner.solve_function = solve_function
        threading.Thread(target=service.serve_forever, daemon=True).start()
        services.append(service)
        bound = service.bound_address
        return service, bound if isinstance(bound, str) else f"{bound[0]}:{bound[1]}"

    yield start
    for service in services:
        service.close()


def _assert_optimal(case: dict, problem, solution) -> None:
    expected = case["expected"]
    tolerance = max(expected["rel_tolerance"] * abs(expected["objective_value"]), expected["abs_tolerance"])
    assert solution.termination == "optimal"
    assert objective_value(problem, solution.schedule) == pytest.approx(expected["objective_value"], abs=tolerance)
    assert find_breaches(problem, solution.schedule) == []


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_runs_solve_on_the_service_workers_to_the_optimum(start_service, local_pool, tcp) -> None:
    _, address = start_service(workers=2, tcp=tcp)
    case = load_case("typical")
    problem = build_problem(case["request"])
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        assert client.size == 2
        with ThreadPoolExecutor(max_workers=3) as pool:
            solutions = list(pool.map(lambda _: client.solve(problem, "highs", 30.0, 0.25), range(6)))
    finally:
        client.close()
    for solution in solutions:
        _assert_optimal(case, problem, solution)
    assert client.using_service
    assert local_pool.created == [], "no local worker may start while the service answers"


def test_a_solve_stuck_in_the_service_times_out_like_a_local_one(start_service, local_pool) -> None:
    _, address = start_service(solve_function=fakes.hang)
    request = load_case("typical")["request"] | {"timeout_ms": 300}
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        with pytest.raises(MilpTimeout):
            client.solve(build_problem(request), "highs", 0.3, 0.25)
        # Through the core: the timeout ends in the rule-based schedule, the service stays in use.
        result = solve_dispatch(request, runner=client)
    finally:
        client.close()
    assert (result.status, result.solver) == ("fallback", "fallback_rule")
    assert result.fallback_reason.startswith("timeout")
    assert client.using_service and local_pool.created == []


def test_a_service_that_goes_away_mid_run_hands_over_to_local_workers(start_service, local_pool) -> None:
    service, address = start_service()
    case = load_case("typical")
    problem = build_problem(case["request"])
    warnings: list[str] = []
    client = ServiceClient(address, KEY, "highs", local_pool, on_fallback=warnings.append)
    try:
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
        service.close()
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
    finally:
        client.close()
    assert not client.using_service
    assert len(local_pool.created) == 1
    assert len(warnings) == 1 and "own workers" in warnings[0] and address in warnings[0]


class RecordingRunner(MilpRunner):
    def __init__(self) -> None:
        super().__init__(size=1)
        self.calls: list[tuple[float, float]] = []  # (clock reading, timeout_s)

    def solve(self, problem, solver, timeout_s, grace_s, on_start=None):
        self.calls.append((time.monotonic(), timeout_s))
        return super().solve(problem, solver, timeout_s, grace_s, on_start)


def test_a_solve_the_service_drops_midway_is_finished_locally_in_the_time_left(start_service) -> None:
    # Solving again with the whole timeout would break the bound on the solve's answer.
    service, address = start_service(solve_function=fakes.hang)
    local = RecordingRunner()
    client = ServiceClient(address, KEY, "highs", lambda: local)
    problem = build_problem(load_case("typical")["request"])
    readings: dict[str, float] = {}

    def close_service() -> None:
        readings["closed"] = time.monotonic()
        service.close()

    def drop_the_service_midway() -> None:  # its worker has taken the problem
        readings["started"] = time.monotonic()
        threading.Timer(0.5, close_service).start()

    try:
        readings["sent"] = time.monotonic()
        solution = client.solve(problem, "highs", 5.0, 0.25, drop_the_service_midway)
    finally:
        client.close()
        local.close()
    assert not client.using_service
    [(local_start, time_left)] = local.calls
    # The service's clock ran from some moment between sending and its worker taking the
    # problem, until the drop was seen: between the close and the local solve.
    assert 5.0 - (local_start - readings["sent"]) <= time_left <= 5.0 - (readings["closed"] - readings["started"])
    assert solution.termination == "optimal"


def _occupy_the_only_worker(client: ServiceClient) -> threading.Thread:
    """A solve in another thread, returned once the service's one worker has taken it."""
    taken = threading.Event()
    busy = threading.Thread(target=client.solve, args=("occupied", "highs", 5.0, 0.25, taken.set))
    busy.start()
    assert taken.wait(10), "the service's worker never took the first problem"
    return busy


def test_a_problem_waiting_on_a_busy_service_stays_there(start_service, local_pool, monkeypatch) -> None:
    # The only worker is busy for longer than the client tolerates silence: heartbeats keep it.
    monkeypatch.setattr(solver_service, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(solver_service, "SILENCE_LIMIT_S", 0.3)
    _, address = start_service(solve_function=fakes.echo_slowly)
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        assert client.solve("warm-up", "highs", 5.0, 0.25) == "warm-up"
        busy = _occupy_the_only_worker(client)
        assert client.solve("queued", "highs", 5.0, 0.25) == "queued"
        busy.join()
    finally:
        client.close()
    assert client.using_service and local_pool.created == []


def test_a_service_that_falls_silent_is_left_for_local_workers(start_service, monkeypatch) -> None:
    # A stopped or cut-off service closes nothing: silence is all the client has to go on.
    _, address = start_service(solve_function=fakes.echo_slowly)
    local = RecordingRunner()
    warnings: list[str] = []
    client = ServiceClient(address, KEY, "highs", lambda: local, on_fallback=warnings.append)
    case = load_case("typical")
    problem = build_problem(case["request"])
    try:
        assert client.solve("warm-up", "highs", 5.0, 0.25) == "warm-up"
        monkeypatch.setattr(solver_service, "HEARTBEAT_S", 3600.0)  # from here on, a frozen service
        monkeypatch.setattr(solver_service, "SILENCE_LIMIT_S", 0.3)
        busy = _occupy_the_only_worker(client)
        solution = client.solve(problem, "highs", 5.0, 0.25)
        busy.join()
    finally:
        client.close()
        local.close()
    _assert_optimal(case, problem, solution)
    assert not client.using_service
    assert [timeout for _, timeout in local.calls] == [5.0], "its clock never started on the service: the whole timeout is left"
    assert len(warnings) == 1 and "fell silent" in warnings[0]


def test_a_service_that_does_not_answer_past_its_kill_deadline_is_left_for_local_workers(
    start_service, local_pool, monkeypatch
) -> None:
    # A frozen service (stopped, its host paused) answers nothing: waiting on it for every later
    # problem would break the bound on each of their answers.
    _, address = start_service(solve_function=fakes.hang)
    monkeypatch.setattr(solver_service, "ANSWER_MARGIN_S", -0.2)  # gives up before the service's kill answers
    case = load_case("typical")
    problem = build_problem(case["request"])
    warnings: list[str] = []
    client = ServiceClient(address, KEY, "highs", local_pool, on_fallback=warnings.append)
    try:
        with pytest.raises(MilpTimeout, match=r"lost mid-solve \(it did not answer past its own kill deadline\)"):
            client.solve(problem, "highs", 0.3, 0.25)
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
    finally:
        client.close()
    assert not client.using_service and len(local_pool.created) == 1
    assert len(warnings) == 1 and "did not answer past its own kill deadline" in warnings[0]


def test_a_wrong_key_is_refused_before_anything_is_sent(start_service, local_pool) -> None:
    _, address = start_service()
    with pytest.raises(ServiceUnavailable, match="authentication failed"):
        ServiceClient(address, "not-the-key", "highs", local_pool)


def test_a_peer_that_never_authenticates_is_dropped(start_service, monkeypatch) -> None:
    monkeypatch.setattr(solver_service, "AUTH_TIMEOUT_S", 0.5)
    _, address = start_service()
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(address)
        silent.settimeout(10)
        silent.recv(1024)  # the challenge; no answer follows
        # The service shuts the connection instead of holding a thread for it for ever.
        assert silent.recv(1024) == b""


def test_a_connection_the_service_cannot_take_does_not_stop_it(start_service, local_pool, monkeypatch) -> None:
    # Out of threads (or file descriptors) for a moment: that client is refused, the next served.
    monkeypatch.setattr(solver_service, "ACCEPT_BACKOFF_S", 0.01)
    refused = []

    class OutOfThreadsOnce(threading.Thread):
        def start(self) -> None:
            if self.name == "solver-client" and not refused:
                refused.append(self)
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(solver_service.threading, "Thread", OutOfThreadsOnce)
    _, address = start_service()
    with pytest.raises(ServiceUnavailable):
        ServiceClient(address, KEY, "highs", local_pool)
    case = load_case("typical")
    problem = build_problem(case["request"])
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
        assert client.using_service and len(refused) == 1
    finally:
        client.close()


def test_a_service_that_cannot_start_its_workers_is_left_for_local_ones(start_service, local_pool) -> None:
    from dispatch_pipeline.core.runner import SolverCrashed

    service, address = start_service()

    def no_worker(*args, **kwargs):
        raise SolverCrashed("the solver worker died on start (exit code -9)")

    service.runner.solve = no_worker  # refused before any worker took the problem
    case = load_case("typical")
    problem = build_problem(case["request"])
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
    finally:
        client.close()
    assert not client.using_service and len(local_pool.created) == 1


def test_a_service_restarted_with_other_code_mid_run_is_not_used(start_service, local_pool, tmp_path) -> None:
    first, address = start_service()
    client = ServiceClient(address, KEY, "highs", local_pool)
    for conn in client._idle:  # the connection checked at start, gone with the first service
        conn.close()
    client._idle.clear()
    first.close()
    second = SolverService(address, KEY, 1)  # the same address, after a deploy elsewhere
    second.hello["code"] = "0000000000000000"
    threading.Thread(target=second.serve_forever, daemon=True).start()
    case = load_case("typical")
    problem = build_problem(case["request"])
    try:
        _assert_optimal(case, problem, client.solve(problem, "highs", 30.0, 0.25))
    finally:
        client.close()
        second.close()
    assert not client.using_service and len(local_pool.created) == 1


def test_a_service_running_other_solver_code_is_not_used(start_service, local_pool) -> None:
    service, address = start_service()
    service.hello["code"] = "0000000000000000"
    with pytest.raises(ServiceUnavailable, match="other solver code"):
        ServiceClient(address, KEY, "highs", local_pool)


def test_a_solver_the_service_lacks_is_not_sent_there(start_service, local_pool) -> None:
    service, address = start_service()
    service.hello["solvers"] = ["highs"]
    with pytest.raises(ServiceUnavailable, match="'cbc' is not installed there"):
        ServiceClient(address, KEY, "cbc", local_pool)


def test_a_service_on_a_host_without_cbc_does_not_offer_it(monkeypatch) -> None:
    """A client asking for CBC must go elsewhere rather than be told the solver failed."""
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None if name == "cbc" else "/usr/bin/" + name)
    assert solver_service.installed_solvers() == ["highs"]


def test_a_service_on_a_host_with_cbc_offers_it(monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: "/usr/bin/" + name)
    assert solver_service.installed_solvers() == ["highs", "cbc"]


def test_a_service_started_on_a_host_without_cbc_turns_cbc_clients_away(start_service, local_pool, monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None if name == "cbc" else "/usr/bin/" + name)
    _service, address = start_service()
    with pytest.raises(ServiceUnavailable, match="'cbc' is not installed there"):
        ServiceClient(address, KEY, "cbc", local_pool)
    client = ServiceClient(address, KEY, "highs", local_pool)
    try:
        assert client.using_service
    finally:
        client.close()


def test_nothing_listening_is_unavailable(tmp_path, local_pool) -> None:
    with pytest.raises(ServiceUnavailable, match="cannot connect"):
        ServiceClient(str(tmp_path / "nobody.sock"), KEY, "highs", local_pool)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("solver:7433", ("solver", 7433)), ("/run/solver.sock", "/run/solver.sock"),
     ("unix:/tmp/s.sock", "/tmp/s.sock"), ("[::1]:7433", ("::1", 7433))],
)
def test_addresses(text, expected) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["solver", "solver:http", "solver:70000", ":7433", "relative/path.sock"])
def test_a_bad_address_names_the_value(text) -> None:
    with pytest.raises(ValueError, match=f"got '{text}'"):
        parse_address(text)


def test_a_port_out_of_range_is_named_as_such() -> None:
    with pytest.raises(ValueError, match=r"port 99999 is outside 0\.\.65535 \(got '127\.0\.0\.1:99999'\)"):
        parse_address("127.0.0.1:99999")


def test_an_empty_key_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="key: must not be empty"):
        SolverService(str(tmp_path / "s.sock"), "")
