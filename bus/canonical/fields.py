"""Marshmallow fields that check whole lists of canonical items in one tight loop.

A batch holds thousands of values; a nested schema per value costs tens of
microseconds each, so the lists below are checked by hand.  Each distinct
timestamp, ReadingType and quality string is checked once per document and
remembered, because a batch repeats the same few instants and mRIDs.
"""
from __future__ import annotations

import re
from datetime import datetime

from marshmallow import ValidationError, fields

INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
READING_TYPE = re.compile(r"[0-9]+(?:\.[0-9]+){17}")
EVENT_TYPE = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
QUALITY = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")

_INTERVAL_KEYS = frozenset(("timeStamp", "value", "qualities"))
_READING_KEYS = frozenset(("readingType", "timeStamp", "value", "qualities"))
_METER_KEYS = frozenset(("meter", "intervalBlocks", "readings"))
_EVENT_KEYS = frozenset(("meter", "eventType", "isCode", "createdDateTime", "receivedDateTime"))
# optional alarm fields: routing classes, severity, the HES's alarm id and flat details
_ALARM_KEYS = frozenset(("eventClass", "severity", "alarmId", "details"))
_ALL_EVENT_KEYS = _EVENT_KEYS | _ALARM_KEYS
EVENT_CLASSES = frozenset(("critical", "outage", "health", "fraud"))
SEVERITIES = ("critical", "major", "minor", "info")  # most severe first
# characters XML 1.0 cannot carry: a free-text alarm field must survive the CIM XML encoder
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def is_instant(text: object) -> bool:
    """True for ``YYYY-MM-DDTHH:MM:SSZ`` naming a real calendar instant."""
    if type(text) is not str or INSTANT.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text[:-1])
    except ValueError:  # month 13, 30 February, hour 25...
        return False
    return True


class _Seen:
    """Strings already found valid in this document, per kind."""

    __slots__ = ("instants", "types", "qualities")

    def __init__(self) -> None:
        self.instants: set[str] = set()
        self.types: set[str] = set()
        self.qualities: set[str] = set()


def _invalid(where: str, exc: Exception, item=None) -> ValidationError:
    """Prefix a relative message with its place, built only when something failed."""
    if isinstance(exc, ValidationError):
        detail = exc.messages[0]
    elif not isinstance(item, dict):
        detail = f" must be an object, not {type(item).__name__}"
    elif isinstance(exc, KeyError):
        detail = f" is missing {exc.args[0]}"
    else:
        detail = f" has a value of the wrong type ({exc})"
    return ValidationError(f"{where}{detail}")


def _instant(ts, seen: _Seen, key: str = "timeStamp") -> None:
    if not is_instant(ts):
        raise ValidationError(f".{key} {ts!r} is not YYYY-MM-DDTHH:MM:SSZ")
    seen.instants.add(ts)


def _reading_type(rt, seen: _Seen) -> None:
    if type(rt) is not str or READING_TYPE.fullmatch(rt) is None:
        raise ValidationError(f".readingType {rt!r} is not an 18-field ReadingType mRID")
    seen.types.add(rt)


def _value(v) -> None:
    # bool is an int subclass but never a meter value; v - v is nan for inf and nan
    if type(v) not in (float, int) or v - v != 0:
        raise ValidationError(f".value {v!r} is not a finite number")


def _optional_keys(item: dict, seen: _Seen, allowed: frozenset) -> None:
    extra = item.keys() - allowed
    if extra:
        raise ValidationError(f": unexpected keys {sorted(extra)}")
    q = item.get("qualities")
    if type(q) is not list or not q:
        raise ValidationError(".qualities must be a non-empty list (absent when valid)")
    for code in q:
        if code not in seen.qualities:
            if type(code) is not str or QUALITY.fullmatch(code) is None:
                raise ValidationError(f".qualities: {code!r} is not a d.d.d ReadingQuality")
            seen.qualities.add(code)


def check_interval_readings(items, seen: _Seen) -> None:
    """Check one intervalReadings list (messages are relative: ``[i].value ...``)."""
    if type(items) is not list:
        raise ValidationError(" must be a list")
    instants = seen.instants
    i = -1
    try:
        for i, r in enumerate(items):
            ts = r["timeStamp"]
            v = r["value"]
            if ts not in instants:
                _instant(ts, seen)
            if type(v) is not float or v - v != 0:
                _value(v)
            if len(r) != 2:
                _optional_keys(r, seen, _INTERVAL_KEYS)
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(f"[{i}]", exc, items[i]) from None


def check_readings(items, seen: _Seen) -> None:
    """Check one register ``readings`` list (messages are relative)."""
    if type(items) is not list:
        raise ValidationError(" must be a list")
    instants, types = seen.instants, seen.types
    i = -1
    try:
        for i, r in enumerate(items):
            rt = r["readingType"]
            ts = r["timeStamp"]
            v = r["value"]
            if rt not in types:
                _reading_type(rt, seen)
            if ts not in instants:
                _instant(ts, seen)
            if type(v) is not float or v - v != 0:
                _value(v)
            if len(r) != 3:
                _optional_keys(r, seen, _READING_KEYS)
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(f"[{i}]", exc, items[i]) from None


def _check_blocks(blocks, seen: _Seen) -> None:
    if type(blocks) is not list:
        raise ValidationError(".intervalBlocks must be a list")
    types = seen.types
    j = -1
    try:
        for j, block in enumerate(blocks):
            if len(block) != 2:
                raise ValidationError(" must hold exactly readingType and intervalReadings")
            rt = block["readingType"]
            if rt not in types:
                _reading_type(rt, seen)
            try:
                check_interval_readings(block["intervalReadings"], seen)
            except ValidationError as exc:
                raise _invalid(".intervalReadings", exc) from None
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid(f".intervalBlocks[{j}]", exc, blocks[j]) from None


