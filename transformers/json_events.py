"""``json_events``: a HES's own alarm JSON → canonical EndDeviceEvents, described in the route.

A connector team onboards a new alarm JSON format by writing where the alarms and their fields
are, and what the vendor's codes mean, under ``options: {json_events: {...}}``
(docs/alarm-formats.md, "Onboarding a new alarm JSON format in YAML").  The decoding itself is
``hes_alarm_json``'s (``decode_alarms``), so the output, the dedupe and the rejections are the
same; only the reading of fields, codes and times is configured.

Paths are dotted: ``alarms``, ``event.meter.serial``, ``readings.0.value``.  A segment of digits
also indexes an array.  A path that leads nowhere (a key or index that is not there, or a step
into a string or number) gives nothing: a required field is then rejected, an optional one left
out.  Keys holding a dot cannot be named.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson
from marshmallow import ValidationError, fields, validates, validates_schema

from bus.errors import ConfigError
from bus.options import OptionsSchema, describe
from bus.registry import did_you_mean
from bus.transform import TransformContext
from transformers.catalogue import EventCode, event_codes_by_type, is15959_events
from transformers.hes_alarm_json import (NOT_READ, AlarmReader, AlarmShape, Place, _code, alarm_list,
                                         end_device_events)
from transformers.instants import _format, local_zone, utc_instant

IS15959 = "is15959"
ISO8601, EPOCH, EPOCH_MS = "iso8601", "epoch", "epoch_ms"
MAX_PATH_STEPS = 16
MAX_PATH_CHARS = 200
_EPOCH_START = datetime(1970, 1, 1)
_EPOCH_DIGITS = re.compile(r"-?[0-9]{1,16}")  # a time as a string of digits, when ``epoch``
# a moment whose every part shows in its text, to check a strftime pattern carries a whole time
_SAMPLE = datetime(2026, 11, 23, 19, 47, 58, tzinfo=timezone(timedelta(hours=5, minutes=30)))


# --------------------------------------------------------------------------- paths

def path_steps(text: Any) -> tuple[str, ...]:
    """The segments of a dotted path; ``ValueError`` with the reason if it is not one."""
    if type(text) is not str or not text:
        raise ValueError("a path is a non-empty string like event.meter.serial")
    if len(text) > MAX_PATH_CHARS or not text.isprintable():
        raise ValueError(f"a path has at most {MAX_PATH_CHARS} printable characters")
    steps = tuple(text.split("."))
    if any(not s or s != s.strip() for s in steps):
        raise ValueError(f"{text!r} has an empty segment or blanks around one (write a.b.0.c)")
    if len(steps) > MAX_PATH_STEPS:
        raise ValueError(f"{text!r} has more than {MAX_PATH_STEPS} segments")
    return steps


def place(text: str | None) -> Place:
    """A compiled path: the first key, then (key, index) pairs; nothing read for ``None``."""
    if text is None:
        return Place(NOT_READ)
    head, *rest = path_steps(text)
    # a digit segment is a key in an object and an index in an array: which one is known per value
    return Place(head, tuple((s, int(s) if s.isascii() and s.isdigit() else None) for s in rest), text)


class PathText(fields.String):
    """A dotted path, checked when the route loads."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            path_steps(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return text


# --------------------------------------------------------------------------- codes

def code_target(target: Any) -> EventCode:
    """What a vendor code maps to: an IS 15959 number or a CIM EndDeviceEventType of the catalogue."""
    events = is15959_events()
    if type(target) is str and target.strip().isascii() and target.strip().isdigit():
        target = int(target.strip())
    if type(target) is int:
        if target in events:
            return events[target]
        hint = did_you_mean(str(target), [str(c) for c in events])
        raise ValidationError(f"{target} is not an IS 15959 code of transformers/data/is15959_events.yaml{hint}")
    if type(target) is str:
        by_type = event_codes_by_type()
        if target in by_type:
            return by_type[target]
        hint = did_you_mean(target, list(by_type))
        raise ValidationError(f"{target!r} is not an EndDeviceEventType of "
                              f"transformers/data/is15959_events.yaml{hint}")
    raise ValidationError(f"maps to an IS 15959 number or an EndDeviceEventType like '3.26.0.85', "
                          f"not {target!r}")


