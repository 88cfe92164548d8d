"""Vendor HES alarm JSON carrying IS 15959 event codes → canonical EndDeviceEvents.

The format is ours (docs/alarm-formats.md): ``{"hes": ..., "alarms": [alarm, ...]}``,
a bare array of alarms (a burst) or one alarm object on its own.  Bad alarms are
rejected one by one, named by their 0-based index in the array; the rest go on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Callable, Mapping

import orjson

from bus.canonical import END_DEVICE_EVENTS
from bus.canonical.fields import NOT_XML
from bus.errors import DecodeError
from bus.transform import TransformContext
from transformers.catalogue import EventCode, is15959_events
from transformers.gc_pause import gc_paused
from transformers.instants import LocalTimeOptions, local_zone, utc_instant

_UNSEEN = object()


def _parse(payload: Any) -> Any:
    if isinstance(payload, (dict, list)):
        return payload
    if isinstance(payload, (str, bytes, bytearray, memoryview)):
        try:
            # orjson refuses NaN and Infinity, which the stdlib json would let through
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"alarm payload is not JSON: {exc}") from exc
    raise DecodeError(f"alarm payload must be JSON text or an object/array, not {type(payload).__name__}")


@dataclass(frozen=True)
class Place:
    """Where a value sits in a JSON object: the first key, then keys or array indexes.

    ``label`` names the place in rejection reasons.  ``NOT_READ`` as ``head`` is a key no JSON
    object has, so a place that is not read gives nothing without a branch per alarm.
    """

    head: Any
    rest: tuple[tuple[str, int | None], ...] = ()  # (key in an object, index in an array or None)
    label: str = ""

    def of(self, doc: dict, missing: Any = None) -> Any:
        value = doc.get(self.head, missing)
        return at(value, self.rest, missing) if self.rest and value is not missing else value


NOT_READ = object()


def at(value: Any, steps: tuple[tuple[str, int | None], ...], missing: Any = None) -> Any:
    """``value`` followed down ``steps``; ``missing`` when a step finds no key, no index, or
    a value that is neither an object nor an array (a string is not indexed)."""
    for key, index in steps:
        if isinstance(value, dict):
            value = value.get(key, missing)
            if value is missing:
                return missing
        elif isinstance(value, list) and index is not None and index < len(value):
            value = value[index]
        else:
            return missing
    return value


@dataclass(frozen=True)
class AlarmShape:
    """Where a message keeps its alarms; ours (docs/alarm-formats.md) by default."""

    items: Place = Place("alarms", label="alarms")
    source: Place | None = Place("hes", label="hes")
    bare_array: bool = True  # a top-level array is the alarms
    single_alarm: bool = True  # an object without ``items`` is one alarm


OUR_SHAPE = AlarmShape()


def alarm_list(payload: Any, source_system: str | None = None, shape: AlarmShape = OUR_SHAPE) -> list:
    """The alarms of a payload in any of its shapes; ``DecodeError`` if it has none.

    ``source_system``, when given, must match the wrapper's ``hes`` (``shape.source``) if it
    names one: a system may not pass its alarms off as another HES's.
    """
    doc = _parse(payload)
    if isinstance(doc, list) and shape.bare_array:
        return doc
    if not isinstance(doc, dict):
        kinds = "an object or an array" if shape.bare_array else "an object"
        raise DecodeError(f"alarm payload must be {kinds}, not {type(doc).__name__}")
    items = shape.items
    alarms = items.of(doc, _UNSEEN)
    if alarms is _UNSEEN:
        if shape.single_alarm:
            return [doc]  # one alarm on its own
        raise DecodeError(f"alarm payload has no {items.label!r} array")
    if not isinstance(alarms, list):
        raise DecodeError(f"{items.label!r} must be an array, not {type(alarms).__name__}")
    hes = shape.source.of(doc) if shape.source is not None else None
    if hes is not None and source_system is not None and hes != source_system:
        raise DecodeError(f"payload says {shape.source.label} {_shown(hes)} "
                          f"but the message came from {source_system!r}")
    return alarms


def _shown(value: Any) -> str:
    """``repr(value)`` for a reason.  repr raises on JSON nested about a thousand deep (orjson
    reads up to 1,024) and on an integer of over 4,300 digits (a payload parsed elsewhere): that
    would fail the whole message instead of one alarm."""
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"
    except ValueError:
        return f"<{type(value).__name__} too long to show>"


def _details(raw: Any, label: str = "details") -> tuple[dict | None, str]:
    """A flat ``details`` object as given, or the reason it is refused (the canonical rules)."""
    if not isinstance(raw, dict):
        return None, f"{label} must be an object, not {type(raw).__name__}"
    for key, v in raw.items():
        if type(key) is not str or not key or not key.isprintable():
            return None, f"{label} name {_shown(key)} must be a non-empty printable string"
        t = type(v)
        if t is str:
            if NOT_XML.search(v) is not None:
                return None, f"{label}.{key} holds a control character"
        elif t is not int and (t is not float or not math.isfinite(v)):
            return None, f"{label}.{key} must be a string or a finite number, not {_shown(v)}"
    return raw, ""


def _code(raw: Any, codes: dict[int, EventCode]) -> EventCode | None:
    if type(raw) is int:
        return codes.get(raw)
    if type(raw) is str:
        digits = raw.strip()
        # an IS 15959 code has a few digits; int() of over 4,300 raises ValueError
        if digits.isascii() and digits.isdigit() and len(digits) <= 9:
            return codes.get(int(digits))
    return None


@dataclass(frozen=True)
class AlarmReader:
    """Where an alarm keeps each field, and how its code and times are read.

    The default reads ours (docs/alarm-formats.md); ``json_events`` compiles one from a route's
    options, so that both decoders share ``decode_alarms`` and cannot drift apart.
    """

    to_utc: Callable[[Any], str]  # a source time → canonical instant; ValueError if it is none
    time_types: frozenset = frozenset({str})  # the JSON types a time may have
    time_kind: str = "an ISO 8601 time"  # in reasons: "occurred_at 'x' is not <time_kind>"
    code_table: Mapping[Any, EventCode] = field(default_factory=is15959_events)
    code_of: Callable[[Any, Mapping], EventCode | None] = _code
    unknown_code: str = "unknown IS 15959 event code"
    meter: Place = Place("meter", label="meter")
    code: Place = Place("code", label="code")
    occurred: Place = Place("occurred_at", label="occurred_at")
    received: Place = Place("received_at", label="received_at")
    alarm_id: Place = Place("alarm_id", label="alarm_id")
    details: Place = Place("details", label="details")


def iso_reader(zone: tzinfo) -> AlarmReader:
    """Our format, offset-less times in ``zone``."""
    return AlarmReader(to_utc=lambda text: utc_instant(text, zone))


class HesAlarmJsonDecoder:
    """``hes_alarm_json``: vendor alarm JSON (dict, list, str or bytes) → canonical EndDeviceEvents."""

    name = "hes_alarm_json"
    options_schema = LocalTimeOptions

    def __call__(self, payload: Any, context: TransformContext) -> dict:
        alarms = alarm_list(payload, context.source_system)
        return end_device_events(alarms, context, iso_reader(local_zone(context.options)))


def end_device_events(alarms: list, context: TransformContext, reader: AlarmReader) -> dict:
    """The canonical document of ``alarms``, counting them in ``context.rows_in``."""
    with gc_paused():
        events = decode_alarms(alarms, context, reader)
    context.rows_in = len(alarms)
    return {"noun": END_DEVICE_EVENTS, "source": context.source_system, "EndDeviceEvent": events}


def decode_alarms(alarms: list, context: TransformContext, reader: AlarmReader) -> list[dict]:
    """Each good alarm as a canonical event; each bad one rejected by its index with the reason."""
    to_utc, time_types, time_kind = reader.to_utc, reader.time_types, reader.time_kind
    codes, code_of = reader.code_table, reader.code_of
    # each field's place unpacked once: the loop below runs 50,000 times a burst
    m_head, m_rest = reader.meter.head, reader.meter.rest
    c_head, c_rest = reader.code.head, reader.code.rest
    o_head, o_rest, o_label = reader.occurred.head, reader.occurred.rest, reader.occurred.label
    r_head, r_rest, r_label = reader.received.head, reader.received.rest, reader.received.label
    a_head, a_rest, a_label = reader.alarm_id.head, reader.alarm_id.rest, reader.alarm_id.label
    d_head, d_rest, d_label = reader.details.head, reader.details.rest, reader.details.label
    utc_of: dict[Any, Any] = {}  # a burst repeats a few instants thousands of times
    seen: set[tuple[str, int, str]] = set()
    events: list[dict] = []
    reject, meters = context.reject, context.meters

    def utc(raw: Any) -> str | None:
        if type(raw) not in time_types:
            return None
        out = utc_of.get(raw, _UNSEEN)
        if out is _UNSEEN:
            try:
                out = utc_of[raw] = to_utc(raw)
            except ValueError:
                out = utc_of[raw] = None
        return out  # type: ignore[return-value]

    for i, alarm in enumerate(alarms):
        if not isinstance(alarm, dict):
            reject(i, f"an alarm is an object, not {type(alarm).__name__}")
            continue
        meter = alarm.get(m_head)
        if m_rest:
            meter = at(meter, m_rest)
        if type(meter) is not str or not meter.strip() or not meter.strip().isprintable():
            reject(i, f"meter {_shown(meter)} is missing or not a printable string")
            continue
        meter = meter.strip()
        meters.add(meter)
        raw_code = alarm.get(c_head)
        if c_rest:
            raw_code = at(raw_code, c_rest)
        code = code_of(raw_code, codes)
        if code is None:
            reject(i, f"meter {meter}: {reader.unknown_code} {_shown(raw_code)}")
            continue
        occurred = alarm.get(o_head)
        if o_rest:
            occurred = at(occurred, o_rest)
        created = utc(occurred)
        if created is None:
            reject(i, f"meter {meter}: {o_label} {_shown(occurred)} is not {time_kind}")
            continue
        event = {"meter": meter, "eventType": code.event_type, "isCode": code.is_code,
                 "createdDateTime": created}
        received = alarm.get(r_head)
        if r_rest:
            received = at(received, r_rest)
        if received is not None:
            received_utc = utc(received)
            if received_utc is None:
                reject(i, f"meter {meter}: {r_label} {_shown(received)} is not {time_kind}")
                continue
            event["receivedDateTime"] = received_utc
        event["eventClass"] = list(code.classes)
        event["severity"] = code.severity
        alarm_id = alarm.get(a_head)
        if a_rest:
            alarm_id = at(alarm_id, a_rest)
        if alarm_id is not None:
            if type(alarm_id) is int:
                alarm_id = str(alarm_id)
            if type(alarm_id) is not str or not alarm_id.strip() or not alarm_id.isprintable():
                reject(i, f"meter {meter}: {a_label} {_shown(alarm_id)} is not a printable string or integer")
                continue
            event["alarmId"] = alarm_id.strip()
        raw_details = alarm.get(d_head)
        if d_rest:
            raw_details = at(raw_details, d_rest)
        if raw_details is not None:
            details, why = _details(raw_details, d_label)
            if details is None:
                reject(i, f"meter {meter}: {why}")
                continue
            if details:
                event["details"] = details
        key = (meter, code.is_code, created)
        if key in seen:
            continue  # a HES retry: the MDMS keys events this way, so it is the same event
        seen.add(key)
        events.append(event)
    return events
