"""The solve request of the dispatch contract, validated field by field.

Every rule of the contract's "bad input" list lives here, so the CLI, the API and the Dagster
assets reject the same things with the same words.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Sized
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from dispatch_pipeline.core.calendar import LocalDay, local_day, next_local_date

SITE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# ASCII digits: \d would also match other scripts' digits ("２０２５"), which date.fromisoformat refuses.
CALENDAR_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_calendar_date(text: str) -> dt.date:
    """A YYYY-MM-DD text as its date; ValueError saying what is wrong with it. Nothing else is
    read as a date: pydantic would take "0" for a Unix timestamp (1970-01-01), a guess."""
    if not CALENDAR_DATE.fullmatch(text):
        raise ValueError("expected a calendar date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a calendar date YYYY-MM-DD; there is no such day") from None


def calendar_date_input(value: Any) -> Any:
    """A date field's input before pydantic reads it: text as parse_calendar_date reads it, a
    number or a time refused. Pydantic would read a number, or a string of digits, as a Unix
    timestamp (0 -> 1970-01-01), and a time as its date: guesses, not dates."""
    if isinstance(value, str):
        return parse_calendar_date(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected a calendar date YYYY-MM-DD, not a number (got {value!r})")
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a calendar date YYYY-MM-DD, not a time (got {value.isoformat()})")
    return value
RESOLUTIONS_MINUTES = (5, 10, 15, 30, 60)
TIMEOUT_MS_RANGE = range(100, 600_001)
DEFAULT_TIMEOUT_MS = 3000  # the contract's default hard timeout of a MILP solve

# Past this a power, energy or price is a typo, not a site: a day of 1e308 kW sums to infinity,
# and a solver's tolerances cannot span such a range.
MAX_MAGNITUDE = 1e9

# strict: a JSON string such as "5" is an error, not a number; allow_inf_nan: NaN and inf are errors.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
NonNegativeFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=MAX_MAGNITUDE)]
PositiveFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=MAX_MAGNITUDE)]
Fraction = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
Efficiency = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=1)]
# The other end of the range: a weight of 1e-300 beside a violation weight of 1000 leaves the
# solver no cost to see, and the marginal cost in currency (dual / weights.cost) overflows.
MIN_WEIGHT = 1 / MAX_MAGNITUDE


def _zero_or_at_least_min_weight(value: float) -> float:
    if 0 < value < MIN_WEIGHT:
        raise ValueError(f"must be 0 or at least {MIN_WEIGHT:g}")
    return value


Weight = Annotated[NonNegativeFloat, AfterValidator(_zero_or_at_least_min_weight)]
# Likewise a battery: one of 5e-324 kWh turns any stored energy into an infinite SOC.
MIN_CAPACITY_KWH = 1 / MAX_MAGNITUDE


def _at_least_min_capacity(value: float) -> float:
    if value < MIN_CAPACITY_KWH:
        raise ValueError(f"must be at least {MIN_CAPACITY_KWH:g} kWh")
    return value


Capacity = Annotated[PositiveFloat, AfterValidator(_at_least_min_capacity)]


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """The zones of the `tzdata` package: the same on every host.

    The host's zone directory also answers to "localtime" (whatever the host is set to),
    "posixrules" and "right/..." (leap-second clocks): names that would plan a different day
    on each machine.
    """
    return frozenset(resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())


def _known_timezone(value: str) -> str:
    if value not in iana_zone_names():
        raise ValueError("unknown IANA timezone")
    return value


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which database text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains {value[exc.start]!r}, a lone surrogate that UTF-8 cannot encode") from None
    return value


# "." and "..": the pipeline keeps a site's files in a directory named after it, and these would
# be the parent's own, where two sites' (or two assets') files overwrite each other.
RELATIVE_DIRECTORY_NAMES = (".", "..")


def site_id_problem(value: str) -> str | None:
    """What is wrong with a site id that matches SITE_ID_PATTERN (the value is not repeated: each
    caller shows it its own way); None if nothing."""
    if value in RELATIVE_DIRECTORY_NAMES:
        return "'.' and '..' cannot name the directory a site's files are kept in"
    return None


def is_site_id(value: Any) -> bool:
    """Whether `value` is a site id a request may carry (the pattern, and site_id_problem)."""
    return isinstance(value, str) and re.fullmatch(SITE_ID_PATTERN, value) is not None and not site_id_problem(value)


def _usable_site_id(value: str) -> str:
    problem = site_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


TimezoneName = Annotated[str, AfterValidator(_known_timezone)]
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN), AfterValidator(_usable_site_id)]
# Free text that is stored: a name, a label.
StorableText = Annotated[str, AfterValidator(_storable_text)]


class RequestError(ValueError):
    """A request that breaks the contract; `problems` lists one message per offending field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid dispatch request:\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tariff(_Strict):
    buy: list[FiniteFloat] = Field(description="Import price per interval, currency/kWh (may be negative).")
    sell: list[FiniteFloat] = Field(description="Export price per interval, currency/kWh (may be negative).")
    demand_charge_per_kw: NonNegativeFloat = Field(0.0, description="Charge on the day's peak import, currency/kW.")


