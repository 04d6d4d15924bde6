"""The pipeline materialised through Dagster against SQLite and PostgreSQL, rows read back."""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from sqlalchemy import func, select, text

from dispatch_pipeline.cli import main
from dispatch_pipeline.core.evaluate import objective_value
from dispatch_pipeline.core.fallback import rule_based_schedule
from dispatch_pipeline.core.problem import build_problem
from dispatch_pipeline.core.site import site_request
from dispatch_pipeline.defs.common import STRATEGY_TAG
from dispatch_pipeline.defs.dispatch import ops
from dispatch_pipeline.defs.local_runs import build_local_job, run_site_day, run_site_days
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.defs.resources import DispatchSolver
from dispatch_pipeline.demo import demo_forecast
from dispatch_pipeline.storage import latest_run, list_runs, save_forecast
from dispatch_pipeline.storage.staleness import DayWindow, stale_plans
from dispatch_pipeline.storage.tables import (
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
    sites,
)
from tests.pipeline.conftest import ISSUED_AT, price_table

DAY = dt.date(2025, 3, 11)
ASSET_KEYS = {"site_forecast", "site_tariff", "dispatch_schedule", "dispatch_explanations", "dispatch_kpis"}


def materialized_assets(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        counts[name] = counts.get(name, 0) + 1
    return counts


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


RUN_TABLES = (dispatch_runs, dispatch_kpis, dispatch_schedule, dispatch_explanations)


def run_table_rows(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {t.name: connection.scalar(select(func.count()).select_from(t)) for t in RUN_TABLES}


def site_registered_at(engine, site_id: str) -> dt.datetime:
    """The `updated_at` of the site's row as stored."""
    with engine.connect() as connection:
        return connection.scalar(select(sites.c.updated_at).where(sites.c.site_id == site_id))


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    error = failures[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_one_partition_is_planned_checked_and_stored(job, instance, engine, make_site):
    site = make_site("KL_MALL", (DAY,))
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert result.success
    assert set(materialized_assets(result)) == ASSET_KEYS
    checks = check_results(result)
    assert all(checks[name].passed for name in ("power_balance", "physical_soc", "export_cap"))
    assert checks["milp_planned"].passed

    stored = latest_run(engine, site.site_id, DAY)
    assert stored is not None
    assert stored.run.source == "dagster"
    assert stored.run.dagster_run_id == result.run_id
    # The registration of the site the plan was made with: a later change makes it stale.
    assert stored.run.site_updated_at == site_registered_at(engine, site.site_id)
    assert stored.run.solver == "milp" and stored.run.status == "ok"
    assert len(stored.points) == 96  # KL has no DST
    assert stored.points[0].ts == "2025-03-10T16:00:00Z"  # local midnight in UTC+8
    assert stored.points[0].reason and stored.points[0].reason_code

    schedule_event = next(
        e for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "dispatch_schedule"
    )
    metadata = schedule_event.materialization.metadata
    assert metadata["solver"].value == "milp"
    assert metadata["forecast_issued_at"].value == ISSUED_AT.timestamp()
    assert metadata["prices_issued_at"].value == "none (time-of-use tariff)"
    assert metadata["site_updated_at"].value == site_registered_at(engine, site.site_id).timestamp()
    assert metadata["plot"].value.startswith("![day](data:image/png;base64,")
    assert "kpi/total_cost" in metadata


def test_rematerialising_adds_a_run_and_keeps_history(job, instance, engine, make_site):
    site = make_site("BERLIN_DEPOT", (DAY,))
    day = SiteDay(site.site_id, DAY)
    first = run_site_day(job, instance, day)
    second = run_site_day(job, instance, day)
    assert first.success and second.success
    runs = list_runs(engine, site.site_id, DAY)
    assert [r.dagster_run_id for r in runs] == [second.run_id, first.run_id]  # newest first
    assert latest_run(engine, site.site_id, DAY).run.dagster_run_id == second.run_id


def test_a_ranged_run_stores_every_partition(job, instance, engine, make_site):
    dates = tuple(DAY + dt.timedelta(days=n) for n in range(3))
    first = make_site("PHOENIX_OFFICE", dates)
    second = make_site("BERLIN_DEPOT", dates)  # added right after: contiguous partitions
    days = [SiteDay(s.site_id, d) for s in (first, second) for d in dates]
    result = run_site_days(job, instance, [days[0], days[-1]])
    assert result.success
    assert materialized_assets(result) == {name: 6 for name in ASSET_KEYS}
    for day in days:
        stored = latest_run(engine, day.site_id, day.date)
        assert stored is not None, day
        assert stored.run.dagster_run_id == result.run_id
    # Berlin's plan is on Berlin's local day whatever the partition label's timezone
    assert latest_run(engine, second.site_id, DAY).points[0].ts == "2025-03-10T23:00:00Z"
    tariff_event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "site_tariff"
    )
    assert tariff_event.materialization.metadata["run/sources"].value == {"tou_tariff": 6}

    # The views describe the stored plans they were not asked to build again.
    stored = [latest_run(engine, day.site_id, day.date).to_result() for day in days]
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    kpis = metadata["dispatch_kpis"]
    # Two sites in two currencies: a mean per site, none across them.
    assert "run/savings_vs_baseline_mean" not in kpis
    by_site = kpis["run/savings_vs_baseline_mean_by_site"].value
    assert by_site.keys() == {day.site_id for day in days}
    for site_id, mean in by_site.items():
        plans = [plan for plan in stored if plan.site_id == site_id]
        assert mean == pytest.approx(statistics.fmean(plan.kpis.savings_vs_baseline for plan in plans), abs=1e-4)
    assert kpis["run/fallbacks"].value == 0
    reason_codes = metadata["dispatch_explanations"]["run/reason_codes"].value
    assert sum(reason_codes.values()) == sum(len(plan.points) for plan in stored) == 6 * 96

    # Each partition's materialisation also carries that day's own numbers, in its currency.
    per_partition = {
        (event.asset_key.to_user_string(), event.partition): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    for plan, site in zip(stored, [first] * 3 + [second] * 3, strict=True):
        key = SiteDay(plan.site_id, plan.date).key
        day_kpis = per_partition[("dispatch_kpis", key)]
        assert day_kpis["dispatch_run_id"].value == str(plan.run_id)
        assert day_kpis["currency"].value == site.currency
        assert day_kpis["kpi/total_cost"].value == pytest.approx(plan.kpis.total_cost, abs=1e-4)
        day_codes = per_partition[("dispatch_explanations", key)]["reason_codes"].value
        assert sum(day_codes.values()) == len(plan.points)
        assert per_partition[("site_tariff", key)]["currency"].value == site.currency
        assert per_partition[("site_forecast", key)]["intervals"].value == len(plan.points)


def test_a_loaded_price_series_replaces_the_tariff_in_the_plan(
    job, instance, engine, database_url, make_site, tmp_path
):
    site = make_site("BERLIN_DEPOT", (DAY,))
    prices = price_table(site.site_id)
    path = tmp_path / "spot.csv"
    prices.to_csv(path, index=False)
    assert main(["prices", "load", str(path), "--database-url", database_url]) == 0

    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert result.success
    tariff = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "site_tariff"
    ).materialization.metadata
    assert tariff["source"].value == "price_series"
    assert tariff["buy_min"].value == prices["buy"].min() < 0

    # The stored plan is costed on those prices: energy at each interval's price plus the peak.
    stored = latest_run(engine, site.site_id, DAY)
    assert [p.ts for p in stored.points] == prices["ts"].tolist()
    grid_import = np.array([p.grid_imp_kw for p in stored.points])
    grid_export = np.array([p.grid_exp_kw for p in stored.points])
    energy = (grid_import * prices["buy"].to_numpy() - grid_export * prices["sell"].to_numpy()).sum() * 0.25
    assert stored.kpis.total_cost == pytest.approx(energy + site.tariff.demand_charge_per_kw * grid_import.max(), abs=1e-6)
    # Explained in the site's currency.
    reasons = [p.reason for p in stored.points]
    assert any("EUR/kWh" in reason for reason in reasons) and not any("MYR" in reason for reason in reasons)
    # Paid to take energy at noon, the battery charges from the grid then.
    negative = prices["buy"].to_numpy() < 0
    assert sum(p.batt_ch_kw for p, cheap in zip(stored.points, negative, strict=True) if cheap) > 0


NEXT_ISSUE = ISSUED_AT + dt.timedelta(days=1)


def _stale_plans_query(today: dt.date) -> str:
    """The documented query for latest plans made stale by a later issue (docs/operations.md),
    asked on `today`."""
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    start = guide.index("SELECT r.site_id, r.date, r.id AS run_id, r.created_at, r.forecast_issued_at")
    query = guide[start : guide.index(";", start)]
    assert query.count("CURRENT_DATE") == 1
    return query.replace("CURRENT_DATE", f"DATE '{today.isoformat()}'")


def test_a_plan_keeps_when_its_inputs_were_issued_and_a_later_issue_shows_it_stale(
    job, instance, engine, database_url, make_site, tmp_path
):
    site = make_site("BERLIN_DEPOT", (DAY,))
    day = SiteDay(site.site_id, DAY)
    assert run_site_day(job, instance, day).success
    on_tariff = latest_run(engine, site.site_id, DAY)
    # Every interval from the one forecast issue; the prices from the ToU tariff, never issued.
    assert (on_tariff.run.forecast_issued_at, on_tariff.run.prices_issued_at) == (ISSUED_AT, None)

    # A re-issue of the morning only: the day's latest issue is that one's.
    morning = demo_forecast("BERLIN_DEPOT", DAY).iloc[:32]
    save_forecast(engine, site.site_id, morning, NEXT_ISSUE)
    path = tmp_path / "spot.csv"
    price_table(site.site_id).to_csv(path, index=False)
    prices_issued = dt.datetime(2025, 3, 10, 11, 0, tzinfo=dt.UTC)
    command = ["prices", "load", str(path), "--database-url", database_url, "--issued-at", prices_issued.isoformat()]
    assert main(command) == 0
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            stale = connection.execute(text(_stale_plans_query(DAY))).all()
        assert [(row.site_id, row.run_id) for row in stale if row.site_id == site.site_id] == [
            (site.site_id, on_tariff.run.run_id)
        ]

    assert run_site_day(job, instance, day).success
    on_prices = latest_run(engine, site.site_id, DAY)
    assert (on_prices.run.forecast_issued_at, on_prices.run.prices_issued_at) == (
        ISSUED_AT + dt.timedelta(days=1), prices_issued
    )
    assert on_prices.to_result().prices_issued_at == prices_issued
    assert on_prices.run.forecast_stored_at is not None and on_prices.run.prices_stored_at is not None
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            stale = connection.execute(text(_stale_plans_query(DAY))).all()
        assert [row for row in stale if row.site_id == site.site_id] == []

    # The first issue's morning corrected: no interval reads it (the next issue covers the
    # morning), so no plan is stale.
    save_forecast(engine, site.site_id, morning.assign(load_kw=morning["load_kw"] + 2.0), ISSUED_AT)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            assert [row for row in connection.execute(text(_stale_plans_query(DAY))) if row.site_id == site.site_id] == []

    # The morning's issue loaded again: as it is, nothing is stale; corrected, the plan is.
    save_forecast(engine, site.site_id, morning, NEXT_ISSUE)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            assert [row for row in connection.execute(text(_stale_plans_query(DAY))) if row.site_id == site.site_id] == []
    save_forecast(engine, site.site_id, morning.assign(load_kw=morning["load_kw"] + 1.0), NEXT_ISSUE)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            stale = connection.execute(text(_stale_plans_query(DAY))).all()
        assert [(row.site_id, row.run_id) for row in stale if row.site_id == site.site_id] == [
            (site.site_id, on_prices.run.run_id)
        ]


def test_a_price_series_covering_part_of_the_day_fails_it_naming_the_gap(
    job, instance, engine, database_url, make_site, tmp_path
):
    # Half a day of spot prices: planning the other half on the ToU tariff would be a guess.
    site = make_site("BERLIN_DEPOT", (DAY,))
    path = tmp_path / "half.csv"
    price_table(site.site_id).iloc[:48].to_csv(path, index=False)
    assert main(["prices", "load", str(path), "--database-url", database_url]) == 0

    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))

    assert not result.success
    message = failure_message(result)
    assert site.site_id in message and "2025-03-11" in message and "price series" in message
    assert "2025-03-11T11:00Z..2025-03-11T22:45Z" in message  # intervals 48-95 of 23:00Z
    assert "48 of the day's intervals" in message
    assert latest_run(engine, site.site_id, DAY) is None


