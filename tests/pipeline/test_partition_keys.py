"""The partitions a step works on: refused when there are none."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import dagster as dg
import pytest

from dispatch_pipeline.defs.partitions import SiteDay, context_site_days


def test_a_range_that_holds_no_partition_fails_rather_than_plan_nothing():
    # A range whose start comes after its end in the sites' order (DELHI..LA with LA first).
    reversed_range = SimpleNamespace(has_partition_key=False, has_partition_key_range=True, partition_keys=[])
    with pytest.raises(dg.Failure, match="the run's partition range holds no partition"):
        context_site_days(reversed_range)


def test_a_range_gives_every_site_day_it_holds():
    chunk = SimpleNamespace(has_partition_key=False, has_partition_key_range=True,
                            partition_keys=["2025-04-05|DELHI", "2025-04-06|DELHI"])
    assert context_site_days(chunk) == [SiteDay("DELHI", dt.date(2025, 4, 5)), SiteDay("DELHI", dt.date(2025, 4, 6))]
