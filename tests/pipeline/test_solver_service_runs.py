"""Runs that solve on a solver service, and runs whose service is not there."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from dispatch_pipeline.core.solver_service import SolverService
from dispatch_pipeline.defs.local_runs import build_local_job, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.defs.resources import DispatchSolver
from dispatch_pipeline.storage import latest_run

DATES = (dt.date(2025, 6, 2), dt.date(2025, 6, 3))
KEY = "pipeline-test-key"


@pytest.fixture
def service_address(tmp_path) -> Iterator[str]:
    service = SolverService(str(tmp_path / "solver.sock"), KEY, workers=1)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    yield str(service.bound_address)
    service.close()


def job_with_solver(resources: dict[str, Any], solver: DispatchSolver) -> dg.JobDefinition:
    return build_local_job({**resources, "solver": solver})


def run_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def test_a_run_plans_on_the_solver_service(resources, instance, engine, make_site, service_address):
    site = make_site("BERLIN_DEPOT", DATES)
    job = job_with_solver(resources, DispatchSolver(timeout_ms=5000, service=service_address, service_key=KEY))
    result = run_site_days(job, instance, [SiteDay(site.site_id, d) for d in DATES])
    assert result.success
    for date in DATES:
        stored = latest_run(engine, site.site_id, date)
        assert stored is not None and stored.run.dagster_run_id == result.run_id
        assert (stored.run.solver, stored.run.status) == ("milp", "ok")
    messages = run_messages(instance, result.run_id)
    assert any(f"MILP planned 2 of 2 site-day(s) on solver service {service_address}" in m for m in messages)


def test_a_run_whose_service_is_unreachable_plans_on_its_own_workers(
    resources, instance, engine, make_site, tmp_path
):
    site = make_site("KL_MALL", DATES)
    absent = str(tmp_path / "nobody-listens.sock")
    job = job_with_solver(resources, DispatchSolver(timeout_ms=5000, service=absent, service_key=KEY))
    result = run_site_days(job, instance, [SiteDay(site.site_id, d) for d in DATES])
    assert result.success
    for date in DATES:
        stored = latest_run(engine, site.site_id, date)
        assert stored is not None and (stored.run.solver, stored.run.status) == ("milp", "ok")
    messages = run_messages(instance, result.run_id)
    assert any(absent in m and "this run starts its own solver workers" in m for m in messages)
    assert any("on the run's own workers" in m for m in messages)