def _check_meter_reading(mr, seen: _Seen) -> None:
    if type(mr) is not dict:
        raise ValidationError(" must be an object")
    meter = mr.get("meter")
    if type(meter) is not str or not meter or meter.isspace() or not meter.isprintable():
        raise ValidationError(f".meter {meter!r} must be a non-empty printable string")
    if len(mr) == 2 and "intervalBlocks" in mr:
        _check_blocks(mr["intervalBlocks"], seen)
        return
    extra = mr.keys() - _METER_KEYS
    if extra:
        raise ValidationError(f": unexpected keys {sorted(extra)}")
    _check_blocks(mr.get("intervalBlocks", []), seen)
    try:
        check_readings(mr.get("readings", []), seen)
    except ValidationError as exc:
        raise _invalid(".readings", exc) from None


class MeterReadingList(fields.Field):
    """The ``MeterReading`` list: meters, their interval blocks and register readings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not list:
            raise ValidationError("must be a list")
        seen = _Seen()
        k = -1
        try:
            for k, mr in enumerate(value):
                _check_meter_reading(mr, seen)
        except ValidationError as exc:
            meter = value[k].get("meter") if isinstance(value[k], dict) else None
            raise _invalid(f"MeterReading[{k}]" + (f" (meter {meter})" if meter else ""), exc) from None
        return value


def _detail_value(key, v) -> None:
    if type(key) is not str or not key or not key.isprintable():
        raise ValidationError(f".details key {key!r} must be a non-empty printable string")
    if type(v) is str:
        if NOT_XML.search(v) is not None:
            raise ValidationError(f".details.{key} holds a control character")
    elif type(v) not in (int, float) or v - v != 0:
        raise ValidationError(f".details.{key} {v!r} must be a string or a finite number")


def _check_alarm_fields(ev: dict) -> None:
    """The optional alarm fields of one event (called only when an event has more than the core five)."""
    extra = ev.keys() - _ALL_EVENT_KEYS
    if extra:
        raise ValidationError(f": unexpected keys {sorted(extra)}")
    if "eventClass" in ev:
        classes = ev["eventClass"]
        if (type(classes) is not list or len(set(classes)) != len(classes)
                or not all(type(c) is str and c in EVENT_CLASSES for c in classes)):
            raise ValidationError(f".eventClass {classes!r} must be a list of distinct classes "
                                  f"from {sorted(EVENT_CLASSES)}")
    if "severity" in ev and ev["severity"] not in SEVERITIES:
        raise ValidationError(f".severity {ev['severity']!r} is not one of {list(SEVERITIES)}")
    if "alarmId" in ev:
        aid = ev["alarmId"]
        if type(aid) is not str or not aid or aid.isspace() or not aid.isprintable():
            raise ValidationError(f".alarmId {aid!r} must be a non-empty printable string")
    if "details" in ev:
        details = ev["details"]
        if type(details) is not dict:
            raise ValidationError(".details must be an object of names to strings or numbers")
        for key, v in details.items():
            _detail_value(key, v)


def _check_event_slowly(ev, seen: _Seen) -> None:
    """Every rule for one event; the list field only calls it off its fast path."""
    if type(ev) is not dict:
        raise ValidationError(" must be an object")
    if not ev.keys() <= _EVENT_KEYS:
        _check_alarm_fields(ev)
    meter, et = ev.get("meter"), ev.get("eventType")
    if type(meter) is not str or not meter or meter.isspace() or not meter.isprintable():
        raise ValidationError(f".meter {meter!r} must be a non-empty printable string")
    if et not in seen.types:
        if type(et) is not str or EVENT_TYPE.fullmatch(et) is None:
            raise ValidationError(f".eventType {et!r} is not a t.d.s.e EndDeviceEventType")
        seen.types.add(et)
    if ev.get("createdDateTime") not in seen.instants:
        _instant(ev.get("createdDateTime"), seen, "createdDateTime")
    if "isCode" in ev and type(ev["isCode"]) is not int:
        raise ValidationError(f".isCode {ev['isCode']!r} must be an integer")
    # receivedDateTime is optional: only HES-sourced events know when the HES got them
    if "receivedDateTime" in ev and ev["receivedDateTime"] not in seen.instants:
        _instant(ev["receivedDateTime"], seen, "receivedDateTime")


class EndDeviceEventList(fields.Field):
    """The ``EndDeviceEvent`` list, checked in one loop (bursts hold thousands)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not list:
            raise ValidationError("must be a list")
        seen = _Seen()
        types, instants, full = seen.types, seen.instants, _EVENT_KEYS
        i = -1
        try:
            for i, ev in enumerate(value):
                # fast path: a complete HES event whose strings were all seen before,
                # with or without the alarm fields
                if (type(ev) is dict and ev.keys() >= full
                        and ev["eventType"] in types and ev["createdDateTime"] in instants
                        and ev["receivedDateTime"] in instants and type(ev["isCode"]) is int
                        and type(ev["meter"]) is str and ev["meter"] and not ev["meter"].isspace()
                        and ev["meter"].isprintable()):
                    if len(ev) != 5:
                        _check_alarm_fields(ev)
                    continue
                _check_event_slowly(ev, seen)
        except (ValidationError, TypeError) as exc:
            raise _invalid(f"EndDeviceEvent[{i}]", exc, value[i]) from None
        return value
