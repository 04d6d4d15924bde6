"""Sites: stored as columns plus a JSON document, read back as the same Site."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.demo.sites import demo_sites
from dispatch_pipeline.storage import (
    StorageInputError,
    StoredSiteInvalid,
    get_site,
    list_runs,
    list_sites,
    open_database,
    remove_sites,
    save_runs,
    upsert_site,
    upsert_sites,
)
from dispatch_pipeline.storage.tables import sites
from tests.postgres import scratch_database
from tests.storage.conftest import InjectedFailure, failure_after_statement


def _renamed(site: Site, site_id: str) -> Site:
    return site.model_copy(update={"site_id": site_id})


def test_round_trip_of_every_demo_site(engine: Engine, site_id: str) -> None:
    for n, demo in enumerate(demo_sites()):
        site = _renamed(demo, f"{site_id}_{n}")
        upsert_site(engine, site)
        assert get_site(engine, site.site_id) == site


def test_upsert_replaces_the_definition_and_keeps_created_at(engine: Engine, site_id: str) -> None:
    site = _renamed(demo_sites()[0], site_id)
    upsert_site(engine, site)
    with engine.connect() as connection:
        first = connection.execute(select(sites).where(sites.c.site_id == site_id)).one()
    changed = site.model_copy(
        update={
            "name": "Renamed mall",
            "pv_kwp": 750.0,
            "bess": site.bess.model_copy(update={"capacity_kwh": 2000.0}),
        }
    )
    upsert_site(engine, changed)
    assert get_site(engine, site_id) == changed
    with engine.connect() as connection:
        row = connection.execute(select(sites).where(sites.c.site_id == site_id)).one()
    assert row.created_at == first.created_at
    assert row.updated_at > first.updated_at
    assert row.pv_kwp == 750.0 and row.config["bess"]["capacity_kwh"] == 2000.0


def _stored_times(engine: Engine, site_id: str) -> tuple:
    with engine.connect() as connection:
        return connection.execute(
            select(sites.c.created_at, sites.c.updated_at).where(sites.c.site_id == site_id)
        ).one()


def test_registering_a_site_again_unchanged_keeps_updated_at(engine: Engine, site_id: str) -> None:
    # A daily import of the same sites.yaml: no change, so stale_plan_sensor re-plans nothing.
    site = _renamed(demo_sites()[0], site_id)
    other = _renamed(demo_sites()[1], f"{site_id}_other")
    upsert_sites(engine, [site, other])
    first, other_first = _stored_times(engine, site_id), _stored_times(engine, other.site_id)
    upsert_site(engine, site)
    upsert_sites(engine, [site, other])
    assert _stored_times(engine, site_id) == first

    # Another tariff changes the JSON document only; a new name a column only: each moves it.
    tariff = site.tariff.model_copy(update={"demand_charge_per_kw": site.tariff.demand_charge_per_kw + 1.0})
    upsert_sites(engine, [site.model_copy(update={"tariff": tariff}), other])
    retariffed = _stored_times(engine, site_id)
    assert retariffed.created_at == first.created_at and retariffed.updated_at > first.updated_at
    assert _stored_times(engine, other.site_id) == other_first  # imported with it, unchanged
    upsert_site(engine, site.model_copy(update={"tariff": tariff, "name": "Renamed"}))
    assert _stored_times(engine, site_id).updated_at > retariffed.updated_at


def _with_tariff_history(site: Site) -> Site:
    earlier = {"demand_charge_per_kw": 0.5, "default": {"buy": 0.2, "sell": 0.1}}
    history = [{"until": "2024-07-01", "tariff": earlier}, {"until": "2025-01-01", "tariff": site.tariff.model_dump()}]
    return Site.model_validate({**site.model_dump(), "tariff_history": history})


def test_a_tariff_history_is_stored_and_read_back_whole(engine: Engine, site_id: str) -> None:
    site = _with_tariff_history(_renamed(demo_sites()[0], site_id))
    upsert_site(engine, site)
    assert get_site(engine, site_id) == site
    with engine.connect() as connection:
        config = connection.scalar(select(sites.c.config).where(sites.c.site_id == site_id))
    assert [entry["until"] for entry in config["tariff_history"]] == ["2024-07-01", "2025-01-01"]


def test_a_site_stored_without_tariff_history_reads_back_with_none(engine: Engine, site_id: str) -> None:
    # Its config as a release before the field wrote it, and as sites without history are still
    # written: readable by both releases.
    site = _renamed(demo_sites()[0], site_id)
    upsert_site(engine, site)
    with engine.connect() as connection:
        config = connection.scalar(select(sites.c.config).where(sites.c.site_id == site_id))
    assert "tariff_history" not in config
    assert get_site(engine, site_id).tariff_history == ()
    assert get_site(engine, site_id) == site


def test_list_sites_is_ordered_by_id(engine: Engine, site_id: str) -> None:
    demo = demo_sites()[0]
    for suffix in ("b", "a"):
        upsert_site(engine, _renamed(demo, f"{site_id}_{suffix}"))
    listed = [s.site_id for s in list_sites(engine) if s.site_id.startswith(site_id)]
    assert listed == [f"{site_id}_a", f"{site_id}_b"]


def test_unknown_site_is_none(engine: Engine, site_id: str) -> None:
    assert get_site(engine, site_id) is None
    assert get_site(engine, "x' OR '1'='1") is None


def test_only_site_models_are_stored(engine: Engine) -> None:
    with pytest.raises(StorageInputError, match=r"site: must be a Site \(got 'dict'\)"):
        upsert_site(engine, {"site_id": "X"})  # type: ignore[arg-type]


def test_several_sites_are_stored_together_or_not_at_all(engine: Engine, site_id: str) -> None:
    first, second = (_renamed(demo, f"{site_id}_{n}") for n, demo in enumerate(demo_sites()[:2]))
    with pytest.raises(StorageInputError, match=r"sites\[1\]: must be a Site"):
        upsert_sites(engine, [first, {"site_id": "X"}])  # type: ignore[list-item]
    assert get_site(engine, first.site_id) is None
    # The failure comes once the second site is written: the first must go back with it.
    with failure_after_statement(engine, "INSERT INTO sites", mentioning=second.site_id), pytest.raises(InjectedFailure):
        upsert_sites(engine, [first, second])
    assert [get_site(engine, s.site_id) for s in (first, second)] == [None, None]
    upsert_sites(engine, [first, second])
    assert [get_site(engine, s.site_id) for s in (first, second)] == [first, second]


def test_ids_differing_only_in_case_are_refused_and_nothing_is_written(engine: Engine, site_id: str) -> None:
    demo = demo_sites()[0]
    upsert_site(engine, _renamed(demo, f"{site_id}_Mall"))
    upsert_site(engine, _renamed(demo, f"{site_id}_Mall"))  # the same id again: replaced
    other = _renamed(demo, f"{site_id}_other")
    with pytest.raises(StorageInputError, match=rf"site_id: differs only in case from the registered site '{site_id}_Mall'.*got '{site_id}_MALL'"):
        upsert_sites(engine, [other, _renamed(demo, f"{site_id}_MALL")])
    with pytest.raises(StorageInputError, match=rf"differs only in case from '{site_id}_[aA]', another site given with it"):
        upsert_sites(engine, [_renamed(demo, f"{site_id}_a"), _renamed(demo, f"{site_id}_A")])
    assert [s.site_id for s in list_sites(engine) if s.site_id.startswith(site_id)] == [f"{site_id}_Mall"]


def test_removing_sites_keeps_their_runs_and_removes_all_or_none(engine: Engine, site_id: str, make_result) -> None:
    demo = demo_sites()[0]
    first, second = f"{site_id}_a", f"{site_id}_b"
    upsert_sites(engine, [_renamed(demo, first), _renamed(demo, second)])
    save_runs(engine, [make_result(first, seed=1), make_result(first, seed=2)], source="cli")
    with pytest.raises(StorageInputError, match=rf"site_id: is not a registered site \(got '{site_id}_c'\)"):
        remove_sites(engine, [first, f"{site_id}_c"])
    with pytest.raises(StorageInputError, match=rf"the registered site '{first}' differs from it only in case \(got '{site_id}_A'\)"):
        remove_sites(engine, [f"{site_id}_A"])
    assert [get_site(engine, s) is not None for s in (first, second)] == [True, True]

    removed = remove_sites(engine, [second, first])
    assert {site_id: site.stored_runs for site_id, site in removed.items()} == {first: 2, second: 0}
    assert removed[first].definition == _renamed(demo, first).model_dump(mode="json")
    assert [get_site(engine, s) for s in (first, second)] == [None, None]
    assert len(list_runs(engine, first)) == 2


def test_a_stored_site_the_model_refuses_is_named_with_its_fault(engine: Engine, site_id: str) -> None:
    # Written by hand, or by a release with looser rules: reading it must say which site and why.
    upsert_site(engine, _renamed(demo_sites()[0], site_id))
    try:
        with engine.begin() as connection:
            connection.execute(update(sites).where(sites.c.site_id == site_id).values(timezone="localtime"))
        with pytest.raises(StoredSiteInvalid, match=rf"stored site '{site_id}' is not a valid site "
                                                     r"\(timezone: unknown IANA timezone \(got 'localtime'\)\)"):
            get_site(engine, site_id)
    finally:
        with engine.begin() as connection:
            connection.execute(delete(sites).where(sites.c.site_id == site_id))


@pytest.mark.postgres
def test_imports_of_the_same_sites_in_any_order_lock_them_in_one_order(tmp_path: Path, site_id: str) -> None:
    """Two writers locking the same rows in opposite orders deadlock on PostgreSQL: one of the
    imports then fails with "deadlock detected". (SQLite writers take the whole database in turn.)"""
    with scratch_database("postgresql", tmp_path) as url:
        imports_in_opposite_orders(open_database(url), site_id)


def imports_in_opposite_orders(engine: Engine, site_id: str) -> None:
    first, second = (_renamed(demo, f"{site_id}_{n}") for n, demo in enumerate(demo_sites()[:2]))
    upsert_sites(engine, [first, second])
    failures: list[BaseException] = []

    def import_in_reverse() -> None:
        try:
            upsert_sites(engine, [second, first])
        except BaseException as exc:
            failures.append(exc)

    with engine.connect() as other:
        # Another import, in key order, holds the first site's row...
        other.execute(update(sites).where(sites.c.site_id == first.site_id).values(name="other"))
        importer = threading.Thread(target=import_in_reverse)
        importer.start()
        waiting_for_lock(engine)
        # ...and goes on to the second: free, unless the reversed import took it first.
        other.execute(update(sites).where(sites.c.site_id == second.site_id).values(name="other"))
        other.commit()
    importer.join()
    assert failures == []
    assert [get_site(engine, s.site_id) for s in (first, second)] == [first, second]


def waiting_for_lock(engine: Engine, timeout_s: float = 30.0) -> None:
    """Return once a session of this database waits for a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout_s
    with engine.connect() as connection:
        while True:
            waiting = connection.scalar(query)
            # pg_stat_activity is read once per transaction: a poll inside one would see the
            # first reading again and again, taken perhaps before the import had connected.
            connection.rollback()
            if waiting:
                return
            assert time.monotonic() < deadline, "the import never waited for the row lock"
            time.sleep(0.01)


