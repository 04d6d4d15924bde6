"""Materialisation metadata of `dispatch_schedule`: the numbers of the day, and a plot of it."""

from __future__ import annotations

import base64
import io
from typing import Any

import dagster as dg
import numpy as np

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.dispatch.plans import SolvedDay

KPI_METADATA = (
    "total_cost",
    "baseline_cost",
    "savings_vs_baseline",
    "peak_grid_import_kw",
    "self_sufficiency",
    "equivalent_full_cycles",
    "violation_kwh",
)


# Runs up to this size (a day-ahead tick's batch) get each partition's own numbers and plot; a
# backfill chunk gets a summary: a plot costs ~50 ms, and per-partition metadata is written into
# every partition's materialisation event.
DETAILED_PARTITIONS_MAX = 250


def schedule_metadata(
    plans: dict[str, SolvedDay], results: dict[str, DispatchResult]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(metadata shared by every partition of the run, metadata of each partition)."""
    if len(results) == 1:
        key, result = next(iter(results.items()))
        return _single(result, plans[key]), {}
    if len(results) <= DETAILED_PARTITIONS_MAX:
        return _many(results), {key: _single(result, plans[key]) for key, result in results.items()}
    skipped = (
        f"skipped: {len(results)} partitions in this run; plots are drawn for runs of up to "
        f"{DETAILED_PARTITIONS_MAX} partitions, to keep backfills fast"
    )
    return {**_many(results), "plot": dg.MetadataValue.text(skipped)}, {}


def _single(result: DispatchResult, plan: SolvedDay) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "site_id": result.site_id,
        "date": result.date.isoformat(),
        "timezone": result.timezone,
        "status": result.status,
        "solver": result.solver,
        "milp_solver": result.milp_solver or "none",
        "fallback_reason": result.fallback_reason or "none",
        "objective_value": dg.MetadataValue.float(result.objective_value),
        "solve_ms": dg.MetadataValue.float(round(result.solve_ms, 1)),
        "run_id": str(result.run_id),
    }
    if result.mip_gap is not None:
        metadata["mip_gap"] = dg.MetadataValue.float(result.mip_gap)
    for name in KPI_METADATA:
        metadata[f"kpi/{name}"] = dg.MetadataValue.float(float(getattr(result.kpis, name)))
    metadata["plot"] = dg.MetadataValue.md(f"![day](data:image/png;base64,{day_plot_png(result, plan)})")
    return metadata


def _many(results: dict[str, DispatchResult]) -> dict[str, Any]:
    solve_ms = np.array([r.solve_ms for r in results.values()])
    fallbacks = sorted(key for key, r in results.items() if r.status == "fallback")
    return {
        "partitions": len(results),
        "milp_solved": sum(r.solver == "milp" for r in results.values()),
        "fallbacks": len(fallbacks),
        "fallback_partitions": dg.MetadataValue.json(fallbacks[:50]),
        "solve_ms_mean": dg.MetadataValue.float(round(float(solve_ms.mean()), 1)),
        "solve_ms_max": dg.MetadataValue.float(round(float(solve_ms.max()), 1)),
        "solve_ms_total": dg.MetadataValue.float(round(float(solve_ms.sum()), 1)),
    }


def day_plot_png(result: DispatchResult, plan: SolvedDay) -> str:
    """PV, load, battery, grid (kW) and SOC over the local day, as base64 PNG."""
    import pandas as pd
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure  # renders with Agg, no display needed

    problem = plan.planned.problem
    times = pd.to_datetime([p.ts for p in result.points], utc=True).tz_convert(result.timezone)
    times = times.tz_localize(None)  # local wall clock on the axis
    battery = [p.batt_dis_kw - p.batt_ch_kw for p in result.points]
    grid = [p.grid_imp_kw - p.grid_exp_kw for p in result.points]
    soc = [p.soc * 100 for p in result.points]

    # A bare Figure (no pyplot state) with fixed margins: tight_layout alone would double the
    # ~100 ms a plot costs, and a day-ahead run draws one per site.
    figure = Figure(figsize=(9, 3.6), dpi=80)
    figure.subplots_adjust(left=0.08, right=0.93, bottom=0.14, top=0.9)
    power = figure.add_subplot()
    power.step(times, problem.pv_kw, where="post", label="PV forecast", color="#f2a900")
    power.step(times, problem.load_kw, where="post", label="load", color="#444444")
    power.step(times, battery, where="post", label="battery (+ discharge)", color="#2a7ab0")
    power.step(times, grid, where="post", label="grid (+ import)", color="#c0392b")
    power.axhline(0, color="#999999", linewidth=0.5)
    power.set_ylabel("kW")
    power.set_xlabel(f"local time ({result.timezone})")
    power.xaxis.set_major_formatter(DateFormatter("%H:%M"))
    charge = power.twinx()
    charge.plot(times, soc, color="#27ae60", linestyle="--", label="SOC")
    charge.set_ylabel("SOC %")
    charge.set_ylim(0, 100)
    lines = power.get_legend_handles_labels()
    more = charge.get_legend_handles_labels()
    power.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7, ncol=5)
    power.set_title(f"{result.site_id} {result.date} - {result.solver}, cost {result.kpis.total_cost:.2f}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return base64.b64encode(buffer.getvalue()).decode("ascii")
