"""Registered sites: the scalar facts as columns, the rest of the Site model as one JSON document."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Row, Select, Text, cast, func, select

from dispatch_pipeline.storage.bulk import chunks
from dispatch_pipeline.storage.checks import check_site_id, problem
from dispatch_pipeline.storage.database import write_transaction
from dispatch_pipeline.storage.tables import dispatch_runs, sites
from dispatch_pipeline.storage.timestamps import creation_times
from dispatch_pipeline.storage.upsert import upsert_statement

if TYPE_CHECKING:
    from dispatch_pipeline.core.site import Site

# Site fields promoted to columns (queryable); every other field lives in `config`.
SITE_COLUMNS = ("name", "timezone", "latitude", "longitude", "pv_kwp", "currency")

# PostgreSQL advisory lock (the two-int4 key space, apart from the migration lock's bigint) held by
# a registration from its case check to its commit: the ASCII of "site" and of "case".
_PG_REGISTRATION_LOCK = (int.from_bytes(b"site", "big"), int.from_bytes(b"case", "big"))


def upsert_site(engine: Engine, site: Site) -> None:
    """Create the site or replace its definition; `created_at` survives, and `updated_at` moves
    only when a stored value changes (stale_plan_sensor re-plans days planned with the
    registration before it moved)."""
    _write_rows(engine, [_site_row(site, "site")])


def upsert_sites(engine: Engine, new_sites: Sequence[Site]) -> None:
    """upsert_site for several sites in one transaction: all of them are stored, or none."""
    _write_rows(engine, [_site_row(site, f"sites[{i}]") for i, site in enumerate(new_sites)])


def _site_row(site: Site, field: str) -> dict[str, Any]:
    from dispatch_pipeline.core.site import Site

    if not isinstance(site, Site):
        raise problem(field, "must be a Site", type(site).__name__)
    check_site_id(site.site_id, f"{field}.site_id")
    document = site.model_dump(mode="json")
    row: dict[str, Any] = {"site_id": document.pop("site_id")}
    row.update({name: document.pop(name) for name in SITE_COLUMNS})
    row.update(config=document)
    return row


def _write_rows(engine: Engine, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    # In key order, as every writer does: two imports of the same sites in different orders
    # would otherwise lock their rows in opposite orders and deadlock on PostgreSQL.
    rows = sorted(rows, key=lambda row: row["site_id"])
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Under READ COMMITTED two imports at once (of 'Mall' and 'MALL') would each find the
            # other's id unregistered and both be stored: registrations take turns from the check
            # on. SQLite's BEGIN IMMEDIATE has them take turns already.
            connection.execute(select(func.pg_advisory_xact_lock(*_PG_REGISTRATION_LOCK)))
        refuse_site_ids_differing_only_in_case(connection, [row["site_id"] for row in rows])
        # By the clock runs' created_at are taken from (the server's, on PostgreSQL): stale_plans
        # compares the two for runs that did not record their site's registration (stored before
        # migration 0007), and the host importing sites may be seconds off.
        [now] = creation_times(connection, 1)
        rows = [{**row, "created_at": now, "updated_at": now} for row in rows]
        # Sites are imported again unchanged every day (from cron): that must not count as a
        # change, or every plan ahead would be made again.
        statement = upsert_statement(
            connection, sites, ["site_id"], [*SITE_COLUMNS, "config", "updated_at"],
            only_if_changed=[*SITE_COLUMNS, "config"],
        )
        connection.execute(statement, rows)


def refuse_site_ids_differing_only_in_case(connection: Connection | None, site_ids: Sequence[str]) -> None:
    """StorageInputError for an id of sites to be stored that differs only in case from a
    registered site's or from another of `site_ids` (`connection` None: a database without tables,
    where none is registered). A site's files are kept in a directory named after its id: on a
    filesystem that ignores case (macOS, Windows), two such ids would share it, and one site would
    be planned on the other's forecast."""
    refuse_case_clashes(
        # In id order, as upsert_sites stores them: asked before or within the write, the same
        # id of a file is named.
        connection, sorted(site_ids), "another site given with it",
        "; ids name the directories of the sites' files, which some filesystems do not tell apart",
    )


def refuse_case_clashes(connection: Connection | None, site_ids: Sequence[str], given_with: str, why: str) -> None:
    """StorageInputError naming the first of `site_ids` that case_clashes finds, the id it clashes
    with (a registered site's, or one `given_with` it) and `why` that is refused."""
    clash = next(iter(case_clashes(connection, site_ids).items()), None)
    if clash is not None:
        site_id, (other, registered) = clash
        whose = f"the registered site {other!r}" if registered else f"{other!r}, {given_with}"
        raise problem("site_id", f"differs only in case from {whose}{why}", site_id)