def test_a_failure_between_writes_leaves_no_partial_run(job, instance, engine, make_site, monkeypatch):
    from dispatch_pipeline.storage.runs import write as runs_write

    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("KL_MALL", dates)
    real_bulk_insert = runs_write.bulk_insert

    def failing_bulk_insert(connection, table, columns, rows):
        if table.name == "dispatch_kpis":  # the last write: schedules, explanations, runs already in
            raise RuntimeError("injected failure while writing the KPIs")
        return real_bulk_insert(connection, table, columns, rows)

    monkeypatch.setattr(runs_write, "bulk_insert", failing_bulk_insert)
    before = run_table_rows(engine)
    result = run_site_days(job, instance, [SiteDay(site.site_id, DAY), SiteDay(site.site_id, dates[-1])])
    assert not result.success
    assert "injected failure while writing the KPIs" in failure_message(result)
    assert run_table_rows(engine) == before
    assert latest_run(engine, site.site_id) is None


def test_missing_forecast_fails_naming_site_date_and_intervals(job, instance, engine, make_site):
    site = make_site("KL_MALL")
    forecast = demo_forecast("KL_MALL", DAY)
    save_forecast(engine, site.site_id, forecast.drop(index=range(40, 44)), ISSUED_AT)
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert not result.success
    message = failure_message(result)
    assert site.site_id in message
    assert "2025-03-11" in message
    assert "2025-03-11T02:00Z..2025-03-11T02:45Z" in message  # intervals 40-43 of 16:00Z + 10 h
    assert "4 of the day's intervals" in message
    assert latest_run(engine, site.site_id, DAY) is None


