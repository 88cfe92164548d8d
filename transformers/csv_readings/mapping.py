"""The ``csv_readings`` mapping a route declares, and its compiled form.

Schema first (what a connector team writes under ``options: {csv_readings: ...}``, checked
when routes load, file:line and "did you mean" on every error), then the frozen objects the
decoder runs with, compiled once per distinct mapping.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from bus.errors import ConfigError
from bus.options import OptionsSchema, Text, describe
from transformers.catalogue import EventCode, event_codes_by_type, is15959_events
from transformers.instants import IST, LocalTimeOptions, local_zone

ENCODINGS = ("utf-8", "utf-8-sig", "latin-1", "windows-1252", "utf-16")
KINDS = ("interval", "register", "events")
READING_TYPE = re.compile(r"[0-9]+(\.[0-9]+){17}")  # IEC 61968-9 ReadingType mRID: 18 dotted numbers
CIM_EVENT_TYPE = re.compile(r"[0-9]+(\.[0-9]+){3}")  # EndDeviceEventType: 4 dotted numbers
BUILTIN_CODES = "is15959"


class Columns(fields.Field):
    """A column name, or a list of names (aliases: the first one the header has is read)."""

    def _deserialize(self, value, attr, data, **kwargs):
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValidationError("a column name, or a list of column names (aliases)")
        return tuple(n.strip().lower() for n in names)


class QuantitySchema(OptionsSchema):
    reading_type = Text(required=True, validate=validate.Regexp(
        READING_TYPE, error="a ReadingType mRID: 18 dotted numbers, e.g. 0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"),
        metadata=describe("IEC 61968-9 ReadingType mRID of the values (the unit after scaling)."))
    aliases = fields.List(Text(), load_default=list, metadata=describe(
        "Wide layout: other header names of this column (the first one present is read)."))
    scale = fields.Float(load_default=1.0, allow_nan=False, validate=validate.Range(min=0, min_inclusive=False),
                         metadata=describe("Multiplier from the file's unit to the ReadingType's: 0.001 reads Wh "
                                           "as kWh."))
    max = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=validate.Range(min=0),
                       metadata=describe("Plausible maximum after scaling; a row above it is rejected."))
    signed = fields.Boolean(load_default=False, metadata=describe(
        "Negative values are readings (net energy, power factor); otherwise a minus sign rejects the row."))


class ProfileSchema(OptionsSchema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS), metadata=describe(
        "interval: interval data (canonical intervalBlocks); register: register snapshots (readings); "
        "events: event-log rows (EndDeviceEvents)."))
    layout = fields.String(load_default="wide", validate=validate.OneOf(("wide", "long")), metadata=describe(
        "wide: one column per quantity; long: one row per meter, time and quantity code (code and value columns)."))
    meter = Columns(required=True, metadata=describe("Column of the meter's serial number (or a list of aliases)."))
    time = Columns(required=True, metadata=describe(
        "Column of the reading's time, or of its time of day when `date` is set (or a list of aliases)."))
    date = Columns(load_default=None, metadata=describe("Column of the date, when date and time are in two."))
    time_format = Text(load_default="iso", metadata=describe(
        "iso (ISO 8601, a bare date for registers), or a strftime pattern such as %d/%m/%Y %H:%M; with `date`, "
        "the pattern reads the date, a space and the time."))
    time_marks = fields.String(load_default="end", validate=validate.OneOf(("end", "start")), metadata=describe(
        "Interval kind: whether the time marks the end or the start of its interval (canonical is the end)."))
    interval_s = fields.Integer(load_default=900, strict=True, validate=validate.Range(min=1, max=86400),
                                metadata=describe("Interval length in seconds (for time_marks: start)."))
    quantities = fields.Dict(keys=Text(), values=fields.Nested(QuantitySchema), load_default=dict,
                             metadata=describe("Wide: column name → quantity; long: the vendor's quantity code "
                                               "(e.g. OBIS 1.8.0) → quantity."))
    code = Columns(load_default=None, metadata=describe(
        "Long layout: column of the quantity code; events: column of the event code."))
    value = Columns(load_default=None, metadata=describe("Long layout: column of the value."))
    received = Columns(load_default=None, metadata=describe("Events: column of the time the HES received it."))
    codes = fields.Raw(load_default=BUILTIN_CODES, metadata=describe(
        "Events: is15959 (the codes are IS 15959 event codes), or a mapping from the vendor's code to an "
        "IS 15959 code or a CIM EndDeviceEventType (e.g. 3.26.0.185)."))

    @validates("codes")
    def _codes(self, value, **_):
        event_table(value)

    @validates_schema(skip_on_field_errors=True)
    def _layout(self, data, **_):
        kind, layout = data["kind"], data.get("layout", "wide")
        if kind == "events":
            if data.get("code") is None:
                raise ValidationError("an events profile names its event code column", "code")
            if data.get("quantities"):
                raise ValidationError("an events profile has no quantities", "quantities")
            return
        if not data.get("quantities"):
            raise ValidationError("a readings profile maps at least one quantity", "quantities")
        if layout == "long":
            missing = [k for k in ("code", "value") if data.get(k) is None]
            if missing:
                raise ValidationError(f"a long layout names its {' and '.join(missing)} column", missing[0])
            if any(q["aliases"] for q in data["quantities"].values()):
                raise ValidationError("aliases name columns: a long layout's quantities are codes", "quantities")
        elif data.get("code") is not None or data.get("value") is not None:
            raise ValidationError("code and value belong to a long layout (set layout: long)", "layout")
        if data.get("time_format", "iso") != "iso":
            try:
                strftime_check(data["time_format"])
            except ValueError as exc:
                raise ValidationError(str(exc), "time_format") from None


class CsvDialectSchema(OptionsSchema):
    encoding = fields.String(load_default="utf-8", validate=validate.OneOf(ENCODINGS), metadata=describe(
        "Text encoding of the file: utf-8 (with or without a BOM), latin-1, windows-1252, or utf-16 (with a BOM)."))
    delimiter = fields.String(load_default=",", validate=validate.Length(equal=1), metadata=describe(
        "Field separator, one character: , ; | or a tab."))
    quote = fields.String(load_default='"', validate=validate.Length(equal=1), metadata=describe(
        "Quote character around fields that hold the delimiter."))
    decimal = fields.String(load_default=".", validate=validate.OneOf((".", ",")), metadata=describe(
        "Decimal mark of the values: . or , (decimal comma)."))
    skip_lines = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=1000),
                                metadata=describe("Lines before the header line (a vendor's banner or title)."))
    time_zone = Text(load_default=None, metadata=describe(
        "IANA time zone of times written without an offset, e.g. Asia/Kolkata (default: the route's "
        "utc_offset, else IST)."))
    missing = fields.List(fields.String(), load_default=lambda: [""], metadata=describe(
        "Values that mean 'no value', e.g. ['', NA, '-']: that value is skipped, the row is not rejected."))
    profiles = fields.Dict(keys=Text(), values=fields.Nested(ProfileSchema), required=True,
                           validate=validate.Length(min=1), metadata=describe(
                               "The file kinds this route reads, by name; a file's header picks its profile "
                               "(every column the profile names must be there)."))

    @validates("time_zone")
    def _zone(self, value, **_):
        if value is not None:
            zone_named(value)

    @validates_schema(skip_on_field_errors=True)
    def _dialect(self, data, **_):
        delimiter, quote = data.get("delimiter", ","), data.get("quote", '"')
        if delimiter in ('"' if quote is None else quote, "\n", "\r") or delimiter.isalnum():
            raise ValidationError("the delimiter must be a separator other than the quote", "delimiter")
        if data.get("decimal") == "," and delimiter == ",":
            raise ValidationError("a decimal comma needs another delimiter (;, | or a tab)", "decimal")


class CsvReadingsOptions(LocalTimeOptions):
    csv_readings = fields.Nested(CsvDialectSchema, required=True, metadata=describe(
        "The file's dialect and its profiles: how columns become canonical readings or events."))


def zone_named(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{name!r} is not an IANA time zone (e.g. Asia/Kolkata, Europe/Berlin)") from exc


def strftime_check(pattern: str) -> None:
    if "%" not in pattern:
        raise ValueError(f"{pattern!r} is neither iso nor a strftime pattern (e.g. %d/%m/%Y %H:%M)")


def event_table(value: Any) -> dict[str, EventCode] | None:
    """Vendor code → EventCode; None for the built-in IS 15959 numbers.  ValidationError naming the
    first code that maps to nothing known."""
    if value == BUILTIN_CODES:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ValidationError(f"{BUILTIN_CODES!r} or a mapping from the vendor's codes to IS 15959 codes "
                              "or CIM EndDeviceEventTypes")
    by_number, by_type, out = is15959_events(), event_codes_by_type(), {}
    for vendor, target in value.items():
        text = str(target).strip()
        code = by_number.get(int(text)) if text.isdigit() else by_type.get(text) if CIM_EVENT_TYPE.fullmatch(
            text) else None
        if code is None:
            raise ValidationError(f"code {vendor!r}: {target!r} is neither an IS 15959 event code nor a CIM "
                                  "EndDeviceEventType in transformers/data/is15959_events.yaml")
        out[str(vendor).strip()] = code
    return out


@dataclass(frozen=True)
class Quantity:
    key: str                    # wide: the column name; long: the vendor's code
    names: tuple[str, ...]      # wide: the column and its aliases, lower case
    reading_type: str
    scale: float
    max: float
    signed: bool


@dataclass(frozen=True, eq=False)  # a key by identity: its code table is a dict
class Profile:
    name: str
    kind: str
    layout: str
    meter: tuple[str, ...]
    time: tuple[str, ...]
    date: tuple[str, ...] | None
    time_format: str
    shift_s: int                # added to a time that marks the start of its interval
    quantities: tuple[Quantity, ...]
    code: tuple[str, ...] | None
    value: tuple[str, ...] | None
    received: tuple[str, ...] | None
    events: dict[str, EventCode] | None  # None: the built-in IS 15959 numbers

    def required(self) -> tuple[tuple[str, ...], ...]:
        """The columns a header must hold (each as its aliases) for this profile to read it."""
        wanted = [self.meter, self.time, self.date, self.code, self.value, self.received]
        if self.layout == "wide":
            wanted += [q.names for q in self.quantities]
        return tuple(w for w in wanted if w)


@dataclass(frozen=True)
class Dialect:
    encoding: str
    delimiter: str
    quote: str
    decimal: str
    skip_lines: int
    zone: tzinfo
    missing: frozenset[str]
    profiles: tuple[Profile, ...]

    @property
    def csv(self) -> dict:
        """csv.reader's keywords; empty for comma and double quote, so the default reader runs."""
        out = {}
        if self.delimiter != ",":
            out["delimiter"] = self.delimiter
        if self.quote != '"':
            out["quotechar"] = self.quote
        return out

    @property
    def plain_text(self) -> bool:
        """The ingress can read the file as it is: UTF-8, header on line 1."""
        return self.encoding in ("utf-8", "utf-8-sig") and not self.skip_lines


