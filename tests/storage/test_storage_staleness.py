"""Which latest Dagster plans the series stored since have made stale: a newer issue, or rows the
day reads written after the plan read its own (its issue loaded again with other values); or
their site registered with other values since the registration the plan was made with."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import Engine, select

from dispatch_pipeline.core.calendar import local_day
from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.core.site import Site
from dispatch_pipeline.demo.sites import demo_site
from dispatch_pipeline.storage import (
    get_run,
    load_forecast,
    load_price_series,
    read_registered_sites,
    remove_sites,
    save_forecast,
    save_price_series,
    save_runs,
    upsert_site,
)
from dispatch_pipeline.storage.forecasts import latest_issue, latest_write
from dispatch_pipeline.storage.staleness import DayWindow, StalePlan, stale_plans
from dispatch_pipeline.storage.tables import sites
from tests.storage.conftest import build_result

UTC = dt.UTC
TIMEZONE = "Asia/Kuala_Lumpur"
DATE = dt.date(2024, 3, 15)
NEXT_DATE = DATE + dt.timedelta(days=1)
ISSUE = dt.datetime(2024, 3, 14, 6, 0, tzinfo=UTC)
EARLIER, LATER = ISSUE - dt.timedelta(hours=6), ISSUE + dt.timedelta(hours=6)


def forecast(date: dt.date = DATE, load: float = 50.0, intervals: slice = slice(None)) -> pd.DataFrame:
    ts = local_day(date, TIMEZONE, 15).timestamps()[intervals]
    return pd.DataFrame({"ts": ts, "load_kw": load, "pv_kw": 5.0})


def prices(date: dt.date = DATE, buy: float = 0.3) -> pd.DataFrame:
    ts = local_day(date, TIMEZONE, 15).timestamps()
    return pd.DataFrame({"ts": ts, "buy": buy, "sell": 0.1})


def plan(engine: Engine, site_id: str, date: dt.date = DATE, *, read: dict | None = None) -> DispatchResult:
    """A Dagster plan of the day from what storage holds now (or from `read`, inputs read
    earlier), keeping what the pipeline keeps of its inputs and of its site's registration."""
    day = local_day(date, TIMEZONE, 15)
    frames = read or stored_inputs(engine, site_id, date)
    forecast_frame, price_frame = frames["forecast"], frames["prices"]
    result = build_result(site_id, date, timezone=TIMEZONE).model_copy(
        update={
            "forecast_issued_at": latest_issue(forecast_frame),
            "forecast_stored_at": latest_write(forecast_frame),
            "prices_issued_at": latest_issue(price_frame),
            "prices_stored_at": latest_write(price_frame),
            "site_updated_at": frames["site_updated_at"],
        }
    )
    assert len(forecast_frame) == day.intervals
    save_runs(engine, [result], source="dagster")
    return result


def stored_inputs(engine: Engine, site_id: str, date: dt.date = DATE) -> dict:
    """The day's series as stored now, and the `updated_at` of the site's registration (None
    when it is not registered), as the pipeline's steps read them."""
    day = local_day(date, TIMEZONE, 15)
    registered = read_registered_sites(engine, [site_id])[0]
    return {
        "forecast": load_forecast(engine, site_id, day.start_utc, day.end_utc),
        "prices": load_price_series(engine, site_id, day.start_utc, day.end_utc),
        "site_updated_at": registered[0].updated_at if registered else None,
    }


def stale(engine: Engine, site_id: str, date: dt.date = DATE) -> StalePlan | None:
    day = local_day(date, TIMEZONE, 15)
    return stale_plans(engine, {"day": DayWindow(site_id, date, day.start_utc, day.end_utc)}).get("day")