# Ids per query of case_clashes: far below every driver's limit of bound parameters.
_IDS_PER_QUERY = 5_000


def case_clashes(connection: Connection | None, site_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """{site_id: (the id it differs from only in case, whether that one is registered)} for each
    of `site_ids` that is not registered itself and clashes so with a registered site or with
    one before it in `site_ids`. A registered id clashes with nothing: a pair registered before
    ids were checked can still be updated.

    `connection` None stands for a database without tables (see database.why_without_tables):
    none is registered there, and connecting to ask would create the database for input that may
    be refused."""
    lowered = sorted({site_id.lower() for site_id in site_ids})
    stored: set[str] = set()
    if connection is not None:
        # In chunks: one IN list of a file's every id would pass PostgreSQL drivers' limit of
        # 65,535 parameters per statement.
        for chunk in chunks(lowered, _IDS_PER_QUERY):
            stored.update(connection.scalars(select(sites.c.site_id).where(func.lower(sites.c.site_id).in_(chunk))))
    taken = {}
    for site_id in sorted(stored):
        taken.setdefault(site_id.lower(), site_id)
    clashes = {}
    for site_id in site_ids:
        if site_id in stored:
            continue
        other = taken.setdefault(site_id.lower(), site_id)
        if other != site_id:
            clashes.setdefault(site_id, (other, other in stored))
    return clashes


def registered_case_variant(engine: Engine, site_id: str) -> str | None:
    """The registered site whose id differs from `site_id` only in case, when `site_id` itself
    is not registered: no site can be registered under `site_id` then."""
    spelling = registered_spelling(engine, site_id)
    return None if spelling == site_id else spelling


def registered_spelling(engine: Engine, site_id: str) -> str | None:
    """The registered id `site_id` names: itself when it is registered, else the one it differs
    from only in case; None when it names no registered site."""
    with engine.connect() as connection:
        stored = sorted(connection.scalars(
            select(sites.c.site_id).where(func.lower(sites.c.site_id) == site_id.lower())
        ))
    # The first in order, as case_clashes names it, should a pair registered before ids were
    # checked both differ from it.
    return site_id if site_id in stored else next(iter(stored), None)


@dataclass(frozen=True)
class RemovedSite:
    """A removed site: its definition as it was stored (valid or not: the only copy), and how
    many of its dispatch runs stay stored."""

    definition: dict[str, Any]
    stored_runs: int


def remove_sites(engine: Engine, site_ids: Sequence[str]) -> dict[str, RemovedSite]:
    """Delete the sites' definitions in one transaction, all of them or none; returns each one's
    definition and number of stored dispatch runs, which stay, as do its forecasts and prices. An
    id that is not registered is refused (naming the registered one it differs from only in case,
    if any)."""
    ids = sorted(set(site_ids))
    with write_transaction(engine) as connection:
        # Locked in id order, as upsert_sites writes them: a removal beside an import of the same
        # sites must not lock them in opposite orders and deadlock on PostgreSQL.
        rows = connection.execute(
            _select_sites().where(sites.c.site_id.in_(ids)).order_by(sites.c.site_id).with_for_update()
        ).all()
        stored = {row.site_id: _document(row) for row in rows}
        refuse_unregistered_site_ids(connection, site_ids, stored)
        connection.execute(sites.delete().where(sites.c.site_id.in_(ids)))
        counted = connection.execute(
            select(dispatch_runs.c.site_id, func.count())
            .where(dispatch_runs.c.site_id.in_(ids))
            .group_by(dispatch_runs.c.site_id)
        )
        runs = {site_id: count for site_id, count in counted}
    return {site_id: RemovedSite(stored[site_id], runs.get(site_id, 0)) for site_id in ids}


def refuse_unregistered_site_ids(
    connection: Connection, site_ids: Sequence[str], registered: Collection[str] | None = None
) -> None:
    """StorageInputError naming the first of `site_ids` that is not registered (`registered`: those
    of them known to be, else read), and the registered site it differs from only in case, if any.
    Asked by `sites remove` before the database is opened too, where a refusal must not migrate it."""
    if registered is None:
        registered = set(connection.scalars(select(sites.c.site_id).where(sites.c.site_id.in_(sorted(set(site_ids))))))
    unknown = [site_id for site_id in site_ids if site_id not in registered]
    if unknown:
        clash = case_clashes(connection, unknown[:1]).get(unknown[0])
        hint = f"; the registered site {clash[0]!r} differs from it only in case" if clash else ""
        raise problem("site_id", f"is not a registered site{hint}", unknown[0])


@dataclass(frozen=True)
class RegisteredSite:
    """A stored site as the model reads it, and when its stored definition last changed (its
    `updated_at`, from the same row): a plan made with it is stale once that moves on."""

    site: Site
    updated_at: dt.datetime


def get_site(engine: Engine, site_id: str) -> Site | None:
    registered = get_registered_site(engine, site_id)
    return None if registered is None else registered.site


def get_registered_site(engine: Engine, site_id: str) -> RegisteredSite | None:
    """get_site with the registration's `updated_at`."""
    with engine.connect() as connection:
        row = connection.execute(_select_sites().where(sites.c.site_id == site_id)).one_or_none()
    return None if row is None else _registered(row)


def list_sites(engine: Engine) -> list[Site]:
    """Every site; StoredSiteInvalid on the first stored one the model refuses."""
    valid, invalid = read_sites(engine)
    if invalid:
        raise invalid[0]
    return valid


def read_sites(
    engine: Engine, site_ids: Iterable[str] | None = None
) -> tuple[list[Site], list[StoredSiteInvalid]]:
    """Every site the model accepts (of `site_ids`, when given), and what is wrong with each one
    it refuses: one bad row (edited by hand, or stored before a rule tightened) must not hide the
    others."""
    valid, invalid = read_registered_sites(engine, site_ids)
    return [registered.site for registered in valid], invalid


def read_registered_sites(
    engine: Engine, site_ids: Iterable[str] | None = None
) -> tuple[list[RegisteredSite], list[StoredSiteInvalid]]:
    """read_sites with each valid site's `updated_at`, read in the same query: what a plan
    records of the registration it was made with."""
    statement = _select_sites().order_by(sites.c.site_id)
    if site_ids is not None:
        statement = statement.where(sites.c.site_id.in_(sorted(set(site_ids))))
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    valid: list[RegisteredSite] = []
    invalid: list[StoredSiteInvalid] = []
    for row in rows:
        try:
            valid.append(_registered(row))
        except StoredSiteInvalid as exc:
            invalid.append(exc)
    return valid, invalid


def stored_timezones_and_currencies(engine: Engine, site_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(timezone, currency) as stored, of each of `site_ids` that has a row, valid or not."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(sites.c.site_id, sites.c.timezone, sites.c.currency).where(sites.c.site_id.in_(list(site_ids)))
        )
        return {site_id: (timezone, currency) for site_id, timezone, currency in rows}


def list_site_ids(engine: Engine) -> list[str]:
    """The ids of every stored site, valid or not."""
    with engine.connect() as connection:
        return list(connection.scalars(select(sites.c.site_id).order_by(sites.c.site_id)))


class StoredSiteInvalid(ValueError):
    """A stored site that the Site model refuses (written by hand, or before a rule tightened)."""

    def __init__(self, message: str, site_id: str = "", timezone: str = ""):
        super().__init__(message)
        self.site_id = site_id
        self.timezone = timezone  # as stored: perhaps not a zone either


def _select_sites() -> Select[Any]:
    """The sites table, its config as the text stored: decoded by _config, so that a row edited
    by hand into text that is no JSON (SQLite keeps any) is named, not a JSONDecodeError."""
    return select(*(column for column in sites.c if column.name != "config"), cast(sites.c.config, Text).label("config"))


def _config(text: str | None) -> Any:
    """The stored config, decoded; the text itself when it is no JSON."""
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def _document(row: Row[Any]) -> dict[str, Any]:
    """The site's fields as stored, in the form `sites add` takes (a config that is no JSON
    object, edited by hand, is kept under its own name)."""
    values = row._mapping
    config = _config(values["config"])
    document = dict(config) if isinstance(config, dict) else {"config": config}
    document["site_id"] = values["site_id"]
    document.update({name: values[name] for name in SITE_COLUMNS})
    return document


def _registered(row: Row[Any]) -> RegisteredSite:
    return RegisteredSite(_site(row), row._mapping["updated_at"])


def _site(row: Row[Any]) -> Site:
    from pydantic import ValidationError

    from dispatch_pipeline.core.request import describe_error
    from dispatch_pipeline.core.site import Site

    values = row._mapping
    config = _config(values["config"])
    if not isinstance(config, dict):  # edited by hand: null, a string, a list, text that is no JSON
        raise StoredSiteInvalid(
            f"stored site {values['site_id']!r} is not a valid site (config: expected a JSON object, got "
            f"{config!r:.80}); register it again with `dispatch-pipeline sites add`",
            values["site_id"],
            values["timezone"],
        )
    document = _document(row)
    try:
        return Site.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(describe_error(error) for error in exc.errors())
        raise StoredSiteInvalid(
            f"stored site {values['site_id']!r} is not a valid site ({problems}); "
            "register it again with `dispatch-pipeline sites add`",
            values["site_id"],
            values["timezone"],
        ) from None
