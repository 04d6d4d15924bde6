"""The day-ahead schedule across timezones and DST days, and the site partitions sensor."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from sqlalchemy import delete, update

from dispatch_pipeline.defs.automation.day_ahead import (
    day_ahead_dispatch_schedule,
    due_sites,
    faults_to_report,
    with_site_partitions,
)
from dispatch_pipeline.defs.automation.jobs import day_ahead_dispatch_job
from dispatch_pipeline.defs.automation.sensors import site_partitions_sensor
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.demo import demo_forecast, demo_site
from dispatch_pipeline.storage import StoredSiteInvalid, open_database, save_forecast, upsert_site
from dispatch_pipeline.storage.tables import forecasts, sites
from tests.pipeline.conftest import ISSUED_AT

UTC = dt.UTC
ZONES = {
    "KL": "Asia/Kuala_Lumpur",  # UTC+8, no DST
    "BERLIN": "Europe/Berlin",  # CET/CEST
    "PHOENIX": "America/Phoenix",  # UTC-7, no DST
    "NEW_YORK": "America/New_York",  # EST/EDT
    "KOLKATA": "Asia/Kolkata",  # UTC+5:30
}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, persistent_instance: dg.DagsterInstance):
    """A SQLite database with one site per zone, its definitions and an instance knowing them."""
    url = f"sqlite:///{tmp_path_factory.mktemp('automation') / 'dispatch.sqlite'}"
    engine = open_database(url)
    for name, zone in ZONES.items():
        site = demo_site("KL_MALL").model_copy(update={"site_id": name, "timezone": zone})
        upsert_site(engine, site)
    storage = DispatchStorage(database_url=url)
    from dispatch_pipeline.definitions import ASSETS
    from dispatch_pipeline.defs.resources_map import pipeline_resources

    definitions = dg.Definitions(
        assets=ASSETS,
        jobs=[day_ahead_dispatch_job],
        schedules=[day_ahead_dispatch_schedule],
        sensors=[site_partitions_sensor],
        resources=pipeline_resources(storage=storage),
    )
    persistent_instance.add_dynamic_partitions("sites", list(ZONES))
    return definitions, persistent_instance, storage, engine


def tick(fleet, when: dt.datetime) -> dict[str, str]:
    requests = tick_requests(fleet, when)
    for request in requests:
        assert request.tags["dispatch/site"] == request.partition_key.split("|")[1]
        assert request.run_key == request.partition_key
    return {r.tags["dispatch/site"]: r.partition_key for r in requests}


def tick_requests(fleet, when: dt.datetime) -> list[dg.RunRequest]:
    definitions, instance, storage, _ = fleet
    # As a context manager: the context's own instance must be closed (it would otherwise stay
    # registered with Dagster after being garbage-collected, breaking later Definitions loads).
    with dg.build_schedule_context(
        scheduled_execution_time=when,
        instance=instance,
        repository_def=definitions.get_repository_def(),
        resources={"storage": storage},
    ) as context:
        data = day_ahead_dispatch_schedule.evaluate_tick(context)
    return list(data.run_requests or [])


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # 06:00Z is 14:00 in Kuala Lumpur: plan KL's tomorrow, nobody else's.
        (dt.datetime(2025, 3, 11, 6, 0, tzinfo=UTC), {"KL": "2025-03-12|KL"}),
        # 08:30Z is 14:00 in Kolkata (+5:30): the quarter-hour tick catches half-hour zones.
        (dt.datetime(2025, 3, 11, 8, 30, tzinfo=UTC), {"KOLKATA": "2025-03-12|KOLKATA"}),
        # 21:00Z is 14:00 in Phoenix: tomorrow in Phoenix is still the 12th there.
        (dt.datetime(2025, 3, 11, 21, 0, tzinfo=UTC), {"PHOENIX": "2025-03-12|PHOENIX"}),
        # Berlin's last CET day before spring-forward: 14:00 CET = 13:00Z, plans the 92-quarter day.
        (dt.datetime(2025, 3, 29, 13, 0, tzinfo=UTC), {"BERLIN": "2025-03-30|BERLIN"}),
        # On the spring-forward day itself Berlin's 14:00 is CEST = 12:00Z; 13:00Z is 15:00 there.
        (dt.datetime(2025, 3, 30, 12, 0, tzinfo=UTC), {"BERLIN": "2025-03-31|BERLIN"}),
        (dt.datetime(2025, 3, 30, 13, 0, tzinfo=UTC), {}),
        # New York's fall-back day: 14:00 EST = 19:00Z (it was 18:00Z the day before, in EDT).
        (dt.datetime(2025, 11, 1, 18, 0, tzinfo=UTC), {"NEW_YORK": "2025-11-02|NEW_YORK"}),
        (dt.datetime(2025, 11, 2, 19, 0, tzinfo=UTC), {"NEW_YORK": "2025-11-03|NEW_YORK"}),
        # A tick at no site's 14:00 requests nothing.
        (dt.datetime(2025, 3, 11, 3, 15, tzinfo=UTC), {}),
    ],
)
def test_schedule_ticks_request_each_sites_local_tomorrow(fleet, when, expected):
    assert tick(fleet, when) == expected


def test_a_due_site_without_partition_gets_one_and_is_planned(fleet):
    # Registered just before its planning time, before the sites sensor's next evaluation.
    _, instance, _, engine = fleet
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": "KL_NEW"}))
    assert "KL_NEW" not in instance.get_dynamic_partitions("sites")
    try:
        planned = tick(fleet, dt.datetime(2025, 3, 11, 6, 0, tzinfo=UTC))
    finally:
        with engine.begin() as connection:  # the fleet is shared: leave it as it was
            connection.execute(delete(sites).where(sites.c.site_id == "KL_NEW"))
    try:
        assert planned == {"KL": "2025-03-12|KL", "KL_NEW": "2025-03-12|KL_NEW"}
        assert "KL_NEW" in instance.get_dynamic_partitions("sites")
    finally:
        instance.delete_dynamic_partition("sites", "KL_NEW")


def test_a_site_stored_invalid_is_planned_alone_and_the_others_as_usual(fleet):
    # Its run fails naming the fault (test_partition_recovery); it must not stop the fleet's tick,
    # nor join the run of the ready sites beside it in partition order, whose data it shares.
    _, instance, _, engine = fleet
    tomorrow = dt.date(2025, 7, 2)
    added = ["KL_A", "KL_B", "KL_BROKEN"]  # neighbours in partition order
    for site_id in added:
        upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": site_id}))
        save_forecast(engine, site_id, demo_forecast("KL_MALL", tomorrow), ISSUED_AT)
    instance.add_dynamic_partitions("sites", added)
    with engine.begin() as connection:
        connection.execute(update(sites).where(sites.c.site_id == "KL_BROKEN").values(pv_kwp=-1.0))
    try:
        requests = tick_requests(fleet, dt.datetime(2025, 7, 1, 6, 0, tzinfo=UTC))
    finally:
        with engine.begin() as connection:  # the fleet is shared: leave it as it was
            connection.execute(delete(forecasts).where(forecasts.c.site_id.in_(added)))
            connection.execute(delete(sites).where(sites.c.site_id.in_(added)))
        for site_id in added:
            instance.delete_dynamic_partition("sites", site_id)
    assert sorted(request.run_key for request in requests) == [
        "2025-07-02|KL",  # no forecast: alone, and its run fails naming what is missing
        "2025-07-02|KL_A..2025-07-02|KL_B",  # the ready sites, in one run
        "2025-07-02|KL_BROKEN",
    ]


def test_a_site_stored_invalid_is_reported_once_a_day_not_at_every_tick():
    broken = StoredSiteInvalid("site KL_BROKEN: pv_kwp: must be >= 0, got -1.0", "KL_BROKEN", "Asia/Kuala_Lumpur")
    zoneless = StoredSiteInvalid("site MARS: timezone: not an IANA zone, got 'Mars/Base'", "MARS", "Mars/Base")
    day = [dt.datetime(2025, 7, 1, tzinfo=UTC) + dt.timedelta(minutes=15 * n) for n in range(96)]
    reported = {at: faults_to_report([broken, zoneless], [at]) for at in day}
    # At 14:00 in Kuala Lumpur (06:00Z), when its run fails too; the zoneless one at 14:00 UTC.
    assert {at: faults for at, faults in reported.items() if faults} == {
        dt.datetime(2025, 7, 1, 6, 0, tzinfo=UTC): [broken],
        dt.datetime(2025, 7, 1, 14, 0, tzinfo=UTC): [zoneless],
    }
    # A tick that catches up missed ones reports what they would have.
    assert faults_to_report([broken, zoneless], day[:60]) == [broken, zoneless]


def test_a_tick_evaluated_again_does_not_plan_a_site_twice(fleet):
    """The daemon may evaluate a tick again (resuming after a crash); by then the site-day may be
    grouped differently, so its run key alone would not stop a second run."""
    _, instance, _, _ = fleet
    when = dt.datetime(2025, 6, 11, 6, 0, tzinfo=UTC)  # 14:00 in Kuala Lumpur; no other test's tick
    assert tick(fleet, when)["KL"] == "2025-06-12|KL"
    # The first evaluation's run was launched: the second finds it by its tick tag.
    instance.add_run(dg.DagsterRun(
        job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
        tags={"dispatch/tick": when.isoformat(), "dagster/partition": "2025-06-12|KL"},
    ))
    assert "KL" not in tick(fleet, when)
    assert tick_skip_message(fleet, when) == f"every site due at {when.isoformat()} has a run of its tick already"


def tick_skip_message(fleet, when: dt.datetime) -> str | None:
    definitions, instance, storage, _ = fleet
    with dg.build_schedule_context(
        scheduled_execution_time=when, instance=instance, repository_def=definitions.get_repository_def(),
        resources={"storage": storage},
    ) as context:
        return day_ahead_dispatch_schedule.evaluate_tick(context).skip_message


def test_ticks_the_daemon_missed_are_planned_at_the_next_one(fleet):
    """Dagster evaluates only the latest missed tick of this schedule: the sites due at the others
    (Kuala Lumpur at 06:00Z, Kolkata at 08:30Z) must not go without tomorrow's plan."""
    _, instance, _, _ = fleet
    last_launch = dg.DagsterRun(
        job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
        tags={"dispatch/planning": "day_ahead", "dispatch/tick": "2025-09-15T05:00:00+00:00",
              "dagster/partition": "2025-09-16|NOWHERE"},
    )
    instance.add_run(last_launch)
    try:
        # The daemon was down from just after the 05:00Z tick until the 09:00Z one.
        assert tick(fleet, dt.datetime(2025, 9, 15, 9, 0, tzinfo=UTC)) == {
            "KL": "2025-09-16|KL", "KOLKATA": "2025-09-16|KOLKATA",
        }
        # A recovery run (no tick of its own) created since does not hide the missed ticks.
        recovery = dg.DagsterRun(
            job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
            tags={"dispatch/planning": "day_ahead", "dispatch/recovers": last_launch.run_id,
                  "dagster/partition": "2025-09-16|NOWHERE"},
        )
        instance.add_run(recovery)
        assert tick(fleet, dt.datetime(2025, 9, 15, 9, 0, tzinfo=UTC)) == {
            "KL": "2025-09-16|KL", "KOLKATA": "2025-09-16|KOLKATA",
        }
        # The 09:00Z tick evaluated again after the daemon launched Kuala Lumpur's run and
        # stopped: Kolkata's day is still planned.
        instance.add_run(dg.DagsterRun(
            job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
            tags={"dispatch/planning": "day_ahead", "dispatch/tick": "2025-09-15T09:00:00+00:00",
                  "dagster/partition": "2025-09-16|KL"},
        ))
        assert tick(fleet, dt.datetime(2025, 9, 15, 9, 0, tzinfo=UTC)) == {"KOLKATA": "2025-09-16|KOLKATA"}
        instance.add_run(dg.DagsterRun(
            job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
            tags={"dispatch/planning": "day_ahead", "dispatch/tick": "2025-09-15T09:00:00+00:00",
                  "dagster/partition": "2025-09-16|KOLKATA"},
        ))
        assert tick_skip_message(fleet, dt.datetime(2025, 9, 15, 9, 0, tzinfo=UTC)) == (
            "every site due at 2025-09-15T09:00:00+00:00 or at the 15 tick(s) missed before it has a run of "
            "its tick already"
        )
        # A deployment's first tick has nothing to catch up.
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dispatch/planning": "day_ahead"})):
            instance.delete_run(run.run_id)
        assert tick(fleet, dt.datetime(2025, 9, 15, 9, 0, tzinfo=UTC)) == {}
    finally:
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dispatch/planning": "day_ahead"})):
            instance.delete_run(run.run_id)


