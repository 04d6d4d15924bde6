"""Settings shared by every asset of the pipeline."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import dagster as dg

from dispatch_pipeline.core.calendar import PIPELINE_RESOLUTION_MINUTES

# Backfill policies on assets are "beta" in dagster 1.13; they are what makes backfills scale here.
# Only that warning is silenced: any other beta feature used is worth hearing about.
warnings.filterwarnings("ignore", message=r".*`backfill_policy`.*", category=dg.BetaWarning)

OWNERS = ["team:dispatch"]
RESOLUTION_MINUTES = PIPELINE_RESOLUTION_MINUTES


def positive_int_setting(name: str, default: int) -> int:
    """An environment variable holding a whole number >= 1; a bad one fails the code location's
    load naming the variable and its value."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}: expected a whole number of at least 1, got {text!r}")
    return value


# Partitions per run when backfilling: a site-year (365) per run amortises Dagster's per-run
# start-up (~3 s as a subprocess) over hundreds of solves, while a failed chunk costs little.
BACKFILL_CHUNK = positive_int_setting("DISPATCH_BACKFILL_CHUNK", 365)
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_CHUNK)


# Run tags of our own. SITE_TAG is what dagster_home/dagster*.yaml limit to one run per site.
SITE_TAG = "dispatch/site"  # the site of a run of one site's days
SITES_TAG = "dispatch/sites"  # how many sites a run of several plans
DATE_TAG = "dispatch/date"  # the local date a day-ahead run plans
PLANNING_TAG = "dispatch/planning"  # "day_ahead" on the schedule's runs
SOURCE_TAG = "dispatch/source"  # who started a run outside the schedule (the demo)

# How a run plans its site-days, chosen per run (a backfill's tags reach each of its runs): the
# MILP with the rule-based fallback, or the rule-based schedule alone, to compare the two over
# stored history.
STRATEGY_TAG = "dispatch/strategy"
STRATEGIES = {
    "milp": "the MILP, falling back to the rule-based schedule (the default)",
    "rule_based": "the rule-based schedule alone",
}


def run_strategy(tags: Mapping[str, str]) -> str:
    """The run's planning strategy from its tags; a dg.Failure naming the tag and value if unknown."""
    strategy = tags.get(STRATEGY_TAG, "milp")
    if strategy not in STRATEGIES:
        choices = "; ".join(f"{name!r}: {meaning}" for name, meaning in STRATEGIES.items())
        raise dg.Failure(f"run tag {STRATEGY_TAG}={strategy!r} is not a strategy: use one of {choices}")
    return strategy


def shorten(items: list[str], limit: int = 5) -> str:
    """'a, b, c and 12 more': enough of a list for a message."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