class Battery(_Strict):
    capacity_kwh: Capacity = 100.0
    max_charge_kw: NonNegativeFloat = 50.0
    max_discharge_kw: NonNegativeFloat = 50.0
    soc_min: Fraction = 0.1
    # validate_default: a soc_min sent above the default soc_max is checked against it too.
    soc_max: Annotated[Fraction, Field(validate_default=True)] = 0.9
    soc_initial: Fraction = 0.5
    soc_final_min: Fraction | None = Field(
        None, description="End-of-day SOC target; null means 'at least soc_initial'."
    )
    charge_efficiency: Efficiency = 0.95
    discharge_efficiency: Efficiency = 0.95
    cycle_cost_per_kwh: NonNegativeFloat = 0.0

    @field_validator("soc_max")
    @classmethod
    def _soc_max_not_below_soc_min(cls, value: float, info: ValidationInfo) -> float:
        soc_min = info.data.get("soc_min")
        if soc_min is not None and soc_min > value:
            raise ValueError(f"must not be below soc_min ({soc_min})")
        return value

    @field_validator("soc_final_min")
    @classmethod
    def _target_within_band(cls, value: float | None, info: ValidationInfo) -> float | None:
        # Checked here, not on the whole battery, so the error names this field and its value.
        soc_min, soc_max = info.data.get("soc_min"), info.data.get("soc_max")
        if value is not None and soc_min is not None and soc_max is not None and not soc_min <= value <= soc_max:
            raise ValueError(f"must lie within [soc_min, soc_max] = [{soc_min}, {soc_max}]")
        return value

    @property
    def terminal_soc(self) -> float:
        # "At least as full as it started" (the contract), even above soc_max: a battery that
        # starts the day above its band then owes soc_initial - soc_max of violation however it
        # is run (above the band, or short of the target, at the end of the day).
        return self.soc_initial if self.soc_final_min is None else self.soc_final_min


class Limits(_Strict):
    grid_import_max_kw: NonNegativeFloat | None = None
    grid_export_max_kw: NonNegativeFloat | None = None
    transformer_max_kw: NonNegativeFloat | None = Field(
        None, description="Caps import and export alike."
    )

    @property
    def import_cap_kw(self) -> float | None:
        caps = [c for c in (self.grid_import_max_kw, self.transformer_max_kw) if c is not None]
        return min(caps) if caps else None

    @property
    def export_cap_kw(self) -> float | None:
        caps = [c for c in (self.grid_export_max_kw, self.transformer_max_kw) if c is not None]
        return min(caps) if caps else None


class Weights(_Strict):
    cost: Weight = 1.0
    curtail: Weight = 0.2
    violation: Weight = 1000.0


class DispatchRequest(_Strict):
    """One site-day to plan. Field defaults are the contract's."""

    site_id: SiteId = Field(examples=["DEMO"])
    date: dt.date | None = Field(None, description="The site's local day; default: its next day.")
    timezone: TimezoneName | None = Field(None, description="IANA timezone; default: the site's, else UTC.")
    resolution_minutes: Literal[5, 10, 15, 30, 60] = 15
    load_kw: list[NonNegativeFloat]
    pv_kw: list[NonNegativeFloat] | None = None
    tariff: Tariff
    bess: Battery = Battery()
    limits: Limits = Limits()
    weights: Weights = Weights()
    use_milp: Annotated[bool, Field(strict=True)] = True
    timeout_ms: Annotated[
        int, Field(strict=True, ge=TIMEOUT_MS_RANGE.start, le=TIMEOUT_MS_RANGE.stop - 1)
    ] = DEFAULT_TIMEOUT_MS

    @field_validator("date", mode="before")
    @classmethod
    def _calendar_date(cls, value: Any) -> Any:
        return calendar_date_input(value)

    @field_validator("resolution_minutes", mode="before")
    @classmethod
    def _whole_minutes(cls, value: Any) -> Any:
        # A literal's lax mode takes 15.0 for 15; every other integer field refuses a float.
        if isinstance(value, float):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value