def test_loading_the_issue_a_plan_read_again_with_other_values_makes_it_stale(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, forecast(), ISSUE)
    made = plan(engine, site_id)
    assert made.forecast_stored_at is not None
    assert stale(engine, site_id) is None

    # A corrected file under the same issue time: no newer issue, other values for the morning.
    save_forecast(engine, site_id, forecast(load=70.0, intervals=slice(0, 8)), ISSUE)

    found = stale(engine, site_id)
    assert found is not None and found.run_id == made.run_id
    assert found.newest_issue == ISSUE and found.newest_write > made.forecast_stored_at
    # Planned again from the corrected values, the day is no longer stale.
    plan(engine, site_id)
    assert stale(engine, site_id) is None


def test_a_price_issue_loaded_again_with_other_values_makes_its_plan_stale(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, forecast(), ISSUE)
    save_price_series(engine, site_id, prices(), ISSUE)
    made = plan(engine, site_id)
    assert (made.prices_issued_at, stale(engine, site_id)) == (ISSUE, None)

    save_price_series(engine, site_id, prices(buy=0.3), ISSUE)  # as it was: nothing to re-plan
    assert stale(engine, site_id) is None
    save_price_series(engine, site_id, prices(buy=0.35), ISSUE)
    found = stale(engine, site_id)
    assert found is not None and found.run_id == made.run_id


def test_loading_again_what_the_day_holds_or_only_other_days_leaves_its_plan_fresh(
    engine: Engine, site_id: str
) -> None:
    both_days = pd.concat([forecast(DATE), forecast(NEXT_DATE)], ignore_index=True)
    save_forecast(engine, site_id, both_days, ISSUE)
    plan(engine, site_id)
    written = stored_inputs(engine, site_id)["forecast"]["stored_at"]

    # The same file again, and the same issue with other values for the next day only.
    save_forecast(engine, site_id, both_days, ISSUE)
    save_forecast(engine, site_id, pd.concat([forecast(DATE), forecast(NEXT_DATE, load=80.0)], ignore_index=True), ISSUE)

    assert stale(engine, site_id) is None
    # The day's rows keep the time their values were written.
    assert stored_inputs(engine, site_id)["forecast"]["stored_at"].equals(written)
    assert (stored_inputs(engine, site_id, NEXT_DATE)["forecast"]["stored_at"] > written.max()).all()


def test_a_reload_between_reading_the_inputs_and_storing_the_plan_makes_it_stale(
    engine: Engine, site_id: str
) -> None:
    # A Dagster run reads its inputs in one step and stores the plan later (a re-plan from a
    # snapshot: much later). What it read counts, not when the plan was stored.
    save_forecast(engine, site_id, forecast(), ISSUE)
    read = stored_inputs(engine, site_id)
    save_forecast(engine, site_id, forecast(load=70.0), ISSUE)
    made = plan(engine, site_id, read=read)
    assert made.forecast_issued_at == ISSUE
    found = stale(engine, site_id)
    assert found is not None and found.run_id == made.run_id


def test_rows_of_an_issue_no_interval_reads_do_not_make_a_plan_stale(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, forecast(load=40.0), EARLIER)
    save_forecast(engine, site_id, forecast(), ISSUE)
    plan(engine, site_id)
    # Every interval reads the issue of ISSUE: the earlier one, corrected, changes no plan.
    save_forecast(engine, site_id, forecast(load=45.0), EARLIER)
    assert stale(engine, site_id) is None


def test_an_issue_loaded_out_of_order_where_the_plan_read_an_older_one_makes_it_stale(
    engine: Engine, site_id: str
) -> None:
    save_forecast(engine, site_id, forecast(load=40.0), EARLIER)
    save_forecast(engine, site_id, forecast(intervals=slice(0, 48)), LATER)
    made = plan(engine, site_id)
    assert made.forecast_issued_at == LATER
    # Issued between the two, loaded last: the afternoon reads it now, though it is not the newest.
    save_forecast(engine, site_id, forecast(load=60.0, intervals=slice(48, None)), ISSUE)
    found = stale(engine, site_id)
    assert found is not None and found.newest_issue == LATER


