"""Fixtures for the storage tests: one scratch database per backend and session, and results.

PostgreSQL tests need the server at 127.0.0.1:5432 (trust auth, user postgres; the environment
variables DISPATCH_TEST_PGHOST/DISPATCH_TEST_PGPORT move it). If it is not reachable they fail,
unless DISPATCH_SKIP_POSTGRES=1 says to skip them. `-m "not postgres"` deselects them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, select

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.request import Weights
from dispatch_pipeline.core.result import BINDING_NAMES, DispatchResult, Kpis, Point
from dispatch_pipeline.storage import open_database
from dispatch_pipeline.storage.tables import (
    KPI_COLUMNS,
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)
from tests.postgres import BACKENDS, scratch_database


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(backend, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Engine:
    return open_database(database_url)


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same backend, for tests that migrate from nothing."""
    with scratch_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def site_id() -> str:
    """A site no other test writes to: tests share the session's database."""
    return f"T_{uuid.uuid4().hex[:12]}"


ResultFactory = Callable[..., DispatchResult]


@pytest.fixture
def make_result() -> ResultFactory:
    return build_result


def build_result(
    site_id: str,
    date: dt.date = dt.date(2024, 3, 15),
    *,
    timezone: str = "Asia/Kuala_Lumpur",
    resolution_minutes: int = 15,
    solver: str = "milp",
    seed: int = 0,
) -> DispatchResult:
    """A plausible, hand-built result (values need not be optimal, only well-formed)."""
    rng = random.Random(seed)
    day = local_day(date, timezone, resolution_minutes)
    milp = solver == "milp"
    points = [
        Point(
            ts=ts,
            pv_set_kw=rng.uniform(0, 60),
            batt_ch_kw=rng.uniform(0, 50),
            batt_dis_kw=0.0,
            grid_imp_kw=rng.uniform(0, 80),
            grid_exp_kw=0.0,
            curtail_kw=rng.choice([0.0, rng.uniform(0, 5)]),
            soc=rng.uniform(0.1, 0.9),
            # Quotes, a semicolon and non-ASCII: text must travel as data, never as SQL.
            reason=f"Charging {rng.uniform(0, 50):.1f} kW — PV surplus; it's 'cheap' (0.{j:02d} MYR/kWh)",
            reason_code=rng.choice(["charge_pv_surplus", "import_idle", "discharge_peak"]),
            binding=sorted(rng.sample(BINDING_NAMES, rng.randint(0, 2))),
            marginal_cost_per_kwh=rng.uniform(-0.1, 0.6) if milp else None,
        )
        for j, ts in enumerate(day.iso_timestamps())
    ]
    return DispatchResult(
        run_id=uuid.uuid4(),
        status="fallback" if solver == "fallback_rule" else "ok",
        fallback_used=solver == "fallback_rule",
        solver=solver,
        objective_value=rng.uniform(10, 100),
        kpis=Kpis(**{name: rng.uniform(0, 100) for name in KPI_COLUMNS}),
        site_id=site_id,
        date=date,
        timezone=timezone,
        resolution_minutes=resolution_minutes,
        fallback_reason="timeout" if solver == "fallback_rule" else None,
        milp_solver="highs" if solver != "rule_based" else None,
        mip_gap=rng.uniform(0, 1e-4) if milp else None,
        solve_ms=rng.uniform(10, 500),
        timeout_ms=3000,
        objective_config=Weights(cost=1.0, curtail=0.2, violation=1000.0),
        points=points,
    )


def stored_row_counts(engine: Engine, run_ids: list[uuid.UUID]) -> dict[str, int]:
    """Rows belonging to these runs, per run table."""
    tables = {
        "dispatch_runs": dispatch_runs.c.id,
        "dispatch_kpis": dispatch_kpis.c.run_id,
        "dispatch_schedule": dispatch_schedule.c.run_id,
        "dispatch_explanations": dispatch_explanations.c.run_id,
    }
    with engine.connect() as connection:
        return {
            name: connection.scalar(select(func.count()).where(column.in_(run_ids)))
            for name, column in tables.items()
        }


@pytest.fixture
def row_counts() -> Callable[[Engine, list[uuid.UUID]], dict[str, int]]:
    return stored_row_counts


class InjectedFailure(RuntimeError):
    pass


@contextlib.contextmanager
def failure_after_statement(engine: Engine, starts_with: str, mentioning: str | None = None) -> Iterator[None]:
    """Fail the first statement starting with `starts_with` (and, if given, carrying the value
    `mentioning` among its parameters) once the database has executed it.

    Its rows are then written inside the open transaction, so only a rollback keeps them out.
    Naming a later item's value fails the statement that writes it, after the earlier ones.
    """

    def fail_once_written(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(starts_with.upper()):
            return
        if mentioning is not None and mentioning not in repr(parameters):
            return
        event.remove(engine, "after_cursor_execute", fail_once_written)
        raise InjectedFailure(f"injected failure after {statement.split()[:3]}")

    event.listen(engine, "after_cursor_execute", fail_once_written)
    try:
        yield
    finally:
        if event.contains(engine, "after_cursor_execute", fail_once_written):
            event.remove(engine, "after_cursor_execute", fail_once_written)