def test_a_tick_the_daemon_stopped_in_midway_is_finished_at_the_next_one(fleet):
    """The daemon stopped while launching the 06:00Z tick's runs (one launched, Kuala Lumpur's
    not) and came back after the next tick: Dagster does not resume that tick (it evaluates
    only the latest of this schedule's missed ticks), so the next one must finish it."""
    _, instance, _, _ = fleet
    instance.add_run(dg.DagsterRun(
        job_name="day_ahead_dispatch_job", run_id=str(uuid.uuid4()),
        tags={"dispatch/planning": "day_ahead", "dispatch/tick": "2025-10-15T06:00:00+00:00",
              "dagster/partition": "2025-10-16|NOWHERE"},
    ))
    try:
        assert tick(fleet, dt.datetime(2025, 10, 15, 9, 0, tzinfo=UTC)) == {
            "KL": "2025-10-16|KL", "KOLKATA": "2025-10-16|KOLKATA",
        }
    finally:
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dispatch/planning": "day_ahead"})):
            instance.delete_run(run.run_id)


def test_a_tick_nobody_is_due_at_says_whose_clock_it_looked_at(fleet):
    definitions, instance, storage, _ = fleet
    when = dt.datetime(2025, 3, 11, 0, 15, tzinfo=UTC)  # 14:00 in no zone of the fleet
    with dg.build_schedule_context(
        scheduled_execution_time=when, instance=instance,
        repository_def=definitions.get_repository_def(), resources={"storage": storage},
    ) as context:
        data = day_ahead_dispatch_schedule.evaluate_tick(context)
    assert not data.run_requests
    assert data.skip_message == (
        "no site is due at 2025-03-11T00:15:00+00:00: no site's own clock reads the planning time, "
        "14:00, in the quarter-hour from then"
    )


