"""A registered site: where it is, what it has (PV, battery, grid limits) and what it pays.

What it pays changes over time: `tariff` is the latest time-of-use tariff, and `tariff_history`
the ones before it, each with the local date its successor took over; `Site.tariff_in_force`
says which one prices a local day, so that a plan of a past day bills it as it was billed.

Sites are kept in a YAML file `{sites: [...]}` (or a JSON list of them, as `dispatch-pipeline
sites list --json` prints it); `load_sites_yaml` reads it and reports every
problem with the file, the site's position and id, and the field, so a typo in entry 7 of 40 is
found without bisecting. `site_request` turns a site plus a day's forecast into a contract request.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatch_pipeline.core.calendar import (
    FIRST_DATE,
    LAST_DATE,
    PIPELINE_RESOLUTION_MINUTES,
    LocalDay,
    local_day,
)
from dispatch_pipeline.core.documents import DocumentError, parse_yaml, read_text
from dispatch_pipeline.core.request import (
    DEFAULT_TIMEOUT_MS,
    Battery,
    Capacity,
    FiniteFloat,
    Limits,
    NonNegativeFloat,
    SiteId,
    StorableText,
    TimezoneName,
    Weights,
    array_length_problems,
    calendar_date_input,
    describe_error,
)
from dispatch_pipeline.core.tariffs import (
    CURRENCY_PATTERN,
    TouTariff,
    expand_tariff,
    off_grid_times,
)

# Request fields holding an object: an override of one of these patches the site's value
# (bess={"soc_initial": 0.3} keeps the site's capacity) instead of replacing it wholesale.
_MERGED_FIELDS = ("tariff", "bess", "limits", "weights")


class SiteConfigError(ValueError):
    """A site definition that cannot be used; `problems` lists one message per offending field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid site configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class SiteBattery(Battery):
    """A site's battery: its size and ratings are stated, never the contract's example battery.

    The operating settings (SOC band, start and end SOC, efficiencies, cycle cost) keep the
    contract's documented defaults.
    """

    capacity_kwh: Capacity
    max_charge_kw: NonNegativeFloat
    max_discharge_kw: NonNegativeFloat


def _on_the_planning_grid(tariff: TouTariff) -> TouTariff:
    # Checked when the site is registered, not when its first day is planned.
    off_grid = off_grid_times(tariff, PIPELINE_RESOLUTION_MINUTES)
    if off_grid:
        raise ValueError(
            f"{', '.join(off_grid)}: not on a quarter-hour, the interval sites are planned in, "
            "so part of an interval would pay another period's price"
        )
    return tariff


