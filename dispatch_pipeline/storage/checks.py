"""Input checks for the storage layer: each failure names the field and the offending value."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from dispatch_pipeline.core.request import SITE_ID_PATTERN, site_id_problem
from dispatch_pipeline.storage.timestamps import UTC

_SITE_ID = re.compile(SITE_ID_PATTERN)


class StorageInputError(ValueError):
    """Data refused before (or instead of) being written; the message names field and value."""


def problem(field: str, message: str, value: Any) -> StorageInputError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return StorageInputError(f"{field}: {message} (got {shown})")


def check_site_id(value: Any, field: str = "site_id") -> str:
    if not isinstance(value, str) or not _SITE_ID.fullmatch(value):
        raise problem(field, f"must match {SITE_ID_PATTERN}", value)
    wrong = site_id_problem(value)
    if wrong:
        raise problem(field, wrong, value)
    return value


def check_choice(value: Any, choices: tuple[str, ...], field: str) -> str:
    if value not in choices:
        raise problem(field, f"must be one of {', '.join(choices)}", value)
    return value


def check_finite(value: Any, field: str) -> float:
    # bool is an int to Python but never a measurement.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise problem(field, "must be a finite number", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float (math.isfinite would raise the same)
        raise problem(field, "must be a finite number (this one is beyond a float's range)", value) from None
    if not math.isfinite(number):
        raise problem(field, "must be a finite number", value)
    return number


def check_aware(value: Any, field: str) -> dt.datetime:
    """A timezone-aware datetime converted to UTC; a naive one is refused, not guessed."""
    if not isinstance(value, dt.datetime):
        raise problem(field, "must be a timezone-aware datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise problem(field, "must be timezone-aware (naive datetimes are ambiguous)", value)
    return value.astimezone(UTC)


def parse_utc_timestamp(text: Any, field: str) -> dt.datetime:
    """Parse an ISO 8601 instant with an explicit offset (the contract writes `...Z`)."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise problem(field, "must be an ISO 8601 UTC timestamp", text) from None
    return check_aware(parsed, field)


def check_integer(value: Any, allowed: range, field: str) -> int:
    # Checked here: PostgreSQL's binary COPY would store an int4 that overflows as another number.
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise problem(field, f"must be an integer from {allowed.start} to {allowed.stop - 1}", value)
    return value


def check_length(value: str | None, column: Any, field: str) -> str | None:
    """`value` fits the String(n) `column` (PostgreSQL refuses a longer one, SQLite keeps it)."""
    if value is not None and len(value) > column.type.length:
        raise problem(field, f"must be at most {column.type.length} characters", value)
    return value