def describe_error(error: ErrorDetails, subject: str = "") -> str:
    """One pydantic error as "field: what is wrong (got value)"; `subject` prefixes a whole-object error."""
    # A key that is no text ends the location with the key itself, a YAML `true:` or `1:` as the
    # index [1]: the mapping holding it is the field at fault, and the key its value.
    invalid_key = error["type"] == "invalid_key"
    location = ""
    for part in error["loc"][:-1] if invalid_key else error["loc"]:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    if error["type"] == "missing":
        return f"{location}: field required"
    if invalid_key:
        message = f"has a key that is not text (got {error.get('input')!r})"
        return f"{location or subject}: {message}" if location or subject else message
    message = error["msg"].removeprefix("Value error, ")
    shown = error.get("input")
    # A whole object checked by its own rule is noise (the rule names the values); a validator
    # that words its value itself ("got the number 1320") has said it already. An object where a
    # list or a number belongs is the mistake itself, and is shown.
    rule_on_object = isinstance(shown, dict) and error["type"] in ("value_error", "assertion_error")
    if not rule_on_object and "(got " not in message:
        if isinstance(shown, float) and math.isnan(shown):
            shown = "NaN"
        text = repr(shown)
        message += f" (got {text if len(text) <= 80 else text[:77] + '...'})"
    prefix = location or subject
    return f"{prefix}: {message}" if prefix else message


def parse_request(
    data: Any,
    *,
    default_timezone: str | None = None,
    today: dt.datetime | None = None,
    known_pv_kw: Sized | None = None,
) -> DispatchRequest:
    """Validate a dict (or a request) against the contract; raise RequestError listing every problem.

    Arrays whose length is not the local day's are listed too when the day can be told despite
    the other problems (`default_timezone`, `today` and `known_pv_kw` are what a caller knows of
    a registered site, as for `build_problem`).
    """
    if isinstance(data, DispatchRequest):
        return data
    if not isinstance(data, dict):
        # Imported here, on a rare path: documents imports PyYAML, which solver processes never need.
        from dispatch_pipeline.core.documents import json_type_name

        raise RequestError([f"request: must be a JSON object (got {json_type_name(data)})"])
    try:
        return DispatchRequest.model_validate(data)
    except ValidationError as exc:
        problems = [describe_error(e, "request") for e in exc.errors()]
        raise RequestError(
            problems + raw_array_length_problems(data, default_timezone, today, known_pv_kw)
        ) from None


def field_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with some top-level fields of a request, judged by the request's own rules."""
    problems = []
    for name, value in values.items():
        try:
            _field_adapter(name).validate_python(value)
        except ValidationError as exc:
            problems += [describe_error(e, name) for e in exc.errors()]
    return problems


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = DispatchRequest.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def array_length_problems(arrays: dict[str, Sized], day: LocalDay) -> list[str]:
    """One message per array that has not one value per interval of `day`."""
    where = f"{day.date} in {day.timezone} at {day.resolution_minutes}-minute resolution"
    return [
        f"{name}: has {len(values)} values, but {where} has {day.intervals} intervals"
        for name, values in arrays.items()
        if len(values) != day.intervals
    ]


def raw_array_length_problems(
    raw: dict[str, Any],
    default_timezone: str | None = None,
    today: dt.datetime | None = None,
    known_pv_kw: Sized | None = None,
) -> list[str]:
    """array_length_problems of a raw request that failed validation, if its day can be told."""
    day = _raw_day(raw, default_timezone, today)
    if day is None:
        return []
    tariff = raw.get("tariff") if isinstance(raw.get("tariff"), dict) else {}
    pv = raw.get("pv_kw") if raw.get("pv_kw") is not None else known_pv_kw
    arrays = {"load_kw": raw.get("load_kw"), "pv_kw": pv, "tariff.buy": tariff.get("buy"), "tariff.sell": tariff.get("sell")}
    return array_length_problems({name: v for name, v in arrays.items() if isinstance(v, list | tuple)}, day)


def _raw_day(raw: dict[str, Any], default_timezone: str | None, today: dt.datetime | None) -> LocalDay | None:
    resolution = raw.get("resolution_minutes", DispatchRequest.model_fields["resolution_minutes"].default)
    # Only a missing or null timezone takes the default; "" is a bad timezone, not UTC.
    timezone = raw.get("timezone")
    timezone = (default_timezone or "UTC") if timezone is None else timezone
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in RESOLUTIONS_MINUTES:
        return None
    if not isinstance(timezone, str) or timezone not in iana_zone_names():
        return None
    date = raw.get("date")
    try:
        if date is None:
            date = next_local_date(timezone, today)
        elif isinstance(date, str):
            date = parse_calendar_date(date)
        elif type(date) is not dt.date:  # a datetime, a number: the model refuses it
            return None
        return local_day(date, timezone, resolution)
    except ValueError:
        return None
