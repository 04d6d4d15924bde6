"""What the explanation and KPI assets show of a stored dispatch run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dispatch_pipeline.core.result import DispatchResult

EXPLANATION_COLUMNS = ("ts", "reason_code", "reason", "binding", "marginal_cost_per_kwh")
ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # how results write interval starts


def explanations_frame(result: DispatchResult) -> pd.DataFrame:
    """One row per interval: why the battery and grid do what they do."""
    points = result.points
    return pd.DataFrame(
        {
            "ts": _utc_index([p.ts for p in points]),
            **{name: [getattr(p, name) for p in points] for name in EXPLANATION_COLUMNS[1:]},
        }
    )


def _utc_index(stamps: list[str]) -> pd.DatetimeIndex:
    """ISO_UTC strings as UTC instants; numpy parses them ten times faster than pandas would."""
    if not all(stamp.endswith("Z") for stamp in stamps):
        raise ValueError(f"interval starts must be UTC (ending in Z), e.g. {ISO_UTC}: got {stamps[:3]}")
    return pd.DatetimeIndex(np.array([stamp[:-1] for stamp in stamps], dtype="datetime64[us]")).tz_localize("UTC")


def decisions_table(result: DispatchResult, rows: int = 24) -> str:
    """Markdown of the intervals where the reason changes, on the site's own clock: an operator
    reads "14:15", not the UTC instant. On a fall-back day the repeated hour carries its UTC
    offset, so the two 02:15s can be told apart."""
    frame = explanations_frame(result)
    all_changes = frame[frame["reason_code"] != frame["reason_code"].shift()]
    changes = all_changes.head(rows)
    local = changes["ts"].dt.tz_convert(result.timezone)
    offsets = local.dt.strftime("%z")
    clock = local.dt.strftime("%H:%M")
    if frame["ts"].dt.tz_convert(result.timezone).dt.strftime("%z").nunique() > 1:
        clock = clock + " (UTC" + offsets.str[:3] + ":" + offsets.str[3:] + ")"
    table = pd.DataFrame(
        {f"local time ({result.timezone})": clock.to_numpy(), "reason_code": changes["reason_code"].to_numpy(),
         "reason": changes["reason"].to_numpy()}
    )
    caption = "The quarter-hours where the decision changes; each holds until the next."
    more = len(all_changes) - len(changes)
    footer = f"\n\n... and {more} more changes: the dispatch_explanations table has every interval." if more else ""
    return f"{caption}\n\n{table.to_markdown(index=False)}{footer}"


def kpis_record(result: DispatchResult) -> dict[str, Any]:
    """The run's KPIs with what identifies and qualifies them."""
    return {
        "run_id": str(result.run_id),
        "site_id": result.site_id,
        "date": result.date.isoformat(),
        "status": result.status,
        "solver": result.solver,
        "fallback_reason": result.fallback_reason,
        "objective_value": result.objective_value,
        **result.kpis.model_dump(),
    }


VIEWS = {"dispatch_explanations": explanations_frame, "dispatch_kpis": kpis_record}
