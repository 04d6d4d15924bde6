"""Shared helpers of the API tests."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from dispatch_pipeline.storage.tables import (
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)

RUN_TABLES = (dispatch_runs, dispatch_kpis, dispatch_schedule, dispatch_explanations)


def count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {t.name: connection.scalar(select(func.count()).select_from(t)) for t in RUN_TABLES}