def code_table(mapping: Mapping) -> dict[Any, EventCode]:
    """Vendor code → EventCode; ``ValidationError`` keyed by each bad vendor code.

    Vendor codes are looked up as text, stripped; one that is a plain decimal number is also
    keyed by the integer, so a JSON ``17`` finds ``"17"`` without converting each alarm's code.
    """
    table: dict[Any, EventCode] = {}
    errors: dict[str, list[str]] = {}
    for vendor, target in mapping.items():
        key = str(vendor).strip() if type(vendor) in (str, int) else None
        if not key or not key.isprintable():
            errors[str(vendor)] = [f"vendor code {vendor!r} must be a non-empty printable string or integer"]
            continue
        if key in table:
            errors[str(vendor)] = [f"vendor code {key!r} appears twice"]
            continue
        try:
            table[key] = code_target(target)
        except ValidationError as exc:
            errors[str(vendor)] = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
            continue
        if key.isascii() and key.isdigit() and str(int(key)) == key:
            table[int(key)] = table[key]
    if errors:
        raise ValidationError(errors)
    return table


def vendor_code(raw: Any, table: Mapping) -> EventCode | None:
    """The EventCode of an alarm's code under the route's mapping, or ``None``."""
    t = type(raw)
    if t is int:  # not bool: True would find the code 1
        return table.get(raw)
    if t is str:
        return table.get(raw.strip())
    return None