def test_a_corrupted_schedule_fails_its_blocking_check(job, instance, engine, make_site, monkeypatch):
    site = make_site("KL_MALL", (DAY,))
    real_attempt = ops.attempt_milp

    def corrupted(problem, solver, runner, on_start=None):
        outcome = real_attempt(problem, solver, runner, on_start)
        schedule = outcome.schedule
        schedule.grid_import = schedule.grid_import + np.where(np.arange(len(schedule.grid_import)) == 5, 10.0, 0.0)
        return outcome

    monkeypatch.setattr(ops, "attempt_milp", corrupted)
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    checks = check_results(result)
    assert not checks["power_balance"].passed
    assert checks["physical_soc"].passed
    assert not result.success
    # Checked before storing: the bad plan is not in the database, nor materialised, nor reported on.
    assert latest_run(engine, site.site_id, DAY) is None
    assert not materialized_assets(result).keys() & {"dispatch_schedule", "dispatch_kpis", "dispatch_explanations"}


def test_a_breach_of_an_unnamed_hard_constraint_blocks_storing_too(job, instance, engine, make_site, monkeypatch):
    # 1 kWh appearing in the battery from nowhere: energy dynamics, none of the five named checks.
    site = make_site("KL_MALL", (DAY,))
    real_attempt = ops.attempt_milp

    def corrupted(problem, solver, runner, on_start=None):
        outcome = real_attempt(problem, solver, runner, on_start)
        outcome.schedule.energy = outcome.schedule.energy + np.where(np.arange(len(outcome.schedule.energy)) == 10, 1.0, 0.0)
        return outcome

    monkeypatch.setattr(ops, "attempt_milp", corrupted)
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    checks = check_results(result)
    assert not checks["other_hard_constraints"].passed
    assert "energy_dynamics" in str(checks["other_hard_constraints"].metadata)
    assert all(checks[name].passed for name in ("power_balance", "physical_soc", "export_cap"))
    assert not result.success
    assert latest_run(engine, site.site_id, DAY) is None


