"""Which site-days a step can plan at all, decided per partition so the others of a run go on."""

from __future__ import annotations

import datetime as dt

from dispatch_pipeline.defs.partitions import SiteDay
from dispatch_pipeline.defs.site_lookup import unplannable_days
from dispatch_pipeline.demo import demo_site


def test_a_date_the_sites_clock_skipped_fails_only_that_day() -> None:
    # Samoa moved across the date line: 2011-12-30 never happened in Pacific/Apia.
    site = demo_site("KL_MALL").model_copy(update={"site_id": "APIA", "timezone": "Pacific/Apia"})
    days = [SiteDay("APIA", dt.date(2011, 12, 29) + dt.timedelta(days=n)) for n in range(3)]

    problems = unplannable_days(days, {"APIA": site}, {})

    assert problems == {
        days[1].key: f"{days[1]}: date: 2011-12-30 never happened in Pacific/Apia (its clocks skipped the whole day)"
    }


def test_an_unusable_site_fails_its_days_with_the_reason() -> None:
    days = [SiteDay("GONE", dt.date(2025, 3, 11)), SiteDay("KL_MALL", dt.date(2025, 3, 11))]

    problems = unplannable_days(days, {"KL_MALL": demo_site("KL_MALL")}, {"GONE": "not in the sites table"})

    assert problems == {days[0].key: f"{days[0]}: not in the sites table"}