@pytest.mark.postgres
def test_two_imports_at_once_of_ids_differing_only_in_case_store_one(
    tmp_path: Path, site_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under READ COMMITTED each import's case check would miss the other's uncommitted row, and
    both ids be stored. (SQLite writers take the whole database in turn.)"""
    import dispatch_pipeline.storage.sites as storage_sites

    with scratch_database("postgresql", tmp_path) as url:
        engine = open_database(url)
        demo = demo_sites()[0]
        checked: list[str] = []
        real_creation_times = storage_sites.creation_times

        def once_both_checked(connection, count):
            # An import gets here once its case check passed: wait for the other import to pass
            # its own, or to be held back from it (a session waiting for a lock).
            checked.append("checked")
            deadline = time.monotonic() + 30
            with engine.connect() as probe:
                while len(checked) < 2 and not probe.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )):
                    probe.rollback()
                    assert time.monotonic() < deadline, "the other import never came"
                    time.sleep(0.01)
            return real_creation_times(connection, count)

        monkeypatch.setattr(storage_sites, "creation_times", once_both_checked)
        failures: list[BaseException] = []

        def register(spelling: str) -> None:
            try:
                upsert_site(engine, _renamed(demo, spelling))
            except BaseException as exc:
                failures.append(exc)

        importers = [threading.Thread(target=register, args=(f"{site_id}_{s}",)) for s in ("Mall", "MALL")]
        for importer in importers:
            importer.start()
        for importer in importers:
            importer.join()
        stored = [s.site_id for s in list_sites(engine)]
        assert len(stored) == 1
        assert [type(exc) for exc in failures] == [StorageInputError]
        assert "differs only in case from the registered site" in str(failures[0])