def test_a_plan_not_knowing_when_its_rows_were_written_counts_from_its_creation(
    engine: Engine, site_id: str
) -> None:
    # Runs stored before migration 0006, or made from a snapshot of an earlier release.
    save_forecast(engine, site_id, forecast(), ISSUE)
    result = build_result(site_id, DATE, timezone=TIMEZONE).model_copy(update={"forecast_issued_at": ISSUE})
    save_runs(engine, [result], source="dagster")
    assert stale(engine, site_id) is None
    save_forecast(engine, site_id, forecast(load=70.0, intervals=slice(0, 4)), ISSUE)
    found = stale(engine, site_id)
    assert found is not None and found.run_id == result.run_id


def test_the_state_of_the_inputs_changes_with_every_rewrite(engine: Engine, site_id: str) -> None:
    # stale_plan_sensor re-plans once per state: each load that changes the day gives a new one.
    # The prices, written before the forecast's rewrites, are part of the state too.
    save_price_series(engine, site_id, prices(), ISSUE)
    save_forecast(engine, site_id, forecast(), ISSUE)
    plan(engine, site_id)
    save_forecast(engine, site_id, forecast(load=70.0, intervals=slice(0, 4)), ISSUE)
    first = stale(engine, site_id)
    save_forecast(engine, site_id, forecast(load=70.0, intervals=slice(0, 4)), ISSUE)
    assert stale(engine, site_id) == first  # the same values: the same state
    save_forecast(engine, site_id, forecast(load=75.0, intervals=slice(0, 4)), ISSUE)
    second = stale(engine, site_id)
    assert first is not None and second is not None and second.inputs != first.inputs
    assert second.newest_write > first.newest_write


def test_many_days_are_asked_in_chunks_of_one_statement(engine: Engine, site_id: str) -> None:
    # More days than one statement takes: each gets its own answer.
    dates = [DATE + dt.timedelta(days=n) for n in range(205)]
    save_forecast(engine, site_id, pd.concat([forecast(date) for date in dates], ignore_index=True), ISSUE)
    results = [
        build_result(site_id, date, timezone=TIMEZONE).model_copy(update={"forecast_issued_at": ISSUE})
        for date in dates
    ]
    save_runs(engine, results, source="dagster")
    rewritten = [dates[0], dates[200], dates[204]]
    save_forecast(
        engine, site_id, pd.concat([forecast(date, load=70.0) for date in rewritten], ignore_index=True), ISSUE
    )
    windows = {
        date: DayWindow(site_id, date, day.start_utc, day.end_utc)
        for date in dates
        for day in [local_day(date, TIMEZONE, 15)]
    }
    found = stale_plans(engine, windows)
    assert sorted(found) == rewritten
    assert {plan.run_id for plan in found.values()} == {
        result.run_id for result in results if result.date in rewritten
    }


def with_capacity(site: Site, capacity_kwh: float) -> Site:
    return site.model_copy(update={"bess": site.bess.model_copy(update={"capacity_kwh": capacity_kwh})})


def site_updated_at(engine: Engine, site_id: str) -> dt.datetime:
    with engine.connect() as connection:
        return connection.scalar(select(sites.c.updated_at).where(sites.c.site_id == site_id))


def test_a_plan_made_before_its_site_changed_is_stale_once_per_change(engine: Engine, site_id: str) -> None:
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    upsert_site(engine, site)
    save_forecast(engine, site_id, forecast(), ISSUE)
    made = plan(engine, site_id)
    registered = site_updated_at(engine, site_id)

    # Registered again as it is (a daily import of the same file): nothing changed.
    upsert_site(engine, site)
    assert site_updated_at(engine, site_id) == registered
    assert stale(engine, site_id) is None

    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 2))
    found = stale(engine, site_id)
    assert found is not None and found.run_id == made.run_id
    assert found.site_changed_at == site_updated_at(engine, site_id) > registered
    assert (found.newest_issue, found.newest_write) == (ISSUE, made.forecast_stored_at)
    # Another change before the day is planned again: another state, so another re-plan.
    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 3))
    again = stale(engine, site_id)
    assert again is not None and again.inputs != found.inputs

    plan(engine, site_id)
    assert stale(engine, site_id) is None