def test_a_milp_failure_falls_back_and_warns(job, instance, engine, make_site, monkeypatch):
    site = make_site("PHOENIX_OFFICE", (DAY,))
    monkeypatch.setattr(ops, "attempt_milp", lambda problem, solver, runner, on_start=None: "timeout: injected")
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert result.success
    check = check_results(result)["milp_planned"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    stored = latest_run(engine, site.site_id, DAY)
    assert stored.run.status == "fallback" and stored.run.solver == "fallback_rule"
    assert stored.run.fallback_reason == "timeout: injected"


def test_a_milp_step_that_raises_falls_back_and_its_time_counts_in_solve_ms(
    job, instance, engine, make_site, monkeypatch
):
    # Whatever the MILP step raises (a lost worker pool, a bug), the site gets the rule-based plan.
    site = make_site("PHOENIX_OFFICE", (DAY,))

    def broken(problem, solver, runner, on_start=None):
        raise RuntimeError("the worker pool is gone")

    class FourSecondsSpent:  # the MILP step's clock, read when it gave up
        def mark(self) -> None:
            pass

        def elapsed_ms(self) -> float:
            return 4000.0

    monkeypatch.setattr(ops, "attempt_milp", broken)
    monkeypatch.setattr(ops, "SolveClock", FourSecondsSpent)
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert result.success, failure_message(result)
    assert not check_results(result)["milp_planned"].passed
    stored = latest_run(engine, site.site_id, DAY)
    assert (stored.run.status, stored.run.solver) == ("fallback", "fallback_rule")
    assert stored.run.fallback_reason == "solver failed: RuntimeError: the worker pool is gone"
    # The time the MILP step took before failing is part of the fallback's solve time.
    assert stored.run.solve_ms >= 4000.0
    forecast = demo_forecast("PHOENIX_OFFICE", DAY)
    problem = build_problem(site_request(site, DAY, forecast["load_kw"], forecast["pv_kw"]))
    assert stored.run.objective_value == pytest.approx(objective_value(problem, rule_based_schedule(problem)), abs=1e-6)


def test_a_rule_based_run_is_stored_beside_the_milp_run_for_comparison(job, instance, engine, make_site):
    site = make_site("PHOENIX_OFFICE", (DAY,))
    day = SiteDay(site.site_id, DAY)
    milp = run_site_day(job, instance, day)
    rule = run_site_day(job, instance, day, tags={STRATEGY_TAG: "rule_based"})
    assert milp.success and rule.success
    check = check_results(rule)["milp_planned"]
    assert check.passed and check.metadata["rule_based_by_strategy"].value == 1  # asked for, not fallen back to
    assert check_results(milp)["milp_planned"].metadata["rule_based_by_strategy"].value == 0
    runs = {r.dagster_run_id: r for r in list_runs(engine, site.site_id, DAY)}
    assert (runs[rule.run_id].status, runs[rule.run_id].solver) == ("ok", "rule_based")
    assert runs[rule.run_id].milp_solver is None
    assert runs[milp.run_id].solver == "milp"
    stored = latest_run(engine, site.site_id, DAY)
    assert stored.run.dagster_run_id == rule.run_id
    # The rule-based plan of the very problem the MILP run solved, and never cheaper than it.
    forecast = demo_forecast("PHOENIX_OFFICE", DAY)
    problem = build_problem(site_request(site, DAY, forecast["load_kw"], forecast["pv_kw"]))
    assert stored.run.objective_value == pytest.approx(objective_value(problem, rule_based_schedule(problem)), abs=1e-6)
    assert runs[milp.run_id].objective_value <= stored.run.objective_value + 1e-6


def test_a_rule_based_run_needs_no_solver(instance, engine, make_site, resources, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no CBC: a MILP run would warn and fall back
    site = make_site("KL_MALL", (DAY,))
    job = build_local_job({**resources, "solver": DispatchSolver(solver="cbc", timeout_ms=5000)})
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY), tags={STRATEGY_TAG: "rule_based"})
    assert result.success
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("planned without the MILP" in message for message in logged)
    assert not [message for message in logged if "no 'cbc' executable" in message]
    stored = latest_run(engine, site.site_id, DAY)
    assert (stored.run.status, stored.run.solver, stored.run.milp_solver) == ("ok", "rule_based", None)


