"""Rebuild a Schedule from a result's points, to check what a caller actually receives."""

from __future__ import annotations

import numpy as np

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import DispatchResult, Schedule


def schedule_from_result(result: DispatchResult, problem: DispatchProblem) -> Schedule:
    def column(name: str) -> np.ndarray:
        return np.array([getattr(p, name) for p in result.points], dtype=float)

    return Schedule(
        pv_set=column("pv_set_kw"),
        curtail=column("curtail_kw"),
        charge=column("batt_ch_kw"),
        discharge=column("batt_dis_kw"),
        grid_import=column("grid_imp_kw"),
        grid_export=column("grid_exp_kw"),
        energy=column("soc") * problem.capacity_kwh,
    )
