"""The registered sites a step needs, read once per step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import Engine

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.defs.common import RESOLUTION_MINUTES
from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.storage import read_registered_sites


class StepSites(NamedTuple):
    """What registered_sites found: the usable sites by id, why each other one cannot be
    planned, and when each usable one's registration last changed (its `updated_at`, read with
    it: what a plan made with it records)."""

    sites: dict[str, Site]
    unusable: dict[str, str]
    updated_at: dict[str, dt.datetime]


def registered_sites(engine: Engine, site_ids: Iterable[str]) -> StepSites:
    """Every usable site by id, and for every other one why it cannot be planned: it is not in
    the `sites` table (removed, or never added), or its stored definition is invalid.

    A step fails only the partitions of such a site (`unplannable_days`), so the recovery sensor
    can plan the other sites of a run that carries several.
    """
    wanted = set(site_ids)
    valid, invalid = read_registered_sites(engine, wanted)
    sites = {registered.site.site_id: registered.site for registered in valid}
    updated_at = {registered.site.site_id: registered.updated_at for registered in valid}
    unusable = {exc.site_id: str(exc) for exc in invalid}
    for site_id in sorted(wanted - sites.keys() - unusable.keys()):
        unusable[site_id] = (
            "not in the sites table (removed, or never added: `dispatch-pipeline sites add` "
            "registers it)"
        )
    return StepSites(sites, unusable, updated_at)


def unplannable_days(days: Sequence[SiteDay], sites: dict[str, Site], unusable: dict[str, str]) -> dict[str, str]:
    """Partition key -> why, for the days of the sites `registered_sites` found unusable, and the
    dates a site's clock skipped whole (Samoa's 2011-12-30): no interval to plan."""
    problems = {}
    for day in days:
        if day.site_id in unusable:
            problems[day.key] = f"{day}: {unusable[day.site_id]}"
            continue
        try:
            sites[day.site_id].local_day(day.date, RESOLUTION_MINUTES)
        except ValueError as exc:
            problems[day.key] = f"{day}: {exc}"
    return problems