class Codes(fields.Field):
    """``is15959`` or a mapping vendor code → IS 15959 number or EndDeviceEventType."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == IS15959:
            return value
        if not isinstance(value, Mapping) or not value:
            raise ValidationError(f"must be {IS15959!r} or a mapping of vendor code → IS 15959 code "
                                  f"or EndDeviceEventType, not {value!r}")
        code_table(value)
        return dict(value)


# --------------------------------------------------------------------------- times

def _time_zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"{name[:80]!r} is not an IANA time zone like Asia/Kolkata"
                          f"{did_you_mean(name, sorted(available_timezones()))}") from None


def _check_pattern(pattern: str) -> None:
    """``ValueError`` unless a strftime pattern reads back every part of a date and time."""
    try:
        back = datetime.strptime(_SAMPLE.strftime(pattern), pattern)
    except ValueError as exc:
        raise ValueError(f"{pattern!r} is not a strftime pattern: {exc}") from None
    if back.replace(tzinfo=None) != _SAMPLE.replace(tzinfo=None):
        raise ValueError(f"{pattern!r} does not carry a whole date and time to the second "
                         "(like %d/%m/%Y %H:%M:%S)")


def _epoch_utc(raw: Any, per_second: int) -> str:
    """Epoch seconds (``per_second`` 1) or milliseconds (1000) → canonical instant; ValueError if not."""
    if type(raw) is str:
        if not _EPOCH_DIGITS.fullmatch(raw.strip()):
            raise ValueError(raw)
        raw = int(raw.strip())
    elif type(raw) is float and not math.isfinite(raw):
        raise ValueError(raw)
    try:
        # whole seconds, rounded down as an ISO time's fraction is cut
        return (_EPOCH_START + timedelta(seconds=math.floor(raw / per_second) if type(raw) is float
                                         else raw // per_second)).isoformat() + "Z"
    except OverflowError as exc:
        raise ValueError(str(exc)) from None


def time_reading(time_format: str, zone: tzinfo) -> tuple[Callable[[Any], str], frozenset, str]:
    """(source time → canonical instant, the JSON types a time may have, its kind in reasons)."""
    if time_format == ISO8601:
        return (lambda text: utc_instant(text, zone)), frozenset({str}), "an ISO 8601 time"
    if time_format in (EPOCH, EPOCH_MS):
        per_second = 1 if time_format == EPOCH else 1000
        unit = "seconds" if time_format == EPOCH else "milliseconds"
        return (lambda raw: _epoch_utc(raw, per_second)), frozenset({int, float, str}), f"epoch {unit}"

    def strftime_utc(text: str) -> str:
        return _format(datetime.strptime(text.strip(), time_format), zone)
    return strftime_utc, frozenset({str}), f"a time like {time_format!r}"


# --------------------------------------------------------------------------- options

class AlarmFields(OptionsSchema):
    """Where each field is inside one alarm object (dotted paths)."""

    meter = PathText(load_default="meter", metadata=describe(
        "Path of the meter serial; an alarm without one is rejected.", example="device.serial"))
    code = PathText(load_default="code", metadata=describe(
        "Path of the event code, read as `codes` says; an alarm without a known one is rejected.",
        example="event.type"))
    occurred = PathText(load_default="occurred_at", metadata=describe(
        "Path of the meter time of the event, read as `time_format` says; becomes createdDateTime; "
        "an alarm without one is rejected.", example="event.ts"))
    received = PathText(load_default="received_at", allow_none=True, metadata=describe(
        "Path of the time the HES received the alarm, read as `time_format` says (optional); "
        "becomes receivedDateTime; null: not read."))
    alarm_id = PathText(load_default="alarm_id", allow_none=True, metadata=describe(
        "Path of the HES's unique id of the alarm, a string or integer (optional); becomes alarmId; "
        "null: not read."))
    details = PathText(load_default="details", allow_none=True, metadata=describe(
        "Path of a flat object of name → string or number (optional); becomes details; null: not read."))


class JsonEventsSpec(OptionsSchema):
    """One alarm JSON format: where the alarms and their fields are, and what codes and times mean."""

    items = PathText(load_default="alarms", metadata=describe(
        "Path of the alarm array in a wrapper object.", example="data.events"))
    bare_array = fields.Boolean(load_default=True, truthy={True}, falsy={False}, metadata=describe(
        "Whether a message may be a bare array of alarms (a burst)."))
    single_alarm = fields.Boolean(load_default=True, truthy={True}, falsy={False}, metadata=describe(
        "Whether an object where `items` leads nowhere is taken as one alarm on its own "
        "(else the message is refused)."))
    source_field = PathText(load_default=None, allow_none=True, metadata=describe(
        "Path in the wrapper of the sending system's name: when present it must equal the route's "
        "source system, else the whole message is refused (default: not checked).", example="hes"))
    alarm_fields = fields.Nested(AlarmFields, data_key="fields", load_default=dict, metadata=describe(
        "Where each field is inside an alarm: meter, code, occurred, received, alarm_id, details "
        "(defaults: the bus's own format, docs/alarm-formats.md)."))
    codes = Codes(load_default=IS15959, metadata=describe(
        "`is15959` (codes are IS 15959 numbers, as integers or digit strings) or a mapping from the "
        "vendor's code to an IS 15959 number or a CIM EndDeviceEventType mRID of "
        "transformers/data/is15959_events.yaml; an alarm with a code not in it is rejected.",
        example={"PWR_FAIL": 101, "COVER_OPEN": "3.12.29.212"}))
    time_format = fields.String(load_default=ISO8601, metadata=describe(
        "`iso8601` (offset optional), `epoch` (seconds, integer, number or digit string), `epoch_ms` "
        "(milliseconds), or a strftime pattern carrying a whole date and time.",
        example="%d/%m/%Y %H:%M:%S"))
    time_zone = fields.String(load_default=None, allow_none=True, metadata=describe(
        "IANA zone of times written without an offset, e.g. Asia/Kolkata (default: IST, +05:30). "
        "Epoch times are UTC whatever it says.", example="Asia/Kolkata"))
    utc_offset = fields.String(load_default=None, allow_none=True, metadata=describe(
        "Fixed offset of times written without one, like +05:30; instead of time_zone.", example="+00:00"))

    @validates("time_format")
    def _time_format(self, value, **_):
        if value not in (ISO8601, EPOCH, EPOCH_MS):
            if "%" not in value:
                raise ValidationError(f"must be {ISO8601}, {EPOCH}, {EPOCH_MS} or a strftime pattern, "
                                      f"not {value!r}{did_you_mean(value, [ISO8601, EPOCH, EPOCH_MS])}")
            try:
                _check_pattern(value)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None

    @validates("time_zone")
    def _zone(self, value, **_):
        if value is not None:
            try:
                _time_zone(value)
            except ConfigError as exc:
                raise ValidationError(str(exc)) from None

    @validates("utc_offset")
    def _offset(self, value, **_):
        try:
            local_zone({"utc_offset": value})
        except ConfigError as exc:
            raise ValidationError(str(exc)) from None

    @validates_schema(skip_on_field_errors=False)  # reported with the others, in one run
    def _one_zone(self, data, **_):
        if data.get("time_zone") is not None and data.get("utc_offset") is not None:
            raise ValidationError("give time_zone or utc_offset, not both", "utc_offset")


class JsonEventsOptions(OptionsSchema):
    """The route ``options`` json_events reads: all under one key."""

    json_events = fields.Nested(JsonEventsSpec, load_default=dict, metadata=describe(
        "The alarm JSON format: items, bare_array, single_alarm, source_field, fields, codes, "
        "time_format, time_zone or utc_offset (docs/alarm-formats.md); absent: the bus's own format."))


# --------------------------------------------------------------------------- compiling

def compile_spec(raw: Mapping) -> tuple[AlarmShape, AlarmReader]:
    """Checked options → where the alarms are and how to read one; ``ConfigError`` if they are wrong."""
    try:
        spec = JsonEventsSpec().load(dict(raw))
    except ValidationError as exc:
        raise ConfigError(f"json_events options: {exc.messages}") from None
    shape = AlarmShape(items=place(spec["items"]), bare_array=spec["bare_array"],
                       single_alarm=spec["single_alarm"],
                       source=place(spec["source_field"]) if spec["source_field"] else None)
    zone = _time_zone(spec["time_zone"]) if spec["time_zone"] else local_zone(spec)
    to_utc, time_types, time_kind = time_reading(spec["time_format"], zone)
    where = AlarmFields().load(spec["alarm_fields"] or {})
    if spec["codes"] == IS15959:
        codes = {"code_table": is15959_events(), "code_of": _code}
    else:
        codes = {"code_table": code_table(spec["codes"]), "code_of": vendor_code,
                 "unknown_code": "unknown vendor event code"}
    reader = AlarmReader(to_utc=to_utc, time_types=time_types, time_kind=time_kind, **codes,
                         meter=place(where["meter"]), code=place(where["code"]),
                         occurred=place(where["occurred"]), received=place(where["received"]),
                         alarm_id=place(where["alarm_id"]), details=place(where["details"]))
    return shape, reader


@lru_cache(maxsize=64)
def _compiled(canonical: bytes) -> tuple[AlarmShape, AlarmReader]:
    # keyed on the options' canonical JSON: a route's options are compiled once, not per message,
    # and whatever a caller later does to its dict cannot reach the compiled copy
    return compile_spec(orjson.loads(canonical))


def compiled(options: Mapping) -> tuple[AlarmShape, AlarmReader]:
    """The compiled ``json_events`` option of a route's ``options``."""
    raw = options.get("json_events") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"json_events options must be a mapping, not {type(raw).__name__}")
    try:
        canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ConfigError(f"json_events options are not plain values: {exc}") from None
    return _compiled(canonical)


class JsonEventsDecoder:
    """``json_events``: alarm JSON in the format the route describes → canonical EndDeviceEvents."""

    name = "json_events"
    options_schema = JsonEventsOptions

    def __call__(self, payload: Any, context: TransformContext) -> dict:
        shape, reader = compiled(context.options)
        alarms = alarm_list(payload, context.source_system, shape)
        return end_device_events(alarms, context, reader)
