"""Materialisation metadata of `dispatch_schedule`: the numbers of the day, and a plot of it."""

from __future__ import annotations

import base64
import io
from typing import Any

import dagster as dg
import numpy as np

from dispatch_pipeline.core.problem import DispatchProblem
from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.dispatch.plans import SolvedDay
from dispatch_pipeline.defs.partition_metadata import detailed, run_metadata, skipped_detail

# The KPIs shown on the schedule's and the KPI asset's materialisations (all are in dispatch_kpis).
KPI_METADATA = (
    "total_cost",
    "baseline_cost",
    "savings_vs_baseline",
    "self_sufficiency",
    "pv_utilization",
    "equivalent_full_cycles",
    "peak_grid_import_kw",
    "violation_kwh",
)


def kpi_metadata(result: DispatchResult, currency: str) -> dict[str, Any]:
    """The day's KPIs under `kpi/` keys, rounded as an operator reads them; costs in `currency`."""
    metadata: dict[str, Any] = {"currency": currency}
    for name in KPI_METADATA:
        metadata[f"kpi/{name}"] = dg.MetadataValue.float(round(float(getattr(result.kpis, name)), 4))
    return metadata


def schedule_metadata(
    plans: dict[str, SolvedDay], results: dict[str, DispatchResult]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(metadata of the run, metadata of each partition)."""
    shared = run_metadata(_many(results))
    if not detailed(len(results)):
        return {**shared, "plot": dg.MetadataValue.text(skipped_detail(len(results)))}, {}
    plotter = DayPlotter()
    return shared, {key: _single(result, plans[key], plotter) for key, result in results.items()}


def _single(result: DispatchResult, plan: SolvedDay, plotter: DayPlotter) -> dict[str, Any]:
    currency = plan.planned.currency
    metadata: dict[str, Any] = {
        "site_id": result.site_id,
        "date": result.date.isoformat(),
        "timezone": result.timezone,
        "status": result.status,
        "solver": result.solver,
        "milp_solver": result.milp_solver or "none",
        "fallback_reason": result.fallback_reason or "none",
        "objective_value": dg.MetadataValue.float(result.objective_value),  # exactly as stored
        "solve_ms": dg.MetadataValue.float(round(result.solve_ms, 1)),
        "dispatch_run_id": str(result.run_id),
    }
    if result.mip_gap is not None:
        metadata["mip_gap"] = dg.MetadataValue.float(result.mip_gap)
    # Which issues the plan was made from: a later one makes it stale (stale_plan_sensor).
    for name, unissued in (("forecast_issued_at", "none"), ("prices_issued_at", "none (time-of-use tariff)")):
        issued = getattr(result, name)
        metadata[name] = dg.MetadataValue.timestamp(issued) if issued else unissued
    # And the registration of its site: registered again with other values since, it is stale too.
    if result.site_updated_at is not None:
        metadata["site_updated_at"] = dg.MetadataValue.timestamp(result.site_updated_at)
    metadata.update(kpi_metadata(result, currency))
    png = plotter.png_base64(result, plan.planned.problem, currency)
    metadata["plot"] = dg.MetadataValue.md(f"![day](data:image/png;base64,{png})")
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


# (label, colour) of the power curves, in kW: PV forecast, load, battery, grid.
POWER_CURVES = (
    ("PV forecast", "#f2a900"),
    ("load", "#444444"),
    ("battery (+ discharge)", "#2a7ab0"),
    ("grid (+ import)", "#c0392b"),
)


class DayPlotter:
    """PV, load, battery, grid (kW) and SOC over a local day, as base64 PNG.

    One figure serves every plot of a run: its axes, twin axis, locators and legend are built
    once and only the curves and titles change. Building them was about half of a plot's cost,
    and a day-ahead run draws one plot per site. Not thread-safe: one plotter per step.
    """

    def __init__(self) -> None:
        from matplotlib.figure import Figure  # renders with Agg, no display needed

        # A bare Figure (no pyplot state) with fixed margins: tight_layout would double the cost.
        self._figure = Figure(figsize=(9, 3.6), dpi=80)
        # Room below the axes for the legend: inside, it covered the curves.
        self._figure.subplots_adjust(left=0.08, right=0.93, bottom=0.27, top=0.9)
        power = self._figure.add_subplot()
        # x is real time, in hours since the day's first interval: on a fall-back day the repeated
        # hour follows the first one instead of folding back onto it. Ticks name the local clock.
        self._curves = [
            power.step([], [], where="post", label=label, color=color)[0]
            for label, color in POWER_CURVES
        ]
        power.axhline(0, color="#999999", linewidth=0.5)
        # Where the clocks change, on a DST day; hidden on others.
        self._clock_change = power.axvline(
            0, color="#999999", linewidth=0.8, linestyle=":", visible=False
        )
        power.set_ylabel("kW")
        charge = power.twinx()
        (self._soc,) = charge.plot([], [], color="#27ae60", linestyle="--", label="SOC")
        charge.set_ylabel("SOC %")
        charge.set_ylim(0, 100)
        power.legend(
            handles=[*self._curves, self._soc], loc="upper center", bbox_to_anchor=(0.5, -0.25),
            fontsize=7, ncol=5, frameon=False,
        )
        self.power_axes = power

    def png_base64(self, result: DispatchResult, problem: DispatchProblem, currency: str) -> str:
        import pandas as pd

        instants = pd.to_datetime([p.ts for p in result.points], utc=True)
        start = instants[0]
        hours = ((instants - start) / _HOUR).to_numpy(float)
        battery = [p.batt_dis_kw - p.batt_ch_kw for p in result.points]
        grid = [p.grid_imp_kw - p.grid_exp_kw for p in result.points]
        for curve, values in zip(
            self._curves, (problem.pv_kw, problem.load_kw, battery, grid), strict=True
        ):
            curve.set_data(hours, values)
        self._soc.set_data(hours, [p.soc * 100 for p in result.points])
        offsets = _utc_offsets(instants, result.timezone)
        changes = np.flatnonzero(offsets[1:] != offsets[:-1]) + 1
        xlabel = f"local time ({result.timezone})"
        if len(changes):
            # A NaN-separated vertical segment per change (there is one on a DST day).
            at = np.full((len(changes), 3), np.nan)
            at[:, :2] = hours[changes, None]
            self._clock_change.set_data(at.ravel(), np.tile([0.0, 1.0, np.nan], len(changes)))
            moves = ", ".join(
                f"UTC{_offset_text(offsets[i - 1])} to UTC{_offset_text(offsets[i])}"
                for i in changes
            )
            xlabel += f", clocks change at the dotted line: {moves}"
        self._clock_change.set_visible(bool(len(changes)))
        self.power_axes.relim(visible_only=True)
        self.power_axes.autoscale_view()
        self.power_axes.set_xticks(
            *_clock_ticks(start, self.power_axes.get_xlim(), result.timezone)
        )
        self.power_axes.set_xlabel(xlabel)
        self.power_axes.set_title(
            f"{result.site_id} {result.date} - {result.solver}, cost {result.kpis.total_cost:.2f} {currency}"
        )
        buffer = io.BytesIO()
        self._figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        return base64.b64encode(buffer.getvalue()).decode("ascii")


_HOUR = np.timedelta64(1, "h")
_TICK_HOURS = 3  # a tick every 3 hours of local clock time
_TICK_STEP = "15min"  # UTC offsets are whole quarter-hours


def _utc_offsets(instants: Any, timezone: str) -> np.ndarray:
    """Each instant's UTC offset in `timezone`, as timedelta64, without a Python loop."""
    return (instants.tz_convert(timezone).tz_localize(None) - instants.tz_localize(None)).to_numpy()


def _offset_text(offset: np.timedelta64) -> str:
    minutes = int(offset // np.timedelta64(1, "m"))
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _clock_ticks(
    start: Any, limits: tuple[float, float], timezone: str
) -> tuple[np.ndarray, list[str]]:
    """(positions, labels) of the ticks within `limits`, hours since `start`: every 3 local hours.

    Positions are real time, so on a DST day the ticks are unevenly spaced and, on a fall-back
    day, a repeated clock time would be labelled twice.
    """
    import pandas as pd

    low, high = limits
    first = start.floor("h") + pd.Timedelta(hours=np.floor(low))
    candidates = pd.date_range(
        first, start + pd.Timedelta(hours=np.ceil(high) + 1), freq=_TICK_STEP
    )
    local = candidates.tz_convert(timezone)
    on_tick = (local.minute == 0) & (local.hour % _TICK_HOURS == 0)
    positions = ((candidates - start) / _HOUR).to_numpy(float)
    on_tick &= (positions >= low) & (positions <= high)
    return positions[on_tick], list(local[on_tick].strftime("%H:%M"))