class TariffHistoryEntry(BaseModel):
    """A tariff the site paid until another took over on `until`, a date of its local calendar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    until: dt.date = Field(
        description="The first local date on which the next tariff (the next entry's, or the "
        "site's `tariff`) applies."
    )
    tariff: TouTariff

    @field_validator("until", mode="before")
    @classmethod
    def _calendar_date(cls, value: Any) -> Any:
        return calendar_date_input(value)

    @field_validator("until")
    @classmethod
    def _plannable(cls, value: dt.date) -> dt.date:
        # A change outside the days that can be planned would never show: a typo, not history.
        if not FIRST_DATE <= value <= LAST_DATE:
            raise ValueError(f"must lie within {FIRST_DATE} to {LAST_DATE} (got {value})")
        return value

    @field_validator("tariff")
    @classmethod
    def _tariff_on_the_planning_grid(cls, tariff: TouTariff) -> TouTariff:
        return _on_the_planning_grid(tariff)


@dataclass(frozen=True)
class TariffInForce:
    """The tariff that prices a local date, where the site lists it ("tariff",
    "tariff_history[1]"), and the local dates it applies from and until (exclusive); None where
    it applies from the site's first day or has no successor."""

    tariff: TouTariff
    field: str
    since: dt.date | None
    until: dt.date | None

    def describe(self) -> str:
        """As "tariff_history[1] (since 2025-01-01, until 2025-07-01)"; "tariff" alone for a
        site without history."""
        span = ", ".join(f"{word} {date}" for word, date in (("since", self.since), ("until", self.until)) if date)
        return f"{self.field} ({span})" if span else self.field


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: SiteId
    name: StorableText = ""
    timezone: TimezoneName = Field(description="IANA timezone of the site's local day.")
    latitude: Annotated[FiniteFloat, Field(ge=-90, le=90)]
    longitude: Annotated[FiniteFloat, Field(ge=-180, le=180)]
    altitude_m: FiniteFloat = 0.0
    # No defaults for these three: a PV size, a battery or a currency nobody stated would be
    # taken for the site's (PV forecasts are checked against pv_kwp; 0 says the site has none).
    pv_kwp: Annotated[FiniteFloat, Field(ge=0)]
    currency: str = Field(pattern=CURRENCY_PATTERN)
    bess: SiteBattery
    limits: Limits = Limits()
    weights: Weights = Weights()
    tariff: TouTariff = Field(description="The latest tariff: in force from the last `tariff_history` date on.")
    # Left out of a dump when empty: sites without history are stored and listed as before, and
    # stay readable by a release that does not know the field.
    tariff_history: tuple[TariffHistoryEntry, ...] = Field(
        (),
        exclude_if=lambda history: not history,
        description="The tariffs before `tariff`, oldest first, each with the local date the next took over.",
    )

    @model_validator(mode="before")
    @classmethod
    def _tariffs_in_the_site_currency(cls, data: Any) -> Any:
        # A tariff that states no currency is in the site's, not the contract's default.
        # An invalid site currency is reported once, at `currency`.
        currency = data.get("currency") if isinstance(data, dict) else None
        if not (isinstance(currency, str) and re.fullmatch(CURRENCY_PATTERN, currency)):
            return data
        data = dict(data)
        if "tariff" in data:
            data["tariff"] = _in_currency(data["tariff"], currency)
        history = data.get("tariff_history")
        if isinstance(history, list | tuple):
            data["tariff_history"] = [
                {**entry, "tariff": _in_currency(entry["tariff"], currency)}
                if isinstance(entry, dict) and "tariff" in entry else entry
                for entry in history
            ]
        return data

    @field_validator("bess", mode="before")
    @classmethod
    def _battery_as_stated(cls, value: Any) -> Any:
        # A request's Battery states every field too; it is checked as a site's would be.
        return value.model_dump() if type(value) is Battery else value

    # Rules of the tariff field, not of the whole site: they are reported beside every other
    # field's fault, not only once the rest of the site is valid.
    @field_validator("tariff")
    @classmethod
    def _tariff_on_the_planning_grid(cls, tariff: TouTariff) -> TouTariff:
        return _on_the_planning_grid(tariff)

    @field_validator("tariff")
    @classmethod
    def _one_currency(cls, tariff: TouTariff, info: ValidationInfo) -> TouTariff:
        # Prices and KPIs are labelled with the site currency; a tariff in another would mislabel them.
        currency = info.data.get("currency")  # absent when invalid: reported at `currency`
        if currency is not None and tariff.currency != currency:
            raise ValueError(_other_currency(tariff, currency))
        return tariff

    @field_validator("tariff_history")
    @classmethod
    def _history_in_order_and_currency(
        cls, history: tuple[TariffHistoryEntry, ...], info: ValidationInfo
    ) -> tuple[TariffHistoryEntry, ...]:
        # Raised at each entry's own field, so that the message names which entry is at fault.
        problems = _out_of_order(history) + _in_other_currencies(history, info.data.get("currency"))
        if problems:
            raise ValidationError.from_exception_data("tariff_history", problems)
        return history

    def tariff_in_force(self, date: dt.date | str) -> TariffInForce:
        """The tariff that prices the site's local `date`: the first history entry whose `until`
        is after it, else `tariff`. Whole local days: a DST day has one tariff like any other."""
        date = _as_date(date)
        changes = [entry.until for entry in self.tariff_history]
        index = bisect.bisect_right(changes, date)
        since = changes[index - 1] if index else None
        if index == len(self.tariff_history):
            return TariffInForce(self.tariff, "tariff", since, None)
        entry = self.tariff_history[index]
        return TariffInForce(entry.tariff, f"tariff_history[{index}]", since, entry.until)

    def tariff_on(self, date: dt.date | str) -> TouTariff:
        """The tariff that prices the site's local `date` (tariff_in_force)."""
        return self.tariff_in_force(date).tariff

    def local_day(self, date: dt.date | str, resolution_minutes: int = 15) -> LocalDay:
        return local_day(_as_date(date), self.timezone, resolution_minutes)


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _in_currency(tariff: Any, currency: str) -> Any:
    return {**tariff, "currency": currency} if isinstance(tariff, dict) and "currency" not in tariff else tariff


