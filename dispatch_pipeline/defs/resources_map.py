"""The resources every run of the pipeline needs, keyed as the assets ask for them."""

from __future__ import annotations

from typing import Any

from dispatch_pipeline.defs.dispatch.checks import DISPATCH_IO_MANAGER_KEY
from dispatch_pipeline.defs.dispatch.reports import VIEW_IO_MANAGER_KEY
from dispatch_pipeline.defs.io_managers import (
    DispatchRunIOManager,
    DispatchRunViewIOManager,
    SiteDayPickleIOManager,
)
from dispatch_pipeline.defs.resources import (
    DispatchSolver,
    DispatchStorage,
    default_solver,
    default_storage,
)


def pipeline_resources(
    storage: DispatchStorage | None = None,
    solver: DispatchSolver | None = None,
    pickle_dir: str = "",
) -> dict[str, Any]:
    """Resources for `Definitions` or `dg.materialize`; tests pass their own database."""
    storage = storage or default_storage()
    return {
        "storage": storage,
        "solver": solver or default_solver(),
        "site_day_io_manager": SiteDayPickleIOManager(base_dir=pickle_dir),
        DISPATCH_IO_MANAGER_KEY: DispatchRunIOManager(storage=storage),
        VIEW_IO_MANAGER_KEY: DispatchRunViewIOManager(storage=storage),
    }
