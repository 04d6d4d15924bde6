"""The registered sites a step needs, read once per step."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
from sqlalchemy import Engine

from dispatch_pipeline.core.site import Site
from dispatch_pipeline.storage import get_site


def registered_sites(engine: Engine, site_ids: Iterable[str]) -> dict[str, Site]:
    """Every site by id; a partition for a site missing from the `sites` table fails the step."""
    sites = {}
    unknown = []
    for site_id in sorted(set(site_ids)):
        site = get_site(engine, site_id)
        if site is None:
            unknown.append(site_id)
        else:
            sites[site_id] = site
    if unknown:
        raise dg.Failure(
            f"site(s) {', '.join(unknown)} not registered in the sites table "
            "(add them with `dispatch-pipeline sites add`)"
        )
    return sites
