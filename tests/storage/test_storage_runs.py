"""Dispatch runs: all-or-nothing bulk saves, immutable history, latest-run reads."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, event, inspect, select
from sqlalchemy.exc import IntegrityError

from dispatch_pipeline.core.result import Point
from dispatch_pipeline.storage import (
    IdempotencyKey,
    IncompleteStoredRun,
    KeyedRun,
    StorageInputError,
    UnlistedRun,
    get_run,
    keyed_run,
    latest_run,
    list_runs,
    list_runs_with_cost,
    read_runs,
    save_keyed_run,
    save_runs,
)
from dispatch_pipeline.storage.runs import write as runs_write
from dispatch_pipeline.storage.tables import (
    dispatch_explanations,
    dispatch_kpis,
    dispatch_runs,
    dispatch_schedule,
)

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


def test_round_trip_of_hand_built_results(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    results = [
        make_result(site_id, dt.date(2024, 3, 15), solver="milp", seed=1),
        make_result(site_id, dt.date(2024, 3, 16), solver="fallback_rule", seed=2),
        make_result(site_id, dt.date(2024, 3, 17), solver="rule_based", seed=3),
    ]
    # Issue, write and registration times come back as the same instants, in UTC; unknown ones
    # (the other two) as None.
    results[0] = results[0].model_copy(update={
        "forecast_issued_at": dt.datetime(2024, 3, 14, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        "prices_issued_at": dt.datetime(2024, 3, 13, 12, 0, 0, 250, tzinfo=dt.UTC),
        "forecast_stored_at": dt.datetime(2024, 3, 14, 15, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        "prices_stored_at": dt.datetime(2024, 3, 13, 12, 5, tzinfo=dt.UTC),
        "site_updated_at": dt.datetime(2024, 3, 1, 9, 0, 0, 42, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    })
    ids = save_runs(engine, results, source="dagster", dagster_run_id="0b6a3c1e-dagster-run")
    assert ids == [r.run_id for r in results]
    assert row_counts(engine, ids) == {
        "dispatch_runs": 3,
        "dispatch_kpis": 3,
        "dispatch_schedule": 3 * 96,
        "dispatch_explanations": 3 * 96,
    }
    for result in results:
        stored = get_run(engine, result.run_id)
        assert stored is not None
        assert stored.to_result() == result
        assert stored.run.source == "dagster"
        assert stored.run.dagster_run_id == "0b6a3c1e-dagster-run"
        assert stored.run.created_at.tzinfo == dt.UTC
    assert get_run(engine, results[0].run_id).run.forecast_issued_at.tzinfo == dt.UTC
    assert get_run(engine, results[0].run_id).run.forecast_stored_at.tzinfo == dt.UTC
    assert get_run(engine, results[0].run_id).run.site_updated_at.tzinfo == dt.UTC


def test_round_trip_across_a_dst_day(engine: Engine, site_id: str, make_result) -> None:
    result = make_result(site_id, dt.date(2024, 11, 3), timezone="America/New_York")
    assert len(result.points) == 100
    save_runs(engine, [result], source="cli")
    stored = get_run(engine, str(result.run_id))
    assert stored is not None and stored.to_result() == result


@pytest.mark.parametrize("use_milp", [True, False])
def test_round_trip_of_a_solved_day(engine: Engine, use_milp: bool) -> None:
    from dispatch_pipeline import solve_dispatch

    request = json.loads((CASES / "typical.json").read_text())["request"]
    result = solve_dispatch(request, use_milp=use_milp)
    save_runs(engine, [result], source="api")
    stored = get_run(engine, result.run_id)
    assert stored is not None
    assert stored.to_result() == result
    assert stored.to_result().response() == result.response()


def test_a_time_limited_plan_without_a_finite_gap_is_stored_with_an_unknown_gap(engine: Engine) -> None:
    from dispatch_pipeline import solve_dispatch
    from dispatch_pipeline.core.runner import MilpRunner
    from tests import fakes

    runner = MilpRunner(size=1, solve_function=fakes.time_limit_without_a_bound)
    try:
        result = solve_dispatch(json.loads((CASES / "typical.json").read_text())["request"], runner=runner)
    finally:
        runner.close()
    assert (result.status, result.solver, result.mip_gap) == ("ok", "milp", None)
    save_runs(engine, [result], source="api")
    assert get_run(engine, result.run_id).to_result() == result


def test_points_come_back_in_time_order(engine: Engine, site_id: str, make_result) -> None:
    result = make_result(site_id)
    shuffled = result.model_copy(update={"points": list(reversed(result.points))})
    save_runs(engine, [shuffled], source="cli")
    stored = get_run(engine, result.run_id)
    assert stored is not None
    assert [p.ts for p in stored.points] == [p.ts for p in result.points]


def test_saving_again_keeps_history_and_latest_is_newer(
    engine: Engine, site_id: str, make_result
) -> None:
    day = dt.date(2024, 3, 15)
    first = make_result(site_id, day, seed=1)
    second = make_result(site_id, day, seed=2)
    other_day = make_result(site_id, dt.date(2024, 3, 14), seed=3)
    save_runs(engine, [first], source="dagster")
    save_runs(engine, [second], source="api")
    save_runs(engine, [other_day], source="cli")

    assert [r.run_id for r in list_runs(engine, site_id, day)] == [second.run_id, first.run_id]
    assert len(list_runs(engine, site_id)) == 3
    latest_for_day = latest_run(engine, site_id, day)
    assert latest_for_day is not None and latest_for_day.run.run_id == second.run_id
    latest_any_day = latest_run(engine, site_id)
    assert latest_any_day is not None and latest_any_day.run.run_id == other_day.run_id
    assert latest_run(engine, site_id, "2024-03-15").run.run_id == second.run_id  # type: ignore[union-attr]
    first_again = get_run(engine, first.run_id)
    assert first_again is not None and first_again.to_result() == first


def test_later_entry_of_one_batch_is_the_latest(engine: Engine, site_id: str, make_result) -> None:
    day = dt.date(2024, 3, 15)
    batch = [make_result(site_id, day, seed=s) for s in range(5)]
    save_runs(engine, batch, source="dagster")
    latest = latest_run(engine, site_id, day)
    assert latest is not None and latest.run.run_id == batch[-1].run_id
    created = [r.created_at for r in reversed(list_runs(engine, site_id, day))]
    assert created == sorted(created) and len(set(created)) == 5


def test_runs_are_ordered_by_the_database_servers_clock_on_postgresql(
    engine: Engine, site_id: str, make_result, monkeypatch
) -> None:
    """A host whose clock runs a day ahead stores a run; another host stores a newer one. On
    PostgreSQL the newer run is the latest; SQLite, a file on one host, has only each writer's clock."""
    from dispatch_pipeline.storage import timestamps

    class ClockADayAhead(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + dt.timedelta(days=1)

    day = dt.date(2024, 3, 15)
    first, second = make_result(site_id, day, seed=1), make_result(site_id, day, seed=2)
    monkeypatch.setattr(timestamps, "dt", SimpleNamespace(datetime=ClockADayAhead, timedelta=dt.timedelta))
    save_runs(engine, [first], source="api")
    monkeypatch.undo()
    # The other host's process: its own clock, never read before.
    monkeypatch.setattr(timestamps, "_last_tick", dt.datetime.min.replace(tzinfo=dt.UTC))
    save_runs(engine, [second], source="api")
    latest = latest_run(engine, site_id, day)
    assert latest is not None
    assert latest.run.run_id == (second if engine.dialect.name == "postgresql" else first).run_id


def test_a_run_stored_while_a_batch_writes_is_older_than_the_batch(
    engine: Engine, site_id: str, make_result, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latest is by created_at: a batch is stamped once its interval rows are written, so a run
    another writer stores meanwhile (the API, say) does not outrank it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: nothing is stored while a batch writes")
    day = dt.date(2024, 3, 15)
    batch = [make_result(site_id, day, seed=1), make_result(site_id, day, seed=2)]
    meanwhile = make_result(site_id, day, seed=3)
    real_bulk_insert = runs_write.bulk_insert
    pending = [meanwhile]

    def store_meanwhile_after_the_explanations(connection, table, columns, rows):
        real_bulk_insert(connection, table, columns, rows)
        if table.name == "dispatch_explanations" and pending:
            save_runs(engine, [pending.pop()], source="api")  # its own connection, committed now

    monkeypatch.setattr(runs_write, "bulk_insert", store_meanwhile_after_the_explanations)
    save_runs(engine, batch, source="dagster")
    assert not pending
    assert [r.run_id for r in list_runs(engine, site_id, day)] == [batch[1].run_id, batch[0].run_id, meanwhile.run_id]


def test_runs_of_a_day_are_listed_with_their_total_cost_newest_first(
    engine: Engine, site_id: str, make_result
) -> None:
    day = dt.date(2024, 3, 15)
    batch = [make_result(site_id, day, seed=s) for s in range(3)]
    save_runs(engine, batch[:2], source="dagster", dagster_run_id="backfill")
    save_runs(engine, [batch[2]], source="api")
    save_runs(engine, [make_result(site_id, dt.date(2024, 3, 16), seed=4)], source="cli")
    save_runs(engine, [make_result(f"{site_id}_B", day, seed=5)], source="cli")

    listed = list_runs_with_cost(engine, site_id, day)

    newest_first = batch[::-1]
    assert [entry.run for entry in listed] == list_runs(engine, site_id, day)
    assert [entry.run.run_id for entry in listed] == [result.run_id for result in newest_first]
    assert [entry.total_cost for entry in listed] == [result.kpis.total_cost for result in newest_first]
    assert [entry.run.source for entry in listed] == ["api", "dagster", "dagster"]
    assert [entry.run.run_id for entry in list_runs_with_cost(engine, site_id, day, limit=2)] == [
        result.run_id for result in newest_first[:2]
    ]
    assert list_runs_with_cost(engine, site_id, dt.date(2024, 3, 14)) == []
    assert list_runs_with_cost(engine, "x'; DROP TABLE dispatch_runs; --", day) == []


def test_a_listed_run_without_its_kpi_row_is_refused_not_left_out(
    engine: Engine, site_id: str, make_result
) -> None:
    day = dt.date(2024, 3, 15)
    damaged, kept = make_result(site_id, day, seed=1), make_result(site_id, day, seed=2)
    save_runs(engine, [damaged, kept], source="cli")
    with engine.begin() as connection:
        connection.execute(dispatch_kpis.delete().where(dispatch_kpis.c.run_id == damaged.run_id))

    message = rf"run_id: stored run {damaged.run_id} \(site {site_id}, 2024-03-15\) lacks its KPI row; "
    with pytest.raises(IncompleteStoredRun, match=message):
        list_runs_with_cost(engine, site_id, day)
    # The newest alone is whole.
    assert [entry.run.run_id for entry in list_runs_with_cost(engine, site_id, day, limit=1)] == [kept.run_id]


def test_runs_are_paged_after_a_run_in_the_listing_order_ties_of_created_at_included(
    engine: Engine, site_id: str, make_result
) -> None:
    day = dt.date(2024, 3, 15)
    # Ids that share leading digits, differ across the hyphen, in letters and digits: compared as
    # hyphenated text (a str bound on SQLite) or by anything but the stored order, they misplace.
    tied_ids = [
        uuid.UUID("12345678-0000-4000-8000-000000000001"),
        uuid.UUID("12345678-f000-4000-8000-000000000000"),
        uuid.UUID("12345678-9fff-4000-8000-000000000000"),
        uuid.UUID("f0000000-0000-4000-8000-000000000000"),
        uuid.UUID("00000000-0000-4000-8000-00000000000a"),
        uuid.UUID("00000000-0000-4000-8000-000000000009"),
    ]
    older_id = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff")  # the highest id, a tick older
    newer_id = uuid.UUID("00000000-0000-4000-8000-000000000000")  # the lowest, not tied
    # Unique per backend and run of the session: the tables are shared.
    salt = uuid.uuid4().int & ~((1 << 32) - 1) & ((1 << 96) - 1)

    def salted(run_id: uuid.UUID) -> uuid.UUID:
        return uuid.UUID(int=run_id.int ^ salt)

    ids = [salted(run_id) for run_id in (*tied_ids, older_id, newer_id)]
    results = [make_result(site_id, day, seed=i).model_copy(update={"run_id": run_id}) for i, run_id in enumerate(ids)]
    save_runs(engine, results, source="cli")
    # Not of the site-day, though tied with it: another day, another site.
    others = [make_result(site_id, dt.date(2024, 3, 16), seed=20), make_result(f"{site_id}_B", day, seed=21)]
    save_runs(engine, others, source="cli")
    tie = dt.datetime(2024, 3, 14, 12, 0, 0, 123456, tzinfo=dt.UTC)
    with engine.begin() as connection:
        for run_id, created_at in [
            *((run_id, tie) for run_id in [*ids[:6], *(other.run_id for other in others)]),
            (ids[6], tie - dt.timedelta(microseconds=1)),
            (ids[7], tie + dt.timedelta(microseconds=1)),
        ]:
            connection.execute(dispatch_runs.update().where(dispatch_runs.c.id == run_id).values(created_at=created_at))

    expected = [ids[7], *sorted(ids[:6], reverse=True), ids[6]]
    # The database's ORDER BY agrees with uuid order (PostgreSQL's bytes, SQLite's hex text).
    assert [record.run_id for record in list_runs(engine, site_id, day)] == expected
    for limit in (1, 2, 3, 7):
        paged: list[uuid.UUID] = []
        before = None
        while True:
            page = list_runs_with_cost(engine, site_id, day, limit=limit, before=before)
            paged += [entry.run.run_id for entry in page]
            if len(page) < limit:
                break
            before = page[-1].run.run_id
        assert paged == expected, limit
    for i, run_id in enumerate(expected):
        assert [entry.run.run_id for entry in list_runs_with_cost(engine, site_id, day, before=run_id)] == expected[i + 1:]


def test_paging_reads_the_before_run_once_and_the_page_in_one_query(engine: Engine, site_id: str, make_result) -> None:
    day = dt.date(2024, 3, 15)
    results = [make_result(site_id, day, seed=i) for i in range(3)]
    save_runs(engine, results, source="cli")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        page = list_runs_with_cost(engine, site_id, day, limit=5, before=results[2].run_id)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert [entry.run.run_id for entry in page] == [results[1].run_id, results[0].run_id]
    queries = [statement for statement in statements if statement != "BEGIN"]  # SQLite's own
    assert len(queries) == 2, queries


def test_paging_after_a_run_of_another_site_or_day_or_none_is_refused(
    engine: Engine, site_id: str, make_result
) -> None:
    day = dt.date(2024, 3, 15)
    own = make_result(site_id, day, seed=1)
    other_day = make_result(site_id, dt.date(2024, 3, 16), seed=2)
    other_site = make_result(f"{site_id}_B", day, seed=3)
    save_runs(engine, [own, other_day, other_site], source="cli")
    unknown = uuid.uuid4()

    for before, found, says in [
        (other_day.run_id, (site_id, dt.date(2024, 3, 16)), f"it is a run of site {site_id} on 2024-03-16"),
        (other_site.run_id, (f"{site_id}_B", day), f"it is a run of site {site_id}_B on 2024-03-15"),
        (unknown, None, "no stored run has this id"),
    ]:
        with pytest.raises(UnlistedRun) as caught:
            list_runs_with_cost(engine, site_id, day, before=before)
        assert str(caught.value) == f"before: must be a run of site {site_id} on 2024-03-15; {says} (got '{before}')"
        assert (caught.value.run_id, caught.value.found) == (before, found)
        assert isinstance(caught.value, StorageInputError)
    assert list_runs_with_cost(engine, site_id, day, before=own.run_id) == []


def test_unknown_site_or_run_gives_none(engine: Engine, site_id: str) -> None:
    assert latest_run(engine, site_id) is None
    assert get_run(engine, uuid.uuid4()) is None
    assert list_runs(engine, site_id) == []


@pytest.mark.parametrize(
    ("table", "deleted", "lacks"),
    [
        (dispatch_schedule, slice(40, None), "schedule rows: it holds 40 of the day's 96 intervals"),
        (dispatch_schedule, slice(None), "schedule rows: it holds 0 of the day's 96 intervals"),
        (dispatch_explanations, slice(48, 49), "explanation rows for some of its intervals"),
        (dispatch_kpis, None, "its KPI row"),
    ],
)
def test_a_run_whose_rows_were_deleted_by_hand_is_refused_not_read_with_blanks(
    engine: Engine, site_id: str, make_result, table, deleted, lacks
) -> None:
    """The per-interval tables have no foreign key to their run: rows deleted by hand would
    otherwise come back as a plan missing intervals, or with empty explanations."""
    result = make_result(site_id, dt.date(2024, 3, 15))
    kept = make_result(site_id, dt.date(2024, 3, 16), seed=2)
    save_runs(engine, [result, kept], source="cli")
    with engine.begin() as connection:
        doomed = table.delete().where(table.c.run_id == result.run_id)
        if deleted is not None:
            doomed = doomed.where(
                table.c.ts.in_([dt.datetime.fromisoformat(p.ts) for p in result.points[deleted]])
            )
        assert connection.execute(doomed).rowcount > 0

    message = rf"run_id: stored run {result.run_id} \(site {site_id}, 2024-03-15\) lacks {re.escape(lacks)}; "
    with pytest.raises(IncompleteStoredRun, match=message):
        get_run(engine, result.run_id)
    with pytest.raises(IncompleteStoredRun, match=message):
        latest_run(engine, site_id, dt.date(2024, 3, 15))
    with pytest.raises(IncompleteStoredRun, match=message):
        read_runs(engine, [kept.run_id, result.run_id])
    assert get_run(engine, kept.run_id).to_result() == kept


def test_text_reaches_sql_only_as_parameters(engine: Engine) -> None:
    hostile = "x'; DROP TABLE dispatch_runs; --"
    assert latest_run(engine, hostile) is None
    assert list_runs(engine, hostile, dt.date(2024, 1, 1)) == []
    assert "dispatch_runs" in inspect(engine).get_table_names()


def test_failure_at_the_last_insert_leaves_nothing(
    engine: Engine, site_id: str, make_result, row_counts, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_bulk_insert = runs_write.bulk_insert

    def fail_on_kpis(connection, table, columns, rows):
        if table is dispatch_kpis:
            raise RuntimeError("injected failure after the schedules, explanations and runs were inserted")
        return real_bulk_insert(connection, table, columns, rows)

    monkeypatch.setattr(runs_write, "bulk_insert", fail_on_kpis)
    results = [make_result(site_id, seed=s) for s in range(3)]
    with pytest.raises(RuntimeError, match="injected"):
        save_runs(engine, results, source="dagster")
    assert set(row_counts(engine, [r.run_id for r in results]).values()) == {0}
    assert latest_run(engine, site_id) is None


def test_database_error_in_a_later_result_rolls_back_the_whole_batch(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    good = make_result(site_id, seed=1)
    bad = make_result(site_id, seed=2)
    # model_construct skips validation: a NULL reason reaches the database's NOT NULL.
    broken = Point.model_construct(**{**bad.points[1].model_dump(), "reason": None})
    bad = bad.model_copy(update={"points": [bad.points[0], broken, *bad.points[2:]]})
    with pytest.raises(IntegrityError):
        save_runs(engine, [good, bad], source="dagster")
    assert set(row_counts(engine, [good.run_id, bad.run_id]).values()) == {0}


def test_duplicate_interval_rolls_back_the_whole_batch(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    good = make_result(site_id, seed=1)
    bad = make_result(site_id, seed=2)
    bad = bad.model_copy(update={"points": [*bad.points, bad.points[-1]]})
    # Refused before the transaction opens (the table's key would refuse it too).
    with pytest.raises(StorageInputError, match=r"results\[1\] .*\.points\[96\]\.ts: repeats an interval"):
        save_runs(engine, [good, bad], source="api")
    assert set(row_counts(engine, [good.run_id, bad.run_id]).values()) == {0}


def test_a_stored_run_is_never_overwritten(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    original = make_result(site_id, seed=1)
    save_runs(engine, [original], source="dagster")
    altered = make_result(site_id, seed=2).model_copy(update={"run_id": original.run_id})
    newcomer = make_result(site_id, seed=3)
    with pytest.raises(IntegrityError):
        save_runs(engine, [newcomer, altered], source="dagster")
    stored = get_run(engine, original.run_id)
    assert stored is not None and stored.to_result() == original
    assert set(row_counts(engine, [newcomer.run_id]).values()) == {0}


def test_bad_values_are_refused_naming_field_and_value(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    good = make_result(site_id, seed=1)
    bad = make_result(site_id, seed=2)
    nan_point = bad.points[5].model_copy(update={"soc": math.nan})
    bad = bad.model_copy(update={"points": [*bad.points[:5], nan_point, *bad.points[6:]]})
    with pytest.raises(
        StorageInputError,
        match=r"results\[1\] \(site '[^']+' on 2024-03-15\)\.points\[5\]\.soc: must be a finite number \(got nan\)",
    ):
        save_runs(engine, [good, bad], source="dagster")
    assert set(row_counts(engine, [good.run_id, bad.run_id]).values()) == {0}


def _with_point(result, j: int, **changes):
    point = result.points[j].model_copy(update=changes)
    return result.model_copy(update={"points": [*result.points[:j], point, *result.points[j + 1 :]]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # PostgreSQL's binary COPY stored 2**31 as -2**31, without an error.
        (lambda r: r.model_copy(update={"timeout_ms": 2**31}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.timeout_ms: must be an integer from 100 to 600000 \(got 2147483648\)"),
        # Kept whole by SQLite, refused by PostgreSQL without naming the field.
        (lambda r: r.model_copy(update={"timezone": "X" * 70}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.timezone: must be at most 64 characters"),
        (lambda r: r.model_copy(update={"milp_solver": "x" * 40}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.milp_solver: must be at most 32 characters"),
        (lambda r: _with_point(r, 7, reason_code="c" * 65),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.points\[7\]\.reason_code: must be at most 64 characters"),
        # Not a stored column: it would read back as status == "fallback", changed.
        (lambda r: r.model_copy(update={"fallback_used": True}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.fallback_used: must say whether status is 'fallback' \(status is 'ok'\) \(got True\)"),
        # Naive: which instant it means is a guess (and binary COPY would need an aware one).
        (lambda r: r.model_copy(update={"prices_issued_at": dt.datetime(2024, 3, 14, 6)}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.prices_issued_at: must be timezone-aware"),
        (lambda r: r.model_copy(update={"site_updated_at": dt.datetime(2024, 3, 1, 9)}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.site_updated_at: must be timezone-aware"),
    ],
    ids=["timeout-overflows-int4", "timezone-too-long", "solver-too-long", "reason-code-too-long",
         "fallback-used-contradicts-status", "naive-issue-time", "naive-registration-time"],
)
def test_values_a_backend_would_store_changed_are_refused(
    engine: Engine, site_id: str, make_result, row_counts, change, message
) -> None:
    good = make_result(site_id, seed=1)
    bad = change(make_result(site_id, seed=2))
    with pytest.raises(StorageInputError, match=message):
        save_runs(engine, [good, bad], source="dagster")
    assert set(row_counts(engine, [good.run_id, bad.run_id]).values()) == {0}


def _with_points(result, points):
    return result.model_copy(update={"points": points})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: _with_points(r, r.points[:-1]),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.points: must hold all 96 intervals of 2024-03-15 "
         r"in Asia/Kuala_Lumpur at 15 minutes; 1 missing, the first 2024-03-15T15:45:00Z \(got '95 points'\)"),
        (lambda r: _with_points(r, [*r.points[:-1], r.points[0]]),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.points\[95\]\.ts: repeats an interval of the run"),
        # Another day's schedule under this day: it would read back as this day's plan.
        (lambda r: r.model_copy(update={"date": dt.date(2024, 3, 16)}),
         r"results\[1\] \(site '[^']+' on 2024-03-16\)\.points\[0\]\.ts: must start an interval of "
         r"2024-03-16 in Asia/Kuala_Lumpur at 15 minutes \(2024-03-15T16:00:00Z to 2024-03-16T15:45:00Z\) "
         r"\(got '2024-03-14T16:00:00Z'\)"),
        (lambda r: r.model_copy(update={"resolution_minutes": 60}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.points\[1\]\.ts: must start an interval of "
         r"2024-03-15 in Asia/Kuala_Lumpur at 60 minutes"),
        (lambda r: r.model_copy(update={"timezone": "Mars/Olympus_Mons"}),
         r"results\[1\] \(site '[^']+' on 2024-03-15\)\.timezone: must be an IANA time zone"),
    ],
    ids=["interval-missing", "interval-repeated", "another-days-points", "other-resolution", "unknown-zone"],
)
def test_points_that_are_not_the_days_intervals_are_refused(
    engine: Engine, site_id: str, make_result, row_counts, change, message
) -> None:
    """Stored, such a run could never be read back (its day's intervals are what a read checks),
    and the latest plan of its site-day with it."""
    good = make_result(site_id, seed=1)
    bad = change(make_result(site_id, seed=2))
    with pytest.raises(StorageInputError, match=message):
        save_runs(engine, [good, bad], source="dagster")
    assert set(row_counts(engine, [good.run_id, bad.run_id]).values()) == {0}
    assert latest_run(engine, site_id, dt.date(2024, 3, 15)) is None


def test_interval_starts_may_carry_any_utc_offset(engine: Engine, site_id: str, make_result) -> None:
    result = make_result(site_id)
    spelled = [p.model_copy(update={"ts": p.ts.replace("Z", "+00:00")}) for p in result.points]
    save_runs(engine, [_with_points(result, spelled)], source="cli")
    assert get_run(engine, result.run_id).to_result() == result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "cron"}, r"source: must be one of dagster, api, cli \(got 'cron'\)"),
        ({"source": "dagster", "dagster_run_id": ""}, r"dagster_run_id: .* \(got ''\)"),
    ],
)
def test_bad_arguments_are_refused(
    engine: Engine, site_id: str, make_result, kwargs, message
) -> None:
    with pytest.raises(StorageInputError, match=message):
        save_runs(engine, [make_result(site_id)], **kwargs)


def test_naive_or_malformed_point_timestamps_are_refused(
    engine: Engine, site_id: str, make_result
) -> None:
    result = make_result(site_id)
    naive = result.points[0].model_copy(update={"ts": "2024-03-14T16:00:00"})
    with pytest.raises(StorageInputError, match=r"points\[0\]\.ts: must be timezone-aware"):
        save_runs(
            engine,
            [result.model_copy(update={"points": [naive, *result.points[1:]]})],
            source="cli",
        )
    junk = result.points[0].model_copy(update={"ts": "yesterday"})
    with pytest.raises(
        StorageInputError,
        match=r"points\[0\]\.ts: must be an ISO 8601 UTC timestamp \(got 'yesterday'\)",
    ):
        save_runs(
            engine, [result.model_copy(update={"points": [junk, *result.points[1:]]})], source="cli"
        )


def test_same_run_twice_in_one_batch_is_refused(engine: Engine, site_id: str, make_result) -> None:
    result = make_result(site_id)
    with pytest.raises(StorageInputError, match=r"results\[1\] \(site '[^']+' on 2024-03-15\)\.run_id: appears twice"):
        save_runs(engine, [result, result], source="cli")


def test_bad_run_id_lookup_names_the_value(engine: Engine) -> None:
    with pytest.raises(StorageInputError, match=r"run_id: must be a UUID \(got 'nope'\)"):
        get_run(engine, "nope")


def test_empty_batch_writes_nothing(engine: Engine) -> None:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert save_runs(engine, [], source="cli") == []
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


def test_batches_larger_than_one_chunk(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    start = dt.date(2023, 1, 1)
    results = [make_result(site_id, start + dt.timedelta(days=d), seed=d) for d in range(120)]
    ids = save_runs(engine, results, source="dagster")
    assert row_counts(engine, ids)["dispatch_explanations"] == 120 * 96
    assert len(list_runs(engine, site_id)) == 120
    latest = latest_run(engine, site_id)
    assert latest is not None and latest.to_result() == results[-1]


def test_concurrent_writers_all_land(engine: Engine, site_id: str, make_result) -> None:
    batches = [[make_result(site_id, seed=10 * w + i) for i in range(3)] for w in range(4)]
    errors: list[BaseException] = []

    def write(batch) -> None:
        try:
            save_runs(engine, batch, source="api")
        except BaseException as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list_runs(engine, site_id)) == 12


@pytest.mark.parametrize("writer", ["core", "lean"])
def test_every_write_path_stores_the_same(
    engine: Engine, site_id: str, make_result, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    """The fast paths (COPY, SQLite's driver executemany) must store what a Core insert stores."""
    from sqlalchemy import text

    from dispatch_pipeline.storage import bulk

    if writer == "core":
        monkeypatch.setattr(runs_write, "bulk_insert", bulk.executemany_rows)
    result = make_result(site_id)
    save_runs(engine, [result], source="cli")
    stored = get_run(engine, result.run_id)
    assert stored is not None and stored.to_result() == result
    with engine.connect() as connection:
        raw = connection.execute(
            text(
                "SELECT run_id, ts, binding FROM dispatch_explanations WHERE run_id = :r ORDER BY ts"
            ),
            {"r": result.run_id.hex if engine.dialect.name == "sqlite" else result.run_id},
        ).all()
    assert len(raw) == len(result.points)
    if engine.dialect.name == "sqlite":
        assert raw[0].run_id == result.run_id.hex
        assert raw[0].ts == "2024-03-14 16:00:00.000000"
        assert json.loads(raw[0].binding) == result.points[0].binding


# ------------------------------------------------------------------------------ idempotency keys


def _key(scope: str = "", fingerprint: str = "a" * 64) -> IdempotencyKey:
    # The session's database is shared: a key no other test uses.
    return IdempotencyKey(scope=scope, key=f"key-{uuid.uuid4()}", fingerprint=fingerprint)


def test_a_keyed_run_is_stored_once_per_key_of_a_scope(
    engine: Engine, site_id: str, make_result, row_counts
) -> None:
    key = _key()
    first, second = make_result(site_id, seed=1), make_result(site_id, seed=2)

    assert keyed_run(engine, key.scope, key.key) is None
    stored, saved = save_keyed_run(engine, first, key, source="api")
    assert saved and stored == KeyedRun(first.run_id, site_id, key.fingerprint)
    assert keyed_run(engine, key.scope, key.key) == stored
    assert get_run(engine, first.run_id).to_result() == first

    # The same key again, whatever the request: the first run is the key's, nothing else written.
    again, saved = save_keyed_run(engine, second, replace(key, fingerprint="b" * 64), source="api")
    assert (again, saved) == (stored, False)
    assert set(row_counts(engine, [second.run_id]).values()) == {0}

    # Another scope's key of the same spelling is another key.
    elsewhere = replace(key, scope="c" * 64)
    assert keyed_run(engine, elsewhere.scope, elsewhere.key) is None
    assert save_keyed_run(engine, second, elsewhere, source="api") == (
        KeyedRun(second.run_id, site_id, key.fingerprint), True
    )
    assert [run.run_id for run in list_runs(engine, site_id)] == [second.run_id, first.run_id]


def test_runs_without_a_key_are_stored_as_before(engine: Engine, site_id: str, make_result) -> None:
    results = [make_result(site_id, seed=s) for s in range(2)]
    save_runs(engine, results, source="api")
    with engine.connect() as connection:
        keys = connection.execute(
            select(dispatch_runs.c.idempotency_key, dispatch_runs.c.idempotency_scope, dispatch_runs.c.request_fingerprint)
            .where(dispatch_runs.c.site_id == site_id)
        ).all()
    assert keys == [(None, None, None)] * 2


def test_a_stored_run_id_under_a_free_key_fails_and_leaves_the_key_free(
    engine: Engine, site_id: str, make_result
) -> None:
    original = make_result(site_id, seed=1)
    save_runs(engine, [original], source="api")
    key = _key()
    with pytest.raises(IntegrityError):
        save_keyed_run(engine, make_result(site_id, seed=2).model_copy(update={"run_id": original.run_id}), key,
                       source="api")
    assert keyed_run(engine, key.scope, key.key) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": ""}, "key.key: must be a non-empty string without NUL (got '')"),
        ({"key": "k" * 256}, "key.key: must be at most 255 characters"),
        ({"key": "a\x00b"}, "key.key: must be a non-empty string without NUL"),
        ({"scope": "s" * 65}, "key.scope: must be at most 64 characters"),
        ({"scope": None}, "key.scope: must be a string without NUL (got None)"),
        ({"fingerprint": ""}, "key.fingerprint: must be a non-empty string without NUL"),
    ],
)
def test_bad_keys_are_refused_before_writing(
    engine: Engine, site_id: str, make_result, row_counts, change, message
) -> None:
    result = make_result(site_id)
    with pytest.raises(StorageInputError, match=re.escape(message)):
        save_keyed_run(engine, result, replace(_key(), **change), source="api")
    assert set(row_counts(engine, [result.run_id]).values()) == {0}


def test_writers_racing_with_one_key_store_one_run(engine: Engine, site_id: str, make_result) -> None:
    key = _key(scope="d" * 64)
    results = [make_result(site_id, seed=s) for s in range(6)]
    outcomes: list[tuple[KeyedRun, bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(results))

    def write(result) -> None:
        try:
            start.wait()
            outcomes.append(save_keyed_run(engine, result, key, source="api"))
        except BaseException as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(r,)) for r in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(saved for _run, saved in outcomes) == [False] * 5 + [True]
    [winner] = {run for run, _saved in outcomes}
    assert [run.run_id for run in list_runs(engine, site_id)] == [winner.run_id]


def test_a_key_is_found_through_its_index(engine: Engine) -> None:
    statement = select(dispatch_runs.c.id).where(
        dispatch_runs.c.idempotency_scope == "", dispatch_runs.c.idempotency_key == "k"
    )
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        else:
            # A small table is read whole more cheaply: ask for the plan a large one gets.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
            plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {compiled}").scalars())
    assert "ix_dispatch_runs_idempotency_scope_idempotency_key" in plan, plan