def test_an_unknown_strategy_fails_the_run_naming_tag_and_value_and_stores_nothing(
    job, instance, engine, make_site
):
    site = make_site("KL_MALL", (DAY,))
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY), tags={STRATEGY_TAG: "greedy"})
    assert not result.success
    # Refused as the run's resources start: before any step, the ingestion assets' included.
    assert not result.get_asset_materialization_events()
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    error, messages = failure.event_specific_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert "run tag dispatch/strategy='greedy' is not a strategy" in "\n".join(messages)
    assert "'rule_based'" in "\n".join(messages)
    assert list_runs(engine, site.site_id, DAY) == []


def test_a_solver_missing_on_the_machine_still_plans_every_site(
    instance, engine, make_site, resources, monkeypatch
):
    # A deployment set to CBC on a host without it: the site gets the rule-based plan, saying why.
    monkeypatch.setenv("PATH", "/nonexistent")
    site = make_site("KL_MALL", (DAY,))
    job = build_local_job({**resources, "solver": DispatchSolver(solver="cbc", timeout_ms=5000)})
    result = run_site_day(job, instance, SiteDay(site.site_id, DAY))
    assert result.success
    assert not check_results(result)["milp_planned"].passed
    stored = latest_run(engine, site.site_id, DAY)
    assert (stored.run.status, stored.run.solver) == ("fallback", "fallback_rule")
    assert stored.run.fallback_reason.startswith("solver missing: 'cbc' was requested")


def test_dst_days_have_92_and_100_intervals(job, instance, engine, make_site):
    spring, autumn = dt.date(2025, 3, 30), dt.date(2025, 10, 26)
    site = make_site("BERLIN_DEPOT", (spring, autumn))
    for date, intervals in ((spring, 92), (autumn, 100)):
        result = run_site_day(job, instance, SiteDay(site.site_id, date))
        assert result.success
        assert len(latest_run(engine, site.site_id, date).points) == intervals


def test_the_views_load_from_the_stored_plan(job, instance, engine, make_site, resources):
    from dispatch_pipeline.definitions import ASSETS

    site = make_site("KL_MALL", (DAY,))
    day = SiteDay(site.site_id, DAY)
    # Planned twice: the views must describe the newer plan, not the superseded one.
    assert run_site_day(job, instance, day).success
    assert run_site_day(job, instance, day).success
    newer, older = list_runs(engine, site.site_id, DAY)
    stored = latest_run(engine, site.site_id, DAY).to_result()
    assert stored.run_id == newer.run_id != older.run_id

    definitions = dg.Definitions(assets=ASSETS, resources=resources)
    explanations = definitions.load_asset_value("dispatch_explanations", partition_key=day.key, instance=instance)
    kpis = definitions.load_asset_value("dispatch_kpis", partition_key=day.key, instance=instance)

    frame = explanations[day.key]
    assert frame["reason_code"].tolist() == [point.reason_code for point in stored.points]
    assert str(frame["ts"].iloc[0]) == "2025-03-10 16:00:00+00:00"
    assert kpis[day.key]["run_id"] == str(stored.run_id)
    assert kpis[day.key]["total_cost"] == pytest.approx(stored.kpis.total_cost)


def _replan_schedule_only(job, instance, day: SiteDay) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        instance=instance,
        partition_key=day.key,
        asset_selection=[dg.AssetKey("dispatch_schedule")],
        raise_on_error=False,
    )


def test_re_planning_from_the_tariff_snapshot_bills_the_demand_charge_it_was_taken_with(
    job, instance, engine, make_site
):
    from dispatch_pipeline.storage import upsert_site

    site = make_site("KL_MALL", (DAY,))  # 1.5 MYR/kW on the day's peak import
    day = SiteDay(site.site_id, DAY)
    assert run_site_day(job, instance, day).success
    first = latest_run(engine, site.site_id, DAY)
    registered = site_registered_at(engine, site.site_id)
    upsert_site(engine, site.model_copy(update={"tariff": site.tariff.model_copy(update={"demand_charge_per_kw": 10.0})}))
    changed = site_registered_at(engine, site.site_id)
    assert first.run.site_updated_at == registered < changed

    assert _replan_schedule_only(job, instance, day).success

    again = latest_run(engine, site.site_id, DAY)
    assert again.run.run_id != first.run.run_id
    # The snapshot's prices with the snapshot's demand charge: the same problem, the same optimum.
    assert again.run.objective_value == pytest.approx(first.run.objective_value, rel=1e-6)
    # The plan step read the new registration, the snapshot was taken with the old one: the older
    # is recorded, so the plan, stored after the change, is stale all the same.
    assert again.run.site_updated_at == registered
    local = site.local_day(DAY, 15)
    found = stale_plans(engine, {day: DayWindow(site.site_id, DAY, local.start_utc, local.end_utc)})
    assert found[day].run_id == again.run.run_id and found[day].site_changed_at == changed


