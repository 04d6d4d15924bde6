"""How far the rule-based schedule is from the MILP, day by day, with and without a demand charge.

    python bench/fallback_quality.py [--before REF] [--seed 7] [--generated 24] [--market 24]

Four sets of site-days, each solved by the MILP (`solve_dispatch(request)`) and by the rule-based
schedule (`rule_based_schedule`), both costed by `objective_value`:

- demo: every demo site on a few dates over the year (winter, spring, summer and autumn weekdays
  and weekends, both daylight-saving Sundays), `demo_request(site, date, seed=...)` as shipped;
- cases: the reference cases of tests/data/cases;
- generated: `bench.generate.generated_requests` (demo sites, varied initial SOC);
- market: `bench.generate.market_requests` (demo sites on a dynamic tariff: an hourly day-ahead
  spot price plus a network fee, sold at spot; negative on sunny summer middays).

Every demo, generated and market day is run twice: as shipped (each demo site bills a demand charge) and
with `demand_charge_per_kw` 0; the reference cases as stored. Days are grouped by whether a demand
charge is billed. `--before REF` also costs the rule-based schedule of the package
dispatch_pipeline/core/fallback/ (at revisions before it, the module dispatch_pipeline/core/
fallback.py) as it is at the git revision REF (e.g. origin/main) on the same days, and reports the
change per day, in aggregate and the worst increase. The gap is (rule - milp) / |milp|.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generated_requests, market_requests
from dispatch_pipeline import solve_dispatch
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.feasibility import find_breaches
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.runner import default_runner
from dispatch_pipeline.demo import demo_request, demo_sites

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "tests" / "data" / "cases"
FALLBACK = "dispatch_pipeline/core/fallback"

# Weekdays and weekends over the seasons; 2024-03-31 and 2024-10-27 are Berlin's DST Sundays.
DATES = [
    dt.date(2024, 1, 17), dt.date(2024, 1, 20), dt.date(2024, 3, 31), dt.date(2024, 4, 1),
    dt.date(2024, 4, 16), dt.date(2024, 7, 10), dt.date(2024, 7, 14), dt.date(2024, 10, 27),
    dt.date(2024, 10, 29), dt.date(2024, 12, 11),
]


def days(seed: int, generated: int, market: int) -> list[tuple[str, str, dict]]:
    """(set, label, request) for every day of the benchmark, demand charge as shipped."""
    out = []
    for date in DATES:
        for site in demo_sites():
            out.append(("demo", f"{site.site_id} {date} {date:%a}", demo_request(site, date, seed=seed)))
    for path in sorted(CASES.glob("*.json")):
        out.append(("cases", path.stem, json.loads(path.read_text())["request"]))
    for i, request in enumerate(generated_requests(generated, start=dt.date(2024, 2, 5), seed=seed)):
        out.append(("generated", f"#{i} {request['site_id']} {request['date']}", request))
    for i, request in enumerate(market_requests(market, seed=seed)):
        out.append(("market", f"#{i} {request['site_id']} {request['date']}", request))
    return out


def without_demand_charge(request: dict) -> dict:
    return {**request, "tariff": {**request["tariff"], "demand_charge_per_kw": 0.0}}


def fallback_at(ref: str) -> Callable:
    """rule_based_schedule as dispatch_pipeline/core/fallback/ (or, before it was a package,
    fallback.py) defines it at git revision `ref`."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)

    folder = Path(tempfile.mkdtemp()) / "fallback_before"
    folder.mkdir()
    listed = git("ls-tree", "--name-only", f"{ref}:{FALLBACK}")
    if listed.returncode == 0:
        for name in (name for name in listed.stdout.split() if name.endswith(".py")):
            (folder / name).write_text(git("show", f"{ref}:{FALLBACK}/{name}").stdout)
    else:
        shown = git("show", f"{ref}:{FALLBACK}.py")
        if shown.returncode != 0:
            raise SystemExit(f"no {FALLBACK}/ nor {FALLBACK}.py at {ref}: {shown.stderr.strip()}")
        (folder / "__init__.py").write_text(shown.stdout)
    # Its modules import one another by their full names: while it loads, those names are its own,
    # then again the current package's.
    package = FALLBACK.replace("/", ".")

    def loaded() -> list[str]:
        return [name for name in sys.modules if name == package or name.startswith(package + ".")]

    current = {name: sys.modules.pop(name) for name in loaded()}
    spec = importlib.util.spec_from_file_location(
        package, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for name in loaded():
            del sys.modules[name]
        sys.modules.update(current)
    return module.rule_based_schedule


def measure(request: dict, before: Callable | None) -> dict:
    problem = build_problem(request)
    milp = solve_dispatch(request)
    schedule = rule_based_schedule(problem)
    breaches = find_breaches(problem, schedule)
    row = {
        "milp": milp.objective_value,
        "milp_solver": milp.solver,
        "rule": objective_value(problem, schedule),
        "peak_rule": float(schedule.grid_import.max(initial=0.0)),
        "peak_milp": milp.kpis.peak_grid_import_kw,
        "breaches": len(breaches),
    }
    if before is not None:
        old = before(problem)
        row["before"] = objective_value(problem, old)
        row["peak_before"] = float(old.grid_import.max(initial=0.0))
    return row


def gap(rule: float, milp: float) -> float:
    return (rule - milp) / max(abs(milp), 1e-9)


def report(title: str, rows: list[dict], with_before: bool) -> None:
    print(f"\n## {title}: {len(rows)} site-days\n")
    header = f"{'set':<10} {'day':<34} {'MILP':>11}"
    header += f" {'rule before':>12} {'gap':>7}" if with_before else ""
    header += f" {'rule':>12} {'gap':>7}"
    header += f" {'change':>9} {'peak before':>11}" if with_before else ""
    header += f" {'peak rule':>9} {'peak MILP':>9}"
    print(header)
    for r in rows:
        line = f"{r['set']:<10} {r['label']:<34} {r['milp']:>11.3f}"
        if with_before:
            line += f" {r['before']:>12.3f} {gap(r['before'], r['milp']):>7.2%}"
        line += f" {r['rule']:>12.3f} {gap(r['rule'], r['milp']):>7.2%}"
        if with_before:
            line += f" {r['rule'] - r['before']:>+9.3f} {r['peak_before']:>11.1f}"
        line += f" {r['peak_rule']:>9.1f} {r['peak_milp']:>9.1f}"
        if r["milp_solver"] != "milp" or r["breaches"]:
            line += f"  [MILP solver {r['milp_solver']}, {r['breaches']} breaches in the rule-based plan]"
        print(line)
    milp = sum(r["milp"] for r in rows)
    rule = sum(r["rule"] for r in rows)
    print(f"\nsum of objectives (mixed currencies, a rough total): MILP {milp:,.2f}, rule {rule:,.2f}"
          f" (gap {gap(rule, milp):.2%})")
    rule_gaps = np.array([gap(r["rule"], r["milp"]) for r in rows])
    print(f"gap rule vs MILP: mean {rule_gaps.mean():.2%}, median {np.median(rule_gaps):.2%}, max {rule_gaps.max():.2%}")
    for name in dict.fromkeys(r["set"] for r in rows):
        in_set = [r for r in rows if r["set"] == name]
        set_gaps = np.array([gap(r["rule"], r["milp"]) for r in in_set])
        line = (f"  {name:<10} {len(in_set):>3} days: sum gap {gap(sum(r['rule'] for r in in_set), sum(r['milp'] for r in in_set)):.2%},"
                f" mean {set_gaps.mean():.2%}, max {set_gaps.max():.2%}")
        if with_before:
            line += f"; before: sum gap {gap(sum(r['before'] for r in in_set), sum(r['milp'] for r in in_set)):.2%}"
        print(line)
    if not with_before:
        return
    before = sum(r["before"] for r in rows)
    before_gaps = np.array([gap(r["before"], r["milp"]) for r in rows])
    print(f"before: sum {before:,.2f} (gap {gap(before, milp):.2%}); gap mean {before_gaps.mean():.2%}, "
          f"median {np.median(before_gaps):.2%}, max {before_gaps.max():.2%}")
    change = np.array([r["rule"] - r["before"] for r in rows])
    relative = change / np.maximum(np.abs([r["before"] for r in rows]), 1e-9)
    tol = 1e-9
    print(f"days lower: {int((change < -tol).sum())}, unchanged: {int((np.abs(change) <= tol).sum())}, "
          f"higher: {int((change > tol).sum())}")
    worst = int(np.argmax(relative))
    print(f"worst change: {rows[worst]['set']} {rows[worst]['label']}: {change[worst]:+.6f} ({relative[worst]:+.4%})")
    best = int(np.argmin(relative))
    print(f"best change:  {rows[best]['set']} {rows[best]['label']}: {change[best]:+.6f} ({relative[best]:+.4%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REF", help="also cost the rule-based schedule of this git revision")
    parser.add_argument("--seed", type=int, default=7, help="demo data seed (default 7)")
    parser.add_argument("--generated", type=int, default=24, help="generated site-days (default 24)")
    parser.add_argument("--market", type=int, default=24, help="site-days on a dynamic tariff (default 24)")
    args = parser.parse_args()

    before = fallback_at(args.before) if args.before else None
    default_runner().warm(1)
    with_charge, without = [], []
    for name, label, request in days(args.seed, args.generated, args.market):
        charged = request["tariff"].get("demand_charge_per_kw", 0.0) > 0
        row = {"set": name, "label": label, **measure(request, before)}
        (with_charge if charged else without).append(row)
        if charged and name != "cases":
            without.append({"set": name, "label": label, **measure(without_demand_charge(request), before)})
    report("With a demand charge", with_charge, before is not None)
    report("Without a demand charge", without, before is not None)


if __name__ == "__main__":
    main()