def test_due_sites_window_is_one_tick():
    sites = [("A", "Asia/Kathmandu")]  # UTC+5:45
    assert due_sites(sites, dt.datetime(2025, 1, 1, 8, 15, tzinfo=UTC)) == [("A", dt.date(2025, 1, 2))]
    assert due_sites(sites, dt.datetime(2025, 1, 1, 8, 30, tzinfo=UTC)) == []


def test_sensor_adds_new_sites_as_partitions(tmp_path, persistent_instance):
    url = f"sqlite:///{tmp_path / 'dispatch.sqlite'}"
    engine = open_database(url)
    new_id = f"NEW_{uuid.uuid4().hex[:6]}"
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": new_id}))
    instance = persistent_instance
    context = dg.build_sensor_context(instance=instance, resources={"storage": DispatchStorage(database_url=url)})
    result = site_partitions_sensor(context)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "sites" and list(request.partition_keys) == [new_id]
    instance.add_dynamic_partitions("sites", [new_id])
    assert isinstance(site_partitions_sensor(context), dg.SkipReason)


def test_sensor_tick_that_adds_partitions_says_so_in_the_tick_list(tmp_path):
    """Dagster records a tick that requests no run as skipped, whatever partitions it added; the
    UI's tick list then shows its skip reason, which must name what the tick did rather than
    Dagster's 'Sensor function returned an empty result'."""
    url = f"sqlite:///{tmp_path / 'dispatch.sqlite'}"
    engine = open_database(url)
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": "ADDED_SITE"}))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"storage": DispatchStorage(database_url=url)})
        data = site_partitions_sensor.evaluate_tick(context)
    assert not data.run_requests
    (request,) = data.dynamic_partitions_requests
    assert list(request.partition_keys) == ["ADDED_SITE"]
    assert data.skip_message == "added 1 site partition(s): ADDED_SITE"