@pytest.mark.parametrize("column", ["demand_charge_per_kw", "issued_at"])
def test_re_planning_from_a_tariff_snapshot_of_an_earlier_release_asks_for_a_new_one(
    job, instance, engine, make_site, snapshots_dir, column
):
    import pickle

    site = make_site("KL_MALL", (DAY,))
    day = SiteDay(site.site_id, DAY)
    assert run_site_day(job, instance, day).success
    [snapshot] = (snapshots_dir / "site_tariff" / site.site_id).glob("*.pkl")
    frames = pickle.loads(snapshot.read_bytes())
    snapshot.write_bytes(pickle.dumps({date: frame.drop(columns=column) for date, frame in frames.items()}))

    replan = _replan_schedule_only(job, instance, day)

    assert not replan.success
    message = failure_message(replan)
    assert "site_tariff was materialised by an earlier release" in message
    assert {"demand_charge_per_kw": "demand charge", "issued_at": "issue times"}[column] in message


def test_re_planning_from_a_tariff_snapshot_without_the_sites_registration_records_the_plan_steps(
    job, instance, engine, make_site, snapshots_dir
):
    import pickle

    site = make_site("KL_MALL", (DAY,))
    day = SiteDay(site.site_id, DAY)
    assert run_site_day(job, instance, day).success
    # As an earlier release wrote it: prices, demand charge and issue times, no registration.
    [snapshot] = (snapshots_dir / "site_tariff" / site.site_id).glob("*.pkl")
    frames = pickle.loads(snapshot.read_bytes())
    snapshot.write_bytes(pickle.dumps({key: frame.drop(columns="site_updated_at") for key, frame in frames.items()}))

    assert _replan_schedule_only(job, instance, day).success
    assert latest_run(engine, site.site_id, DAY).run.site_updated_at == site_registered_at(engine, site.site_id)


def test_re_planning_a_price_series_day_from_its_snapshot_records_the_registration_it_was_priced_with(
    job, instance, engine, database_url, make_site, tmp_path
):
    from dispatch_pipeline.storage import upsert_site

    site = make_site("BERLIN_DEPOT", (DAY,))
    path = tmp_path / "spot.csv"
    price_table(site.site_id).to_csv(path, index=False)
    assert main(["prices", "load", str(path), "--database-url", database_url]) == 0
    day = SiteDay(site.site_id, DAY)
    assert run_site_day(job, instance, day).success
    first = latest_run(engine, site.site_id, DAY)
    registered = site_registered_at(engine, site.site_id)
    assert first.run.prices_issued_at is not None and first.run.site_updated_at == registered
    upsert_site(engine, site.model_copy(update={"tariff": site.tariff.model_copy(update={"demand_charge_per_kw": 10.0})}))
    changed = site_registered_at(engine, site.site_id)

    assert _replan_schedule_only(job, instance, day).success

    # The snapshot's prices, and its demand charge, are those of the registration it was taken with.
    again = latest_run(engine, site.site_id, DAY)
    assert again.run.run_id != first.run.run_id
    assert again.run.prices_issued_at == first.run.prices_issued_at
    assert again.run.site_updated_at == registered < changed
    local = site.local_day(DAY, 15)
    found = stale_plans(engine, {day: DayWindow(site.site_id, DAY, local.start_utc, local.end_utc)})
    assert found[day].run_id == again.run.run_id and found[day].site_changed_at == changed


def test_a_site_registered_again_between_pricing_and_planning_its_day_leaves_the_plan_stale(
    job, instance, engine, make_site, monkeypatch
):
    from dispatch_pipeline.storage import upsert_site

    site = make_site("KL_MALL", (DAY,))
    day = SiteDay(site.site_id, DAY)
    registered = site_registered_at(engine, site.site_id)
    real_registered_sites = ops.registered_sites

    def registered_again_first(engine_, site_ids):
        # `sites import` with a larger battery, after site_tariff read the site, before this step does.
        upsert_site(engine_, site.model_copy(update={"bess": site.bess.model_copy(update={"capacity_kwh": 999.0})}))
        return real_registered_sites(engine_, site_ids)

    monkeypatch.setattr(ops, "registered_sites", registered_again_first)

    assert run_site_day(job, instance, day).success

    changed = site_registered_at(engine, site.site_id)
    stored = latest_run(engine, site.site_id, DAY)
    assert stored.run.site_updated_at == registered < changed < stored.run.created_at
    local = site.local_day(DAY, 15)
    found = stale_plans(engine, {day: DayWindow(site.site_id, DAY, local.start_utc, local.end_utc)})
    assert found[day].run_id == stored.run.run_id and found[day].site_changed_at == changed


def test_re_planning_after_a_timezone_change_refuses_the_old_inputs(job, instance, engine, make_site):
    from dispatch_pipeline.storage import upsert_site

    site = make_site("PHOENIX_OFFICE", (DAY,))
    assert run_site_day(job, instance, SiteDay(site.site_id, DAY)).success
    first = latest_run(engine, site.site_id, DAY)
    upsert_site(engine, site.model_copy(update={"timezone": "Asia/Kuala_Lumpur"}))

    replan = _replan_schedule_only(job, instance, SiteDay(site.site_id, DAY))

    assert not replan.success
    message = failure_message(replan)
    assert "did its timezone change?" in message and "Asia/Kuala_Lumpur" in message
    assert latest_run(engine, site.site_id, DAY).run.run_id == first.run.run_id  # nothing stored