def mapping(options: Mapping) -> Dialect:
    """The compiled mapping of route ``options`` (checked; ConfigError if they are wrong).

    Compiled once per distinct mapping: the key keeps the order of the keys, which is the
    order of the quantities in the canonical document."""
    try:
        key = orjson.dumps(options, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ConfigError(f"csv_readings options are not plain values: {exc}") from None
    return _compiled(key)


@lru_cache(maxsize=64)
def _compiled(key: bytes) -> Dialect:
    raw = orjson.loads(key)
    try:
        loaded = CsvReadingsOptions().load({k: v for k, v in raw.items() if k in ("csv_readings", "utc_offset")})
    except ValidationError as exc:
        raise ConfigError(f"csv_readings options: {exc.messages}") from None
    spec = loaded["csv_readings"]
    zone = zone_named(spec["time_zone"]) if spec["time_zone"] else (
        local_zone(loaded) if loaded.get("utc_offset") else IST)
    profiles = tuple(_profile(name, p) for name, p in spec["profiles"].items())
    return Dialect(spec["encoding"], spec["delimiter"], spec["quote"], spec["decimal"], spec["skip_lines"], zone,
                   frozenset(m.strip() for m in spec["missing"]), profiles)


def _profile(name: str, p: dict) -> Profile:
    wide = p["layout"] == "wide"
    quantities = tuple(
        Quantity(key, ((key.strip().lower(), *(a.strip().lower() for a in q["aliases"])) if wide else ()),
                 q["reading_type"], q["scale"], float("inf") if q["max"] is None else q["max"], q["signed"])
        for key, q in p["quantities"].items())
    shift = p["interval_s"] if p["kind"] == "interval" and p["time_marks"] == "start" else 0
    events = event_table(p["codes"]) if p["kind"] == "events" else None
    return Profile(name, p["kind"], p["layout"], p["meter"], p["time"], p["date"], p["time_format"], shift,
                   quantities, p["code"], p["value"], p["received"], events)