def test_new_sites_become_partitions_grouped_by_timezone_so_they_share_day_ahead_runs(tmp_path):
    """Ids that do not follow the timezones (A in Berlin, B in Kuala Lumpur, C in Berlin, ...):
    in id order every site would be a run of its own at its tick."""
    url = f"sqlite:///{tmp_path / 'dispatch.sqlite'}"
    engine = open_database(url)
    prefix = f"MIX{uuid.uuid4().hex[:4]}"
    zones = {f"{prefix}_{n}": ("Europe/Berlin", "Asia/Kuala_Lumpur")[n % 2] for n in range(6)}
    for site_id, zone in zones.items():
        upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": site_id, "timezone": zone}))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"storage": DispatchStorage(database_url=url)})
        (request,) = site_partitions_sensor(context).dynamic_partitions_requests
        added = list(request.partition_keys)
        assert added == sorted(zones, key=lambda site_id: (zones[site_id], site_id))
        assert [zones[site_id] for site_id in added] == ["Asia/Kuala_Lumpur"] * 3 + ["Europe/Berlin"] * 3
    # The schedule adds the partitions of sites due before the sensor saw them the same way.
    with dg.instance_for_test() as instance:
        assert with_site_partitions(instance, zones) == added


@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2025, 1, 15, 23, 59, 59, 999999, tzinfo=UTC),  # either side of UTC midnight
        dt.datetime(2025, 1, 16, 0, 0, tzinfo=UTC),
        dt.datetime(2025, 3, 30, 1, 0, tzinfo=UTC),  # Europe springs forward
        dt.datetime(2028, 2, 29, 12, 0, tzinfo=UTC),
    ],
)
def test_last_date_partition_matches_dagster(now):
    from dispatch_pipeline.defs.partitions import date_partitions, last_date_partition

    with dg.partition_loading_context(effective_dt=now):
        assert date_partitions.get_last_partition_key() == last_date_partition(now).isoformat()