def _fail_after_the_commit(job, instance, days, monkeypatch) -> dg.ExecuteInProcessResult:
    """A run whose worker dies after its plans were committed, before Dagster recorded the
    step's success."""
    from dispatch_pipeline.defs import io_managers

    def die_after_commit(*_args):
        raise RuntimeError("run worker lost after the commit")

    with monkeypatch.context() as patch:
        patch.setattr(io_managers._run_results, "remember", die_after_commit)
        result = run_site_days(job, instance, days)
    assert not result.success
    return result


def _schedule_metadata_run_ids(result) -> set[str]:
    return {
        event.materialization.metadata["dispatch_run_id"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "dispatch_schedule"
    }


def test_a_retry_after_a_failure_past_the_commit_keeps_the_stored_plans(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    # run_retries re-executes the run from the failure: the retry plans again, stores nothing
    # twice, and everything it reports (metadata, checks, views) is about the stored plans.
    from tests.pipeline.retried_job import pipeline_job, reexecute

    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("KL_MALL", dates)
    days = [SiteDay(site.site_id, date) for date in dates]
    first = _fail_after_the_commit(pipeline_job(database_url, str(snapshots_dir)), instance, days, monkeypatch)
    stored_first = sorted(run.run_id for run in list_runs(engine, site.site_id))
    assert len(stored_first) == 2

    retry = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=True)
    assert retry.success
    assert sorted(run.run_id for run in list_runs(engine, site.site_id)) == stored_first
    assert materialized_assets(retry) == {"dispatch_schedule": 2, "dispatch_explanations": 2, "dispatch_kpis": 2}
    assert _schedule_metadata_run_ids(retry) == {str(run_id) for run_id in stored_first}
    kpi_runs = {
        event.materialization.metadata["dispatch_run_id"].value
        for event in retry.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "dispatch_kpis"
    }
    assert kpi_runs == {str(run_id) for run_id in stored_first}

    # Re-executing the successful retry is a deliberate re-materialisation: it adds runs.
    again = reexecute(instance, retry.run_id, database_url, str(snapshots_dir), from_failure=False)
    assert again.success
    assert len(list_runs(engine, site.site_id)) == 4


def test_a_retry_stores_its_plans_when_the_committed_ones_were_replaced_or_its_inputs_retaken(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    from tests.pipeline.retried_job import pipeline_job, reexecute

    site = make_site("KL_MALL", (DAY,))
    day = SiteDay(site.site_id, DAY)
    job = pipeline_job(database_url, str(snapshots_dir))

    # Replaced since by another run: the retry's plan becomes the latest, not the replaced one.
    first = _fail_after_the_commit(job, instance, [day], monkeypatch)
    assert run_site_day(job, instance, day).success
    retry = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=True)
    assert retry.success
    runs = list_runs(engine, site.site_id)
    assert len(runs) == 3 and runs[0].dagster_run_id == retry.run_id

    # Re-executed by hand with every step, the inputs taken afresh.
    second = _fail_after_the_commit(job, instance, [day], monkeypatch)
    again = reexecute(instance, second.run_id, database_url, str(snapshots_dir), from_failure=False)
    assert again.success
    runs = list_runs(engine, site.site_id)
    assert len(runs) == 5 and runs[0].dagster_run_id == again.run_id


def test_the_daemons_retry_with_every_step_keeps_the_committed_plans_too(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    # The Helm chart's retries execute every step (a pod's snapshot files go with it); an
    # automatic retry still finishes its failed run rather than planning anew.
    from tests.pipeline.retried_job import pipeline_job, reexecute

    site = make_site("KL_MALL", (DAY,))
    first = _fail_after_the_commit(
        pipeline_job(database_url, str(snapshots_dir)), instance, [SiteDay(site.site_id, DAY)], monkeypatch
    )
    stored_first = [run.run_id for run in list_runs(engine, site.site_id)]
    retry = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=False,
                      tags={"dagster/retry_number": "1"})
    assert retry.success
    assert [run.run_id for run in list_runs(engine, site.site_id)] == stored_first
    assert _schedule_metadata_run_ids(retry) == {str(stored_first[0])}


def test_the_daemons_retries_of_a_run_whose_kpis_failed_keep_its_plans_through_a_chain(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    # The plans were stored and the step that stored them succeeded; a later step failed. The
    # daemon's retry executing every step, and its own retry, finish that run: they plan again
    # and keep the stored plans, which carry the first run's id.
    from tests.pipeline.retried_job import pipeline_job, reexecute

    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("KL_MALL", dates)
    first = _fail_in_the_kpis(pipeline_job(database_url, str(snapshots_dir)), instance,
                              [SiteDay(site.site_id, date) for date in dates], monkeypatch)
    stored_first = sorted(run.run_id for run in list_runs(engine, site.site_id))
    with _kpis_failing(monkeypatch):
        second = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=False,
                           tags={"dagster/retry_number": "1"})
    third = reexecute(instance, second.run_id, database_url, str(snapshots_dir), from_failure=False,
                      tags={"dagster/retry_number": "2"})

    assert (first.success, second.success, third.success) == (False, False, True)
    assert len(stored_first) == 2
    assert sorted(run.run_id for run in list_runs(engine, site.site_id)) == stored_first
    assert _schedule_metadata_run_ids(third) == {str(run_id) for run_id in stored_first}
    checks = third.get_asset_check_evaluations()
    assert {check.check_name for check in checks if check.passed} >= {"power_balance", "physical_soc"}
    assert {check.metadata["partitions_checked"].value for check in checks} == {2}


@contextlib.contextmanager
def _kpis_failing(monkeypatch):
    """Runs in this block fail in their KPIs step, after their plans were stored."""
    from dispatch_pipeline.defs.dispatch import reports

    def lost_while_measuring(*_args):
        raise RuntimeError("run worker lost while measuring the KPIs")

    with monkeypatch.context() as patch:
        patch.setattr(reports, "kpi_metadata", lost_while_measuring)
        yield


def _fail_in_the_kpis(job, instance, days, monkeypatch) -> dg.ExecuteInProcessResult:
    """A run whose plans were stored, its storing step succeeded, and whose KPIs step failed."""
    with _kpis_failing(monkeypatch):
        result = run_site_days(job, instance, days)
    assert not result.success
    return result


def test_a_hand_re_execution_of_the_planning_steps_plans_anew_past_a_retry_that_did_not_plan(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    # The daemon's retry from the failure executed only the KPIs; a re-execution of it started
    # by hand that selects the planning steps is a deliberate re-materialisation.
    from tests.pipeline.retried_job import pipeline_job, reexecute

    site = make_site("KL_MALL", (DAY,))
    first = _fail_in_the_kpis(pipeline_job(database_url, str(snapshots_dir)), instance, [SiteDay(site.site_id, DAY)], monkeypatch)
    with _kpis_failing(monkeypatch):
        retry = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=True,
                          tags={"dagster/retry_number": "1"})
    assert not retry.success and len(list_runs(engine, site.site_id)) == 1

    by_hand = reexecute(instance, retry.run_id, database_url, str(snapshots_dir), from_failure=False,
                        step_selection=["dispatch_schedule.build_dispatch_problem*"])

    assert by_hand.success
    runs = list_runs(engine, site.site_id)
    assert len(runs) == 2 and runs[0].dagster_run_id == by_hand.run_id


def test_the_daemons_retry_of_a_hand_re_execution_from_the_failure_keeps_the_plans_it_finishes(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    from tests.pipeline.retried_job import pipeline_job, reexecute

    site = make_site("KL_MALL", (DAY,))
    first = _fail_in_the_kpis(pipeline_job(database_url, str(snapshots_dir)), instance, [SiteDay(site.site_id, DAY)], monkeypatch)
    stored_first = [run.run_id for run in list_runs(engine, site.site_id)]
    with _kpis_failing(monkeypatch):
        by_hand = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=True)
    assert not by_hand.success

    retry = reexecute(instance, by_hand.run_id, database_url, str(snapshots_dir), from_failure=False,
                      tags={"dagster/retry_number": "1"})

    assert retry.success
    assert [run.run_id for run in list_runs(engine, site.site_id)] == stored_first


def test_the_daemons_retry_plans_again_when_a_newer_forecast_arrived_since_the_commit(
    instance, engine, make_site, database_url, snapshots_dir, monkeypatch
):
    # Executing every step, the retry reads the forecast afresh; the plan committed before the
    # failure was made from the older issue and must not stand as this run's plan of the newer.
    from tests.pipeline.retried_job import pipeline_job, reexecute

    dates = (DAY, DAY + dt.timedelta(days=1))
    site = make_site("KL_MALL", dates)
    changed, unchanged = (SiteDay(site.site_id, date) for date in dates)
    first = _fail_after_the_commit(pipeline_job(database_url, str(snapshots_dir)), instance, [changed, unchanged], monkeypatch)
    committed = {run.date: run.run_id for run in list_runs(engine, site.site_id)}
    doubled = demo_forecast("KL_MALL", changed.date).assign(load_kw=lambda f: f["load_kw"] * 2)
    save_forecast(engine, site.site_id, doubled, ISSUED_AT + dt.timedelta(days=1))

    retry = reexecute(instance, first.run_id, database_url, str(snapshots_dir), from_failure=False,
                      tags={"dagster/retry_number": "1"})

    assert retry.success
    assert len(list_runs(engine, site.site_id)) == 3
    replanned = latest_run(engine, site.site_id, changed.date)
    assert replanned.run.dagster_run_id == retry.run_id
    balanced_load = [p.pv_set_kw + p.batt_dis_kw + p.grid_imp_kw - p.batt_ch_kw - p.grid_exp_kw for p in replanned.points]
    assert balanced_load == pytest.approx(doubled["load_kw"].to_numpy())
    assert latest_run(engine, site.site_id, unchanged.date).run.run_id == committed[unchanged.date]
    assert _schedule_metadata_run_ids(retry) == {str(replanned.run.run_id), str(committed[unchanged.date])}