def test_the_state_of_a_plan_stale_by_its_series_only_names_no_site(engine: Engine, site_id: str) -> None:
    # The series' state alone: no site change to name.
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": site_id}))
    save_forecast(engine, site_id, forecast(), ISSUE)
    plan(engine, site_id)
    save_forecast(engine, site_id, forecast(), LATER)
    found = stale(engine, site_id)
    assert found is not None and found.site_changed_at is None
    assert found.inputs == f"{LATER.isoformat()} written {found.newest_write.isoformat()}"


def test_days_of_a_site_no_longer_registered_are_judged_by_their_series_only(engine: Engine, site_id: str) -> None:
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    upsert_site(engine, site)
    save_forecast(engine, site_id, forecast(), ISSUE)
    plan(engine, site_id)
    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 2))
    assert stale(engine, site_id) is not None
    remove_sites(engine, [site_id])
    # The change of a site no longer registered stales nothing...
    assert stale(engine, site_id) is None
    # ...while its series still do: a day left unjudged would pass the line above as well.
    save_forecast(engine, site_id, forecast(), LATER)
    found = stale(engine, site_id)
    assert found is not None and found.site_changed_at is None
    assert found.inputs == f"{LATER.isoformat()} written {found.newest_write.isoformat()}"


def test_a_site_changed_between_reading_it_and_storing_the_plan_makes_the_plan_stale(
    engine: Engine, site_id: str
) -> None:
    # A Dagster run reads its site in one step and stores the plan later (a re-plan from a tariff
    # snapshot: much later). The registration it planned with counts, not when the plan was stored.
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    upsert_site(engine, site)
    save_forecast(engine, site_id, forecast(), ISSUE)
    read = stored_inputs(engine, site_id)
    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 2))
    changed = site_updated_at(engine, site_id)
    made = plan(engine, site_id, read=read)

    stored = get_run(engine, made.run_id).run
    assert stored.site_updated_at == read["site_updated_at"] < changed < stored.created_at
    found = stale(engine, site_id)
    assert found is not None and found.run_id == made.run_id
    assert found.site_changed_at == changed
    assert found.inputs == f"{ISSUE.isoformat()} written {made.forecast_stored_at.isoformat()} site {changed.isoformat()}"
    # Planned again with the registration as it is now, the day is no longer stale.
    plan(engine, site_id)
    assert stale(engine, site_id) is None


def test_a_site_imported_again_as_it_is_while_its_day_was_planning_leaves_the_plan_fresh(
    engine: Engine, site_id: str
) -> None:
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    upsert_site(engine, site)
    save_forecast(engine, site_id, forecast(), ISSUE)
    read = stored_inputs(engine, site_id)
    upsert_site(engine, site)  # the daily import of the same sites.yaml
    plan(engine, site_id, read=read)
    assert site_updated_at(engine, site_id) == read["site_updated_at"]
    assert stale(engine, site_id) is None


def test_a_plan_not_knowing_its_sites_registration_counts_from_its_creation(engine: Engine, site_id: str) -> None:
    # Runs stored before migration 0007: a change before the plan was stored goes unseen, one after is seen.
    site = demo_site("KL_MALL").model_copy(update={"site_id": site_id})
    upsert_site(engine, site)
    save_forecast(engine, site_id, forecast(), ISSUE)
    read = stored_inputs(engine, site_id)
    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 2))
    made = plan(engine, site_id, read={**read, "site_updated_at": None})
    assert get_run(engine, made.run_id).run.site_updated_at is None
    assert stale(engine, site_id) is None

    upsert_site(engine, with_capacity(site, site.bess.capacity_kwh * 3))
    found = stale(engine, site_id)
    assert found is not None and found.site_changed_at == site_updated_at(engine, site_id)