@pytest.mark.parametrize("planning_time", ["00:00", "06:45", "10:00", "14:00", "23:45"])
def test_every_zones_tomorrow_is_a_partition_whatever_the_planning_time(planning_time):
    """Kiritimati (UTC+14) and Auckland (UTC+13 in January) plan a date two days after UTC today
    when their planning time comes before their offset: the partition must exist at that tick."""
    from dispatch_pipeline.defs.automation.day_ahead import planning_minute
    from dispatch_pipeline.defs.partitions import last_date_partition

    zones = ["Pacific/Kiritimati", "Pacific/Auckland", "Asia/Kathmandu", "UTC", "America/Los_Angeles",
             "Pacific/Pago_Pago"]
    sites = [(zone, zone) for zone in zones]
    start = dt.datetime(2025, 1, 15, tzinfo=UTC)
    due = 0
    for quarter in range(2 * 24 * 4):
        tick = start + dt.timedelta(minutes=15 * quarter)
        for site_id, tomorrow in due_sites(sites, tick, planning_minute(planning_time)):
            due += 1
            assert tomorrow <= last_date_partition(tick), (site_id, tick, tomorrow)
    assert due == 2 * len(zones)  # each zone due once a day


def test_a_planning_time_the_clock_skips_or_repeats_plans_the_site_once():
    """Berlin at 02:30: spring-forward night has no 02:30 (planned at 03:30 CEST, the instant
    02:30 CET would have been); fall-back night has two (planned at the first)."""
    sites = [("BERLIN", "Europe/Berlin")]
    at_0230 = 2 * 60 + 30

    def due_at(*ticks):
        return {tick: due_sites(sites, tick, at_0230) for tick in ticks}

    spring = due_at(*(dt.datetime(2025, 3, 30, 0, 0, tzinfo=UTC) + dt.timedelta(minutes=15 * n) for n in range(12)))
    assert {t: d for t, d in spring.items() if d} == {
        dt.datetime(2025, 3, 30, 1, 30, tzinfo=UTC): [("BERLIN", dt.date(2025, 3, 31))]
    }
    autumn = due_at(*(dt.datetime(2025, 10, 26, 0, 0, tzinfo=UTC) + dt.timedelta(minutes=15 * n) for n in range(12)))
    assert {t: d for t, d in autumn.items() if d} == {
        dt.datetime(2025, 10, 26, 0, 30, tzinfo=UTC): [("BERLIN", dt.date(2025, 10, 27))]
    }


