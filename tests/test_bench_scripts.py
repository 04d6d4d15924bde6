"""Every benchmark script runs as its docstring says, `python bench/<script>.py`, from any
directory: run by path, Python puts bench/ (not the repository) on the path, so a script
importing `bench.*` must put the repository there itself. api_load.py also runs in each of its
Idempotency-Key modes, on a few requests to one server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO

SCRIPTS = sorted(path for path in (REPO / "bench").glob("*.py") if "__main__" in path.read_text())


def test_the_scripts_are_found():
    assert {"backfill_throughput.py", "solve_latency.py", "stale_plans.py"} <= {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_benchmark_script_answers_help_run_by_its_path(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


# --------------------------------------------------------------- api_load.py's Idempotency-Key modes


@pytest.fixture(scope="module")
def api_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """One server (on SQLite: the script's own start, without PostgreSQL) for every mode's run."""
    from bench.api_load import started_server

    database = tmp_path_factory.mktemp("api_load") / "runs.sqlite"
    with started_server(f"sqlite:///{database}", workers=1) as server:
        yield server


@pytest.mark.parametrize("keys", ["none", "unique", "replay"])
def test_api_load_sends_each_idempotency_key_mode_and_checks_the_answers(keys, api_server, tmp_path):
    url, pid = api_server

    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_load.py"), "--url", url, "--server-pid", str(pid),
         "-n", "6", "-c", "2", "--warmup", "2", "--keys", keys],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"keys {keys}: " in done.stdout
    assert "requests: 6 sent, 6 ok, 0 errors" in done.stdout


def _answer(run_id: str, replayed: bool) -> httpx.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return httpx.Response(200, json={"run_id": run_id}, headers=headers)


@pytest.mark.parametrize(
    ("answer", "stored_run_id", "problem"),
    [
        (_answer("run-a", replayed=True), "run-a", None),
        (_answer("run-a", replayed=False), "run-a", "planned, not replayed"),
        (_answer("run-b", replayed=True), "run-a", "replayed another run"),
        (httpx.Response(200, text="[]", headers={"Idempotent-Replayed": "true"}), "run-a", "replayed another run"),
        (httpx.Response(200, text="{", headers={"Idempotent-Replayed": "true"}), "run-a", "replay not JSON"),
        (_answer("run-a", replayed=False), None, None),
        (_answer("run-a", replayed=True), None, "replayed, not planned"),
    ],
)
def test_api_load_counts_an_answer_other_than_the_one_its_key_mode_expects(answer, stored_run_id, problem):
    from bench.api_load import answer_problem

    assert answer_problem(answer, stored_run_id) == problem
