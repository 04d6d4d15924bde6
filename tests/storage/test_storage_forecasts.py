"""Forecasts and price series: every issue kept, the latest issue per ts read back."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from sqlalchemy import Engine

from dispatch_pipeline.storage import (
    StorageInputError,
    load_forecast,
    load_price_series,
    save_forecast,
    save_forecasts,
    save_price_series,
    save_price_series_by_site,
)
from tests.storage.conftest import InjectedFailure, failure_after_statement

UTC = dt.UTC
START = dt.datetime(2024, 3, 14, 16, 0, tzinfo=UTC)  # 00:00 in Kuala Lumpur
ISSUE_1 = dt.datetime(2024, 3, 13, 6, 0, tzinfo=UTC)
ISSUE_2 = dt.datetime(2024, 3, 14, 6, 0, tzinfo=UTC)


def _forecast(start: dt.datetime, periods: int, load: float, pv: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.date_range(start, periods=periods, freq="15min"),
            "load_kw": [load] * periods,
            "pv_kw": [pv] * periods,
        }
    )


def test_latest_issue_wins_per_ts(engine: Engine, site_id: str) -> None:
    assert save_forecast(engine, site_id, _forecast(START, 96, load=10.0, pv=1.0), ISSUE_1) == 96
    # The second issue covers only the second half of the day.
    later_half = _forecast(START + dt.timedelta(hours=12), 48, load=20.0, pv=2.0)
    save_forecast(engine, site_id, later_half, ISSUE_2)

    frame = load_forecast(engine, site_id, START, START + dt.timedelta(days=1))
    assert list(frame.columns) == ["ts", "load_kw", "pv_kw", "issued_at", "stored_at"]
    assert len(frame) == 96 and frame["ts"].is_monotonic_increasing
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["load_kw"].tolist() == [10.0] * 48 + [20.0] * 48
    assert frame["pv_kw"].tolist() == [1.0] * 48 + [2.0] * 48
    assert set(frame["issued_at"].iloc[:48]) == {pd.Timestamp(ISSUE_1)}
    assert set(frame["issued_at"].iloc[48:]) == {pd.Timestamp(ISSUE_2)}


def test_as_of_reads_what_was_known_then(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, _forecast(START, 4, load=10.0, pv=1.0), ISSUE_1)
    save_forecast(engine, site_id, _forecast(START, 4, load=20.0, pv=2.0), ISSUE_2)
    end = START + dt.timedelta(hours=1)
    assert load_forecast(engine, site_id, START, end)["load_kw"].tolist() == [20.0] * 4
    known = load_forecast(engine, site_id, START, end, as_of=ISSUE_2 - dt.timedelta(seconds=1))
    assert known["load_kw"].tolist() == [10.0] * 4
    assert load_forecast(engine, site_id, START, end, as_of=ISSUE_1 - dt.timedelta(days=1)).empty


def test_range_is_half_open_and_sites_are_separate(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, _forecast(START, 8, load=10.0, pv=1.0), ISSUE_1)
    save_forecast(engine, f"{site_id}_other", _forecast(START, 8, load=99.0, pv=9.0), ISSUE_2)
    frame = load_forecast(
        engine, site_id, START + dt.timedelta(minutes=15), START + dt.timedelta(hours=1)
    )
    assert frame["ts"].tolist() == [
        pd.Timestamp(START + dt.timedelta(minutes=m)) for m in (15, 30, 45)
    ]
    assert frame["load_kw"].tolist() == [10.0] * 3


def test_offsets_are_converted_to_utc(engine: Engine, site_id: str) -> None:
    local = _forecast(START, 4, load=5.0, pv=0.5)
    local["ts"] = local["ts"].dt.tz_convert("Asia/Kuala_Lumpur")
    save_forecast(
        engine, site_id, local.set_index("ts"), pd.Timestamp(ISSUE_1).tz_convert("Europe/Berlin")
    )
    frame = load_forecast(engine, site_id, START, START + dt.timedelta(hours=1))
    assert frame["ts"].iloc[0] == pd.Timestamp(START)
    assert frame["issued_at"].iloc[0] == pd.Timestamp(ISSUE_1)


def test_timestamps_across_a_clock_change_are_each_their_own_instant(engine: Engine, site_id: str) -> None:
    # New York springs forward at 02:00 EST: 01:45-05:00 is followed by 03:00-04:00, 15 minutes later.
    text = ["2024-03-10T01:30:00-05:00", "2024-03-10T01:45:00-05:00", "2024-03-10T03:00:00-04:00"]
    as_datetimes = [dt.datetime.fromisoformat(value) for value in text]
    for n, ts in enumerate((text, as_datetimes)):
        day_site = f"{site_id}_{n}"
        frame = pd.DataFrame({"ts": pd.Series(ts, dtype=object), "load_kw": [1.0, 2.0, 3.0], "pv_kw": 0.0})
        save_forecast(engine, day_site, frame, ISSUE_1)
        start = dt.datetime(2024, 3, 10, 6, 30, tzinfo=dt.UTC)
        stored = load_forecast(engine, day_site, start, start + dt.timedelta(hours=1))
        assert stored["ts"].dt.strftime("%H:%M").tolist() == ["06:30", "06:45", "07:00"]
        assert stored["load_kw"].tolist() == [1.0, 2.0, 3.0]


def test_resaving_an_issue_overwrites_it(engine: Engine, site_id: str) -> None:
    save_forecast(engine, site_id, _forecast(START, 4, load=10.0, pv=1.0), ISSUE_1)
    save_forecast(engine, site_id, _forecast(START, 4, load=11.0, pv=1.5), ISSUE_1)
    frame = load_forecast(engine, site_id, START, START + dt.timedelta(hours=1))
    assert frame["load_kw"].tolist() == [11.0] * 4


def test_each_row_keeps_when_its_values_were_written(engine: Engine, site_id: str) -> None:
    end = START + dt.timedelta(hours=1)
    save_forecast(engine, site_id, _forecast(START, 4, load=10.0, pv=1.0), ISSUE_1)
    written = load_forecast(engine, site_id, START, end)["stored_at"]
    # Now, by the database's clock on PostgreSQL (which may be another host's: give it a minute).
    assert written.nunique() == 1 and abs(written.iat[0] - dt.datetime.now(UTC)) < dt.timedelta(minutes=1)

    # Loaded again as it is: no value changes, and neither does the time.
    save_forecast(engine, site_id, _forecast(START, 4, load=10.0, pv=1.0), ISSUE_1)
    assert load_forecast(engine, site_id, START, end)["stored_at"].equals(written)

    # Other values for two of its intervals: those two were written now.
    changed = _forecast(START, 4, load=10.0, pv=1.0).assign(pv_kw=[1.0, 1.0, 1.5, 1.5])
    save_forecast(engine, site_id, changed, ISSUE_1)
    rewritten = load_forecast(engine, site_id, START, end)["stored_at"]
    assert rewritten.iloc[:2].equals(written.iloc[:2])
    assert (rewritten.iloc[2:] > written.iat[0]).all()


def test_empty_range_has_the_columns(engine: Engine, site_id: str) -> None:
    frame = load_forecast(engine, site_id, START, START + dt.timedelta(days=1))
    assert frame.empty and list(frame.columns) == ["ts", "load_kw", "pv_kw", "issued_at", "stored_at"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f: f.assign(ts=f["ts"].dt.tz_localize(None)),
            r"frame\.ts: must be timezone-aware \(naive timestamps are ambiguous\)",
        ),
        (
            lambda f: f.assign(load_kw=[10.0, -1.0, 10.0, 10.0]),
            r"frame\.load_kw\[2024-03-14T16:15:00Z\]: must be >= 0 \(got -1\.0\)",
        ),
        (
            lambda f: f.assign(pv_kw=[1.0, 1.0, math.nan, 1.0]),
            r"frame\.pv_kw\[2024-03-14T16:30:00Z\]: must be a finite number \(got nan\)",
        ),
        (
            # An int no float holds: refused naming it, not an OverflowError naming nothing.
            lambda f: f.assign(load_kw=pd.Series([10.0, 10**400, 10.0, 10.0], dtype=object)),
            r"frame\.load_kw\[2024-03-14T16:15:00Z\]: must be a finite number \(this one is beyond a "
            r"float's range\) \(got 1000000000",
        ),
        (
            lambda f: f.assign(pv_kw=["1", "1", "1", "1"]),
            r"frame\.pv_kw\[2024-03-14T16:00:00Z\]: must be a finite number \(got '1'\)",
        ),
        (
            lambda f: f.assign(ts=[*f["ts"].iloc[:3].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "2024-03-14T16:45:00"]),
            r"frame\.ts: must be timezone-aware \(naive timestamps are ambiguous\) \(got '2024-03-14T16:45:00'\)",
        ),
        (
            lambda f: f.assign(ts=[*f["ts"].iloc[:3].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "2024-13-14T16:45:00Z"]),
            r"frame\.ts: must hold ISO 8601 timestamps \(got '2024-13-14T16:45:00Z'\)",
        ),
        (lambda f: f.drop(columns="pv_kw"), r"frame: missing column\(s\) \['pv_kw'\]"),
        (
            lambda f: f.assign(issued_at=pd.Timestamp("2024-03-13T06:00Z")),
            r"frame: has column\(s\) \['issued_at'\] that are not stored \(it holds ts, load_kw, pv_kw; the "
            r"issue time is the issued_at argument, one per save\)",
        ),
        (
            lambda f: f.assign(site_id="KL_MALL"),
            r"frame: has column\(s\) \['site_id'\] that are not stored \(it holds ts, load_kw, pv_kw\)",
        ),
        (
            # A 5-minute series: read on the quarter-hour grid, two values in three would vanish.
            lambda f: f.assign(ts=f["ts"].iloc[0] + pd.to_timedelta([0, 5, 10, 15], unit="min")),
            r"frame\.ts\[2024-03-14T16:05:00Z\]: must start a 15-minute interval \(a whole multiple "
            r"of 15 minutes, zero seconds\), as the stored series are \(got '2024-03-14T16:05:00\+00:00'\)",
        ),
        (
            lambda f: f.assign(ts=f["ts"] + pd.Timedelta(seconds=1)),
            r"frame\.ts\[2024-03-14T16:00:01Z\]: must start a 15-minute interval",
        ),
        (
            lambda f: f.assign(ts=[f["ts"].iloc[0]] * 4),
            r"frame\.ts: repeats a timestamp \(got '2024-03-14T16:00:00\+00:00'\)",
        ),
    ],
)
def test_bad_frames_are_refused_and_write_nothing(
    engine: Engine, site_id: str, mutate, message
) -> None:
    with pytest.raises(StorageInputError, match=message):
        save_forecast(engine, site_id, mutate(_forecast(START, 4, load=10.0, pv=1.0)), ISSUE_1)
    assert load_forecast(engine, site_id, START, START + dt.timedelta(days=1)).empty


def test_bad_arguments_are_refused(engine: Engine, site_id: str) -> None:
    frame = _forecast(START, 4, load=10.0, pv=1.0)
    with pytest.raises(StorageInputError, match=r"issued_at: must be timezone-aware"):
        save_forecast(engine, site_id, frame, dt.datetime(2024, 3, 13, 6))
    with pytest.raises(StorageInputError, match=r"site_id: must match .* \(got 'bad id!'\)"):
        save_forecast(engine, "bad id!", frame, ISSUE_1)
    with pytest.raises(StorageInputError, match=r"end_utc: must not precede start_utc"):
        load_forecast(engine, site_id, START, START - dt.timedelta(hours=1))
    with pytest.raises(StorageInputError, match=r"start_utc: must be timezone-aware"):
        load_forecast(engine, site_id, dt.datetime(2024, 3, 14), START)


def test_price_series_latest_issue_wins_and_may_be_negative(engine: Engine, site_id: str) -> None:
    ts = pd.date_range(START, periods=4, freq="15min")
    save_price_series(
        engine, site_id, pd.DataFrame({"ts": ts, "buy": [0.3] * 4, "sell": [0.1] * 4}), ISSUE_1
    )
    save_price_series(
        engine,
        site_id,
        pd.DataFrame({"ts": ts[2:], "buy": [-0.05, -0.05], "sell": [-0.1, -0.1]}),
        ISSUE_2,
    )
    frame = load_price_series(engine, site_id, START, START + dt.timedelta(hours=1))
    assert list(frame.columns) == ["ts", "buy", "sell", "issued_at", "stored_at"]
    assert frame["buy"].tolist() == [0.3, 0.3, -0.05, -0.05]
    assert frame["sell"].tolist() == [0.1, 0.1, -0.1, -0.1]


def test_instants_finer_than_a_microsecond_are_refused_not_merged(engine: Engine, site_id: str) -> None:
    # Both databases keep microseconds: these two rows, or these two issues, would become one.
    frame = _forecast(START, 2, load=1.0, pv=0.0)
    frame["ts"] = [pd.Timestamp(START), pd.Timestamp(START) + pd.Timedelta(nanoseconds=1)]
    with pytest.raises(StorageInputError, match=r"frame\.ts: must be a whole number of microseconds"):
        save_forecast(engine, site_id, frame, ISSUE_1)
    issued_at = pd.Timestamp(ISSUE_1) + pd.Timedelta(nanoseconds=1)
    with pytest.raises(StorageInputError, match=r"issued_at: must be a whole number of microseconds"):
        save_forecast(engine, site_id, _forecast(START, 2, load=1.0, pv=0.0), issued_at)
    assert load_forecast(engine, site_id, START, START + dt.timedelta(hours=1)).empty


def test_several_sites_are_stored_together_or_not_at_all(engine: Engine, site_id: str) -> None:
    other = f"{site_id}_B"
    good = _forecast(START, 4, load=10.0, pv=1.0)
    with pytest.raises(StorageInputError, match=r"frame\.load_kw\[2024-03-14T16:00:00Z\]: must be >= 0"):
        save_forecasts(engine, {site_id: good, other: good.assign(load_kw=-1.0)}, ISSUE_1)
    end = START + dt.timedelta(days=1)
    assert load_forecast(engine, site_id, START, end).empty
    assert load_forecast(engine, other, START, end).empty

    # Valid frames, and the database fails after writing them: the transaction takes them back.
    with failure_after_statement(engine, "INSERT INTO forecasts", mentioning=other), pytest.raises(InjectedFailure):
        save_forecasts(engine, {site_id: good, other: good.assign(load_kw=7.0)}, ISSUE_1)
    assert load_forecast(engine, site_id, START, end).empty
    assert load_forecast(engine, other, START, end).empty

    assert save_forecasts(engine, {site_id: good, other: good.assign(load_kw=7.0)}, ISSUE_1) == {
        site_id: 4,
        other: 4,
    }
    assert load_forecast(engine, site_id, START, end)["load_kw"].tolist() == [10.0] * 4
    assert load_forecast(engine, other, START, end)["load_kw"].tolist() == [7.0] * 4

    prices = pd.DataFrame({"ts": good["ts"], "buy": [-0.02] * 4, "sell": [-0.05] * 4})
    assert save_price_series_by_site(engine, {site_id: prices}, ISSUE_1) == {site_id: 4}
    assert load_price_series(engine, site_id, START, end)["sell"].tolist() == [-0.05] * 4
