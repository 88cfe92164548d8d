"""Vendor HES alarm JSON carrying IS 15959 event codes → canonical EndDeviceEvents.

The format is ours (docs/alarm-formats.md): ``{"hes": ..., "alarms": [alarm, ...]}``,
a bare array of alarms (a burst) or one alarm object on its own.  Bad alarms are
rejected one by one, named by their 0-based index in the array; the rest go on.
"""
from __future__ import annotations

import math
from typing import Any

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


def alarm_list(payload: Any, source_system: str | None = None) -> list:
    """The alarms of a payload in any of its three shapes; ``DecodeError`` if it has none.

    ``source_system``, when given, must match the wrapper's ``hes`` if it names one:
    a system may not pass its alarms off as another HES's.
    """
    doc = _parse(payload)
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        raise DecodeError(f"alarm payload must be an object or an array, not {type(doc).__name__}")
    if "alarms" not in doc:
        return [doc]  # one alarm on its own
    alarms, hes = doc["alarms"], doc.get("hes")
    if not isinstance(alarms, list):
        raise DecodeError(f"'alarms' must be an array, not {type(alarms).__name__}")
    if hes is not None and source_system is not None and hes != source_system:
        raise DecodeError(f"payload says hes {hes!r} but the message came from {source_system!r}")
    return alarms


def _details(raw: Any) -> tuple[dict | None, str]:
    """A flat ``details`` object as given, or the reason it is refused (the canonical rules)."""
    if not isinstance(raw, dict):
        return None, f"details must be an object, not {type(raw).__name__}"
    for key, v in raw.items():
        if type(key) is not str or not key or not key.isprintable():
            return None, f"details name {key!r} must be a non-empty printable string"
        t = type(v)
        if t is str:
            if NOT_XML.search(v) is not None:
                return None, f"details.{key} holds a control character"
        elif t is not int and (t is not float or not math.isfinite(v)):
            return None, f"details.{key} must be a string or a finite number, not {v!r}"
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


class HesAlarmJsonDecoder:
    """``hes_alarm_json``: vendor alarm JSON (dict, list, str or bytes) → canonical EndDeviceEvents."""

    name = "hes_alarm_json"
    options_schema = LocalTimeOptions

    def __call__(self, payload: Any, context: TransformContext) -> dict:
        alarms = alarm_list(payload, context.source_system)
        with gc_paused():
            events = self._decode(alarms, context)
        context.rows_in = len(alarms)
        return {"noun": END_DEVICE_EVENTS, "source": context.source_system, "EndDeviceEvent": events}

    def _decode(self, alarms: list, context: TransformContext) -> list[dict]:
        zone = local_zone(context.options)
        codes = is15959_events()
        utc_of: dict[str, Any] = {}  # a burst repeats a few instants thousands of times
        seen: set[tuple[str, int, str]] = set()
        events: list[dict] = []
        reject, meters = context.reject, context.meters

        def utc(raw: Any) -> str | None:
            if type(raw) is not str:
                return None
            out = utc_of.get(raw, _UNSEEN)
            if out is _UNSEEN:
                try:
                    out = utc_of[raw] = utc_instant(raw, zone)
                except ValueError:
                    out = utc_of[raw] = None
            return out  # type: ignore[return-value]

        for i, alarm in enumerate(alarms):
            if not isinstance(alarm, dict):
                reject(i, f"an alarm is an object, not {type(alarm).__name__}")
                continue
            meter = alarm.get("meter")
            if type(meter) is not str or not meter.strip() or not meter.strip().isprintable():
                reject(i, f"meter {meter!r} is missing or not a printable string")
                continue
            meter = meter.strip()
            meters.add(meter)
            code = _code(alarm.get("code"), codes)
            if code is None:
                reject(i, f"meter {meter}: unknown IS 15959 event code {alarm.get('code')!r}")
                continue
            created = utc(alarm.get("occurred_at"))
            if created is None:
                reject(i, f"meter {meter}: occurred_at {alarm.get('occurred_at')!r} is not an ISO 8601 time")
                continue
            event = {"meter": meter, "eventType": code.event_type, "isCode": code.is_code,
                     "createdDateTime": created}
            if alarm.get("received_at") is not None:
                received = utc(alarm["received_at"])
                if received is None:
                    reject(i, f"meter {meter}: received_at {alarm['received_at']!r} is not an ISO 8601 time")
                    continue
                event["receivedDateTime"] = received
            event["eventClass"] = list(code.classes)
            event["severity"] = code.severity
            alarm_id = alarm.get("alarm_id")
            if alarm_id is not None:
                if type(alarm_id) is int:
                    alarm_id = str(alarm_id)
                if type(alarm_id) is not str or not alarm_id.strip() or not alarm_id.isprintable():
                    reject(i, f"meter {meter}: alarm_id {alarm_id!r} is not a printable string or integer")
                    continue
                event["alarmId"] = alarm_id.strip()
            if alarm.get("details") is not None:
                details, why = _details(alarm["details"])
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
