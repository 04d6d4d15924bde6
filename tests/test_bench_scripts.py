"""Every benchmark script runs as its docstring says, `python bench/<script>.py`, from any
directory: run by path, Python puts bench/ (not the repository) on the path, so a script
importing `bench.*` must put the repository there itself."""

from __future__ import annotations

import subprocess
import sys

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