@pytest.mark.parametrize(
    ("zone", "change_day"),
    [
        ("Europe/Berlin", dt.date(2025, 3, 30)),  # 02:00 -> 03:00
        ("Europe/Berlin", dt.date(2025, 10, 26)),  # 03:00 -> 02:00
        ("America/New_York", dt.date(2025, 3, 9)),
        ("America/New_York", dt.date(2025, 11, 2)),
        ("Australia/Lord_Howe", dt.date(2025, 4, 6)),  # a half-hour change
        ("America/Havana", dt.date(2025, 3, 9)),  # 00:00 -> 01:00: the day starts at 01:00
        ("America/Santiago", dt.date(2025, 4, 6)),  # 00:00 -> 23:00 the day before
        ("America/Nuuk", dt.date(2025, 3, 30)),  # 23:00 -> 00:00: 23:45 the day before is skipped
    ],
)
def test_every_planning_time_plans_each_day_once_across_a_clock_change(zone, change_day):
    sites = [(zone, zone)]
    start = dt.datetime.combine(change_day - dt.timedelta(days=2), dt.time(), tzinfo=UTC)
    ticks = [start + dt.timedelta(minutes=15 * n) for n in range(5 * 24 * 4)]
    from dispatch_pipeline.defs.partitions import last_date_partition

    for planning_at in range(0, 24 * 60, 15):
        planned = []
        for tick in ticks:
            for _, tomorrow in due_sites(sites, tick, planning_at):
                assert tomorrow <= last_date_partition(tick), (planning_at, tick, tomorrow)
                starts = dt.datetime.combine(tomorrow, dt.time(), tzinfo=ZoneInfo(zone))
                assert tick < starts, (planning_at, tick, tomorrow)  # planned before it begins
                planned.append(tomorrow)
        days_inside = [change_day + dt.timedelta(days=n) for n in (0, 1)]  # whole local days in the scan
        for day in days_inside:
            assert planned.count(day) == 1, (planning_at, day, planned)
        assert len(planned) == len(set(planned)), (planning_at, planned)


@pytest.mark.parametrize("text", ["2pm", "24:00", "14:5", "14:60", "", "23:50", "14:07"])
def test_a_bad_planning_time_names_the_variable(text):
    from dispatch_pipeline.defs.automation.day_ahead import planning_minute

    with pytest.raises(ValueError, match=f"DISPATCH_PLANNING_TIME: .* got {text!r}"):
        planning_minute(text)


