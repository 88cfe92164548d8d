"""Schemas of the canonical documents (see docs/canonical-model.md)."""
from __future__ import annotations

from typing import Any

import marshmallow
from marshmallow import Schema, fields, validate

from bus.canonical.fields import EndDeviceEventList, MeterReadingList
from bus.errors import ValidationError

METER_READINGS = "MeterReadings"
END_DEVICE_EVENTS = "EndDeviceEvents"


class MeterReadingsSchema(Schema):
    """A batch of interval and register readings, grouped per meter."""

    noun = fields.String(required=True, validate=validate.Equal(METER_READINGS))
    source = fields.String(required=True, validate=validate.Length(min=1))
    MeterReading = MeterReadingList(required=True)


class EndDeviceEventsSchema(Schema):
    """A batch of meter events (alarms)."""

    noun = fields.String(required=True, validate=validate.Equal(END_DEVICE_EVENTS))
    source = fields.String(required=True, validate=validate.Length(min=1))
    EndDeviceEvent = EndDeviceEventList(required=True)


# Schema instances hold no per-load state, so one of each serves every thread.
_SCHEMAS: dict[str, Schema] = {
    METER_READINGS: MeterReadingsSchema(),
    END_DEVICE_EVENTS: EndDeviceEventsSchema(),
}


def _flatten(messages: Any, key: str = "") -> list[str]:
    """Marshmallow's nested messages as lines ``field: problem``."""
    if isinstance(messages, dict):
        return [line for k, sub in messages.items() for line in _flatten(sub, "" if k == "_schema" else str(k))]
    if isinstance(messages, list):
        return [line for m in messages for line in _flatten(m, key)]
    text = str(messages)
    # the list fields already start their messages with the field's own name
    return [text if not key or text.startswith(key) else f"{key}: {text}"]


def validate_document(doc: Any) -> dict:
    """Check a canonical document against the schema of its ``noun``; return it.

    Raises ``bus.errors.ValidationError`` naming the first offending item.
    """
    if not isinstance(doc, dict):
        raise ValidationError(f"a canonical document is an object, not {type(doc).__name__}")
    noun = doc.get("noun")
    schema = _SCHEMAS.get(noun) if isinstance(noun, str) else None
    if schema is None:
        raise ValidationError(f"unknown noun {noun!r}: expected one of {sorted(_SCHEMAS)}")
    try:
        return schema.load(doc)
    except marshmallow.ValidationError as exc:
        detail = "; ".join(_flatten(exc.messages))
        raise ValidationError(f"invalid {noun} document: {detail}") from exc


def count_values(doc: dict) -> tuple[int, int]:
    """``(readings, events)`` in a canonical document, for Outbound and reports."""
    if doc.get("noun") == END_DEVICE_EVENTS:
        return 0, len(doc.get("EndDeviceEvent", ()))
    n = 0
    for mr in doc.get("MeterReading", ()):
        n += len(mr.get("readings", ()))
        for block in mr.get("intervalBlocks", ()):
            n += len(block["intervalReadings"])
    return n, 0
