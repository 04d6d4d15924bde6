"""The optimum of a dispatch request, solved independently of dispatch_pipeline.

The model of docs/dispatch-contract.md ("The model"), written out from that text as one matrix and
solved with scipy.optimize.milp (HiGHS's branch and bound, all 2T binaries integral from the start,
relative gap 0). It imports nothing from dispatch_pipeline: defaults come from the contract's
request example, the number of intervals from the length of `load_kw`, and the request is assumed
valid (the contract's validation is not repeated here).

    .venv/bin/python tests/data/cases/independent_optimum.py tests/data/cases/typical.json [...]

prints, per file, the optimum and (for a case file) its expected objective_value. A file is a case
(`{"request": ..., "expected": ...}`) or a bare request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

BESS_DEFAULTS = {
    "capacity_kwh": 100.0,
    "max_charge_kw": 50.0,
    "max_discharge_kw": 50.0,
    "soc_min": 0.1,
    "soc_max": 0.9,
    "soc_initial": 0.5,
    "soc_final_min": None,
    "charge_efficiency": 0.95,
    "discharge_efficiency": 0.95,
    "cycle_cost_per_kwh": 0.0,
}
LIMIT_DEFAULTS = {"grid_import_max_kw": None, "grid_export_max_kw": None, "transformer_max_kw": None}
WEIGHT_DEFAULTS = {"cost": 1.0, "curtail": 0.2, "violation": 1000.0}

# Per-interval variables, in column order; then `peak` and `viol_end` once per day.
PER_INTERVAL = ("pv_set", "curtail", "ch", "dis", "imp", "exp", "viol_imp", "viol_lo", "viol_hi", "E", "b", "g")


def _with_defaults(given: dict | None, defaults: dict) -> dict:
    return {**defaults, **(given or {})}


def independent_optimum(request: dict, time_limit_s: float = 300.0) -> tuple[float, float]:
    """(objective, dual bound) of the contract's MILP for `request`, proven optimal (gap 0)."""
    load = np.asarray(request["load_kw"], dtype=float)
    pv = np.asarray(request["pv_kw"], dtype=float)
    buy = np.asarray(request["tariff"]["buy"], dtype=float)
    sell = np.asarray(request["tariff"]["sell"], dtype=float)
    demand_charge = float(request["tariff"].get("demand_charge_per_kw") or 0.0)
    bess = _with_defaults(request.get("bess"), BESS_DEFAULTS)
    limits = _with_defaults(request.get("limits"), LIMIT_DEFAULTS)
    w = _with_defaults(request.get("weights"), WEIGHT_DEFAULTS)
    T = len(load)
    dt = request["resolution_minutes"] / 60
    C = bess["capacity_kwh"]
    eta_c, eta_d = bess["charge_efficiency"], bess["discharge_efficiency"]
    max_ch, max_dis = bess["max_charge_kw"], bess["max_discharge_kw"]
    soc_final = bess["soc_initial"] if bess["soc_final_min"] is None else bess["soc_final_min"]

    col = {name: np.arange(T) + k * T for k, name in enumerate(PER_INTERVAL)}
    peak = len(PER_INTERVAL) * T
    viol_end = peak + 1
    n = viol_end + 1

    # Objective: w.cost * (energy cost + demand charge + cycle cost) + w.curtail * curtailed kWh
    # + w.violation * violation_kwh, where violation_kwh = sum viol_imp*dt + sum(viol_lo + viol_hi)
    # + viol_end (the SOC violations are kWh already; the import one is kW, hence *dt).
    c = np.zeros(n)
    c[col["imp"]] = w["cost"] * buy * dt
    c[col["exp"]] = -w["cost"] * sell * dt
    c[col["dis"]] = w["cost"] * bess["cycle_cost_per_kwh"] * dt
    c[peak] = w["cost"] * demand_charge
    c[col["curtail"]] = w["curtail"] * dt
    c[col["viol_imp"]] = w["violation"] * dt
    c[col["viol_lo"]] = w["violation"]
    c[col["viol_hi"]] = w["violation"]
    c[viol_end] = w["violation"]

    # All variables >= 0; physical 0 <= E <= C; binaries b (1 = charging allowed), g (1 = importing allowed).
    lower = np.zeros(n)
    upper = np.full(n, np.inf)
    upper[col["E"]] = C
    upper[col["b"]] = 1
    upper[col["g"]] = 1
    integrality = np.zeros(n)
    integrality[col["b"]] = 1
    integrality[col["g"]] = 1

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(terms: list[tuple[int, float]], low: float, high: float) -> None:
        r = len(lo)
        for j, v in terms:
            rows.append(r)
            cols.append(int(j))
            vals.append(float(v))
        lo.append(low)
        hi.append(high)

    import_cap = min((x for x in (limits["grid_import_max_kw"], limits["transformer_max_kw"]) if x is not None), default=None)
    export_caps = [x for x in (limits["grid_export_max_kw"], limits["transformer_max_kw"]) if x is not None]
    most_import = load + max_ch  # I_t
    most_export = np.minimum.reduce([pv + max_dis, *[np.full(T, x) for x in export_caps]])  # X_t
    inf = np.inf
    for t in range(T):
        v = {name: col[name][t] for name in PER_INTERVAL}
        # balance: pv_set + dis + imp = load + ch + exp
        row([(v["pv_set"], 1), (v["dis"], 1), (v["imp"], 1), (v["ch"], -1), (v["exp"], -1)], load[t], load[t])
        # pv: pv_set + curtail = pv_kw
        row([(v["pv_set"], 1), (v["curtail"], 1)], pv[t], pv[t])
        # energy: E_t = E_{t-1} + (eta_c*ch - dis/eta_d)*dt, E_{-1} = soc_initial*C
        previous = [(col["E"][t - 1], -1)] if t else []
        start = 0.0 if t else bess["soc_initial"] * C
        row([(v["E"], 1), (v["ch"], -eta_c * dt), (v["dis"], dt / eta_d), *previous], start, start)
        # soc band (soft): E + viol_lo >= soc_min*C, E - viol_hi <= soc_max*C
        row([(v["E"], 1), (v["viol_lo"], 1)], bess["soc_min"] * C, inf)
        row([(v["E"], 1), (v["viol_hi"], -1)], -inf, bess["soc_max"] * C)
        # ratings: ch <= max_ch*b, dis <= max_dis*(1-b)
        row([(v["ch"], 1), (v["b"], -max_ch)], -inf, 0.0)
        row([(v["dis"], 1), (v["b"], max_dis)], -inf, max_dis)
        # grid: imp <= I_t*g, exp <= X_t*(1-g)
        row([(v["imp"], 1), (v["g"], -most_import[t])], -inf, 0.0)
        row([(v["exp"], 1), (v["g"], most_export[t])], -inf, most_export[t])
        # import cap (soft): imp - viol_imp <= min(grid_import_max_kw, transformer_max_kw)
        if import_cap is not None:
            row([(v["imp"], 1), (v["viol_imp"], -1)], -inf, import_cap)
        # peak: imp <= peak
        row([(v["imp"], 1), (peak, -1)], -inf, 0.0)
    # terminal (soft): E_{T-1} + viol_end >= soc_final_min*C
    row([(col["E"][T - 1], 1), (viol_end, 1)], soc_final * C, inf)

    matrix = coo_matrix((vals, (rows, cols)), shape=(len(lo), n)).tocsr()
    result = milp(
        c,
        constraints=LinearConstraint(matrix, lo, hi),
        integrality=integrality,
        bounds=Bounds(lower, upper),
        options={"mip_rel_gap": 0.0, "time_limit": time_limit_s},
    )
    if result.status != 0:
        raise RuntimeError(f"scipy.optimize.milp did not prove an optimum: {result.message}")
    return float(result.fun), float(result.mip_dual_bound)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for path in paths:
        document = json.loads(Path(path).read_text())
        request = document.get("request", document)
        objective, bound = independent_optimum(request)
        line = f"{path}: optimum {objective:.6f} (bound {bound:.6f})"
        if "expected" in document:
            line += f", expected {document['expected']['objective_value']:.6f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
