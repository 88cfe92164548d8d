"""IEC 61968 namespaces and the IEC 61968-100 message header shared by the encoders."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bus.canonical import END_DEVICE_EVENTS, METER_READINGS, count_values
from bus.errors import ValidationError
from bus.transform import TransformContext

MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
METER_READINGS_NS = "http://iec.ch/TC57/2011/MeterReadings#"
END_DEVICE_EVENTS_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"

# the list each canonical noun carries its items in
ITEMS_KEY = {METER_READINGS: "MeterReading", END_DEVICE_EVENTS: "EndDeviceEvent"}


def qname(ns: str, *path: str) -> str:
    """ElementTree path matching by namespace URI, e.g. ``{uri}Meter/{uri}mRID``."""
    return "/".join(f"{{{ns}}}{name}" for name in path)


def noun_of(doc: Any) -> str:
    """The noun of a canonical document; ``ValidationError`` if it has none we know."""
    noun = doc.get("noun") if isinstance(doc, dict) else None
    if noun not in ITEMS_KEY:
        raise ValidationError(f"not a canonical document: noun {noun!r}, expected one of {sorted(ITEMS_KEY)}")
    if not isinstance(doc.get(ITEMS_KEY[noun]), list):
        raise ValidationError(f"{noun} document has no {ITEMS_KEY[noun]} list")
    return noun


def value_counts(doc: dict) -> tuple[int, int]:
    """``(readings, events)`` for the Outbound; ``ValidationError`` if the shape is wrong."""
    try:
        return count_values(doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValidationError(f"{doc.get('noun')} document is malformed: {exc!r}") from exc


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def message_header(noun: str, context: TransformContext) -> dict[str, str]:
    """IEC 61968-100 Header of an event message announcing created ``noun`` items."""
    return {"Verb": "created", "Noun": noun, "Timestamp": utc_now(), "Source": context.source_system,
            "MessageID": context.message_id, "CorrelationID": context.correlation_id}