def _other_currency(tariff: TouTariff, currency: str) -> str:
    return f"currency {tariff.currency!r} differs from the site's currency {currency!r}"


def _error_at(location: tuple[int | str, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=location, input=value)


def _out_of_order(history: Sequence[TariffHistoryEntry]) -> list[InitErrorDetails]:
    # Each date against its predecessor: one date out of place is named once, not with every later one.
    return [
        _error_at(
            (index, "until"),
            f"must be after tariff_history[{index - 1}].until {previous.until} (got {entry.until}); "
            "list the tariffs oldest first",
            entry.until,
        )
        for index, (previous, entry) in enumerate(pairwise(history), start=1)
        if entry.until <= previous.until
    ]


def _in_other_currencies(history: Sequence[TariffHistoryEntry], currency: str | None) -> list[InitErrorDetails]:
    # Prices and KPIs are labelled with the site currency, those of past days too.
    if currency is None:  # invalid: reported at `currency`
        return []
    return [
        # The tariff as written, so that the message shows no object where the rule names the values.
        _error_at((index, "tariff"), _other_currency(entry.tariff, currency), entry.tariff.model_dump())
        for index, entry in enumerate(history)
        if entry.tariff.currency != currency
    ]


def days_priced_otherwise(stored: Site, site: Site, first: dt.date, today: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The spans [start, end) of local days from `first` to before `today` that `site` prices by
    another tariff than `stored`. A site's tariff changes only on its `until` dates, so each span
    between consecutive dates of either site is compared at its first day."""
    if today <= first:
        return []
    changes = {entry.until for entry in (*stored.tariff_history, *site.tariff_history)}
    dates = sorted({first, today} | {date for date in changes if first < date < today})
    spans: list[tuple[dt.date, dt.date]] = []
    for start, end in pairwise(dates):
        if stored.tariff_on(start).model_dump(mode="json") == site.tariff_on(start).model_dump(mode="json"):
            continue
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def parse_site(data: Any, source: str = "site") -> Site:
    """Validate one site mapping; raise SiteConfigError naming `source` and the field."""
    return _validate_site(data, _label(source, data))


def _label(where: str, entry: Any) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("site_id"), str):
        return f"{where} ({entry['site_id']!r})"
    return where


def _validate_site(entry: Any, label: str) -> Site:
    if not isinstance(entry, dict):
        raise SiteConfigError([f"{label}: must be a mapping (got {_kind(entry)})"])
    try:
        return Site.model_validate(entry)
    except ValidationError as exc:
        raise SiteConfigError([f"{label}: {describe_error(e)}" for e in exc.errors()]) from None


def parse_sites(data: Any, source: str = "sites") -> list[Site]:
    """Validate `{sites: [...]}`, or the list alone (as `sites list --json` prints it); raise
    SiteConfigError naming `source`, the entry and the field."""
    # The list alone names its entries by position ("[2]"); under `sites:`, by "sites[2]".
    where = "" if isinstance(data, list) else "sites"
    if isinstance(data, list):
        if not data:
            raise SiteConfigError([f"{source}: is an empty list: list at least one site"])
        data = {"sites": data}
    if isinstance(data, dict) and "sites" not in data:
        one_site = " (one site's fields: `sites add` registers a single site)" if "site_id" in data else ""
        raise SiteConfigError([f"{source}: has no top-level 'sites' list{one_site}"])
    if not isinstance(data, dict):
        raise SiteConfigError([f"{source}: must be a list of sites, or a mapping with a 'sites' list (got {_kind(data)})"])
    unknown = sorted(set(data) - {"sites"})
    if unknown:
        raise SiteConfigError([f"{source}: unknown top-level key(s) {unknown}; only 'sites' is allowed"])
    entries = data["sites"]
    if not isinstance(entries, list):
        raise SiteConfigError([f"{source}: 'sites' must be a list (got {_kind(entries)})"])
    if not entries:
        # Like an empty forecast file: a file that registers nothing is a mistake, not a no-op.
        raise SiteConfigError([f"{source}: 'sites' is empty: list at least one site"])

    sites: list[Site] = []
    problems: list[str] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        label = _label(f"{source}: {where}[{index}]", entry)
        try:
            site: Site | None = _validate_site(entry, label)
        except SiteConfigError as exc:
            problems.extend(exc.problems)
            site = None
        # The id as written, whether or not the rest of the entry is valid: a repeat is reported
        # with the entry's other faults, not only once they are fixed.
        site_id = entry.get("site_id") if isinstance(entry, dict) else None
        if isinstance(site_id, str):
            if site_id in first_index:
                problems.append(f"{label}: site_id {site_id!r} already used by {where}[{first_index[site_id]}]")
                continue
            first_index[site_id] = index
        if site is not None:
            sites.append(site)
    if problems:
        raise SiteConfigError(problems)
    return sites


def load_sites_yaml(path: str | Path) -> list[Site]:
    source = str(path)
    try:
        data = parse_yaml(read_text(source), source)
    except DocumentError as exc:
        raise SiteConfigError([str(exc)]) from None
    return parse_sites(data, source=source)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def site_request(
    site: Site,
    date: dt.date | str,
    load_kw: Sequence[float] | np.ndarray,
    pv_kw: Sequence[float] | np.ndarray | None,
    buy: Sequence[float] | np.ndarray | None = None,
    sell: Sequence[float] | np.ndarray | None = None,
    *,
    resolution_minutes: int = PIPELINE_RESOLUTION_MINUTES,
    **overrides: Any,
) -> dict[str, Any]:
    """A contract request for the site's local `date`: prices from the ToU tariff in force that
    day unless given, and that tariff's demand charge.

    `pv_kw=None` leaves PV out (the solver then uses the stored forecast). `overrides` set
    top-level request fields; for tariff/bess/limits/weights a dict patches the site's value.
    """
    day = site.local_day(date, resolution_minutes)
    tariff = site.tariff_on(day.date)
    if buy is None or sell is None:
        tou_buy, tou_sell = expand_tariff(tariff, day)
        buy = tou_buy if buy is None else buy
        sell = tou_sell if sell is None else sell
    arrays = {"load_kw": load_kw, "pv_kw": pv_kw, "buy": buy, "sell": sell}
    lengths = array_length_problems({name: values for name, values in arrays.items() if values is not None}, day)
    if lengths:
        raise ValueError("; ".join(lengths))

    def floats(values: Sequence[float] | np.ndarray) -> list[float]:
        return np.asarray(values, dtype=float).tolist()

    request: dict[str, Any] = {
        "site_id": site.site_id,
        "date": day.date.isoformat(),
        "timezone": site.timezone,
        "resolution_minutes": resolution_minutes,
        "load_kw": floats(load_kw),
        "pv_kw": None if pv_kw is None else floats(pv_kw),
        "tariff": {
            "buy": floats(arrays["buy"]),
            "sell": floats(arrays["sell"]),
            "demand_charge_per_kw": tariff.demand_charge_per_kw,
        },
        "bess": site.bess.model_dump(),
        "limits": site.limits.model_dump(),
        "weights": site.weights.model_dump(),
        "use_milp": True,
        "timeout_ms": DEFAULT_TIMEOUT_MS,
    }
    if pv_kw is None:
        del request["pv_kw"]  # absent, not null: the contract then reads the stored forecast
    for key, value in overrides.items():
        if key in _MERGED_FIELDS and isinstance(value, dict):
            request[key] = {**request[key], **value}
        else:
            request[key] = value
    return request
