"""Fixtures of the core tests."""

from __future__ import annotations

import pytest

from dispatch_pipeline.core.runner import MilpRunner


@pytest.fixture
def runner_with():
    """runner_with(function): a warm one-worker pool whose worker runs `function` to solve."""
    runners = []

    def make(function):
        runner = MilpRunner(size=1, solve_function=function)
        runner.warm()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()