@pytest.mark.parametrize("text", ["abc", "0", "-5", "2.5", ""])
def test_a_bad_count_setting_names_the_variable(monkeypatch, text):
    from dispatch_pipeline.defs.common import positive_int_setting

    monkeypatch.setenv("DISPATCH_DAY_AHEAD_SITES_PER_RUN", text)
    with pytest.raises(ValueError, match=f"DISPATCH_DAY_AHEAD_SITES_PER_RUN: .* got {text!r}"):
        positive_int_setting("DISPATCH_DAY_AHEAD_SITES_PER_RUN", 250)
    monkeypatch.setenv("DISPATCH_DAY_AHEAD_SITES_PER_RUN", "40")
    assert positive_int_setting("DISPATCH_DAY_AHEAD_SITES_PER_RUN", 250) == 40


@pytest.mark.parametrize("start", ["01/01/2024", "2024-1-1", "2024-01-1"])
def test_a_bad_first_partition_date_fails_the_load_naming_the_variable(start):
    loaded = subprocess.run(
        [sys.executable, "-c", "import dispatch_pipeline.defs.partitions"],
        env={**os.environ, "DISPATCH_PARTITIONS_START": start}, capture_output=True, text=True,
    )
    assert loaded.returncode != 0
    assert f"DISPATCH_PARTITIONS_START: expected a date YYYY-MM-DD such as 2024-01-01, got {start!r}" in loaded.stderr


@pytest.mark.parametrize("site_id", ["KL_MALL", "site-7.b"])
def test_a_site_days_key_is_dagsters_multi_partition_key(site_id):
    from dispatch_pipeline.defs.partitions import SiteDay, parse_site_day, site_day_partitions

    day = SiteDay(site_id, dt.date(2025, 3, 30))
    dagster_key = dg.MultiPartitionKey({"site": site_id, "date": "2025-03-30"})
    assert day.key == str(dagster_key) == "2025-03-30|" + site_id
    assert parse_site_day(day.key) == parse_site_day(dagster_key) == day
    assert site_day_partitions.get_partition_key_from_str(day.key) == dagster_key


def test_plan_runs_groups_ready_neighbours_and_isolates_the_rest():
    from dispatch_pipeline.defs.automation.day_ahead import plan_runs
    from dispatch_pipeline.defs.partitions import SiteDay

    day, other_day = dt.date(2025, 3, 12), dt.date(2025, 3, 13)
    order = ["A", "B", "C", "D", "E", "F", "G"]
    due = [("G", day), ("A", day), ("B", day), ("C", day), ("E", day), ("F", day), ("D", other_day)]
    ready = {("A", day), ("B", day), ("E", day), ("F", day), ("G", day), ("D", other_day)}
    runs = plan_runs(due, order, ready=ready, max_sites=2)
    assert [[d.site_id for d in run] for run in runs] == [
        ["A", "B"],  # neighbours, both ready
        ["C"],  # not ready: alone, so its failure is its own
        ["E", "F"],  # C, not ready, ended the block before it
        ["G"],  # the block is full at max_sites
        ["D"],  # another date, another run
    ]
    assert runs[-1] == [SiteDay("D", other_day)]
    # Ready, but not neighbours: a run's key range from A to C would take in B, which is not due.
    assert plan_runs([("A", day), ("C", day)], order, ready={("A", day), ("C", day)}) == [
        [SiteDay("A", day)], [SiteDay("C", day)]
    ]
    # Readiness is per day: B ready on one day and not on the next runs that next day alone.
    assert plan_runs([("A", other_day), ("B", other_day)], order, ready={("A", other_day), ("B", day)}) == [
        [SiteDay("A", other_day)], [SiteDay("B", other_day)]
    ]
