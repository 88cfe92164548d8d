"""IEC 61968-9 EndDeviceEvents XML (bare or in an IEC 61968-100 message) → canonical.

Elements are matched by namespace URI, never by prefix, and parsed through
defusedxml with DTDs forbidden.  Class and severity come from the CIM type via
the IS 15959 data file; a type the file does not know is kept, in no class.
Bad events are rejected one by one, named by their 0-based index.
"""
from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element

from bus.canonical import END_DEVICE_EVENTS
from bus.canonical.fields import EVENT_TYPE, NOT_XML
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.catalogue import default_severity, event_codes_by_type
from transformers.cim import END_DEVICE_EVENTS_NS, qname
from transformers.cim_xml_in import document_element
from transformers.gc_pause import gc_paused
from transformers.instants import LocalTimeOptions, local_zone, utc_instant

EDE = END_DEVICE_EVENTS_NS
END_DEVICE_EVENT_TAG = qname(EDE, "EndDeviceEvent")
_MRID, _CREATED = qname(EDE, "mRID"), qname(EDE, "createdDateTime")
_TYPE, _TYPE_MRID = qname(EDE, "EndDeviceEventType"), qname(EDE, "EndDeviceEventType", "mRID")
_DETAILS, _NAME, _VALUE = qname(EDE, "EndDeviceEventDetails"), qname(EDE, "name"), qname(EDE, "value")
_METER_IDS = (qname(EDE, "Assets", "mRID"), qname(EDE, "Assets", "Names", "name"), qname(EDE, "Names", "name"))
# details the canonical event carries as fields of its own (what to_cim_xml writes)
_IS_CODE, _RECEIVED = "isCode", "receivedDateTime"


def parse_end_device_events(text: str | bytes) -> Element:
    """The EndDeviceEvents element of a document, bare or inside a 61968-100 message."""
    return document_element(text, "EndDeviceEvents", EDE)


def _text(el: Element, path: str) -> str | None:
    found = el.findtext(path)
    return found.strip() or None if found is not None else None


class _EventReader:
    """One ``EndDeviceEvent`` element → a canonical event, or the reason it is refused."""

    def __init__(self, context: TransformContext):
        self.zone = local_zone(context.options)
        self.by_type = event_codes_by_type()
        self.no_class = default_severity()

    def utc(self, raw: str | None, what: str) -> str:
        try:
            return utc_instant(raw or "", self.zone)
        except ValueError:
            raise ValueError(f"{what} {raw!r} is not an ISO 8601 time") from None

    def event(self, el: Element, meter: str) -> dict:
        ref = el.find(_TYPE)
        event_type = ((ref.get("ref") or _text(el, _TYPE_MRID) or "") if ref is not None else "").strip()
        if EVENT_TYPE.fullmatch(event_type) is None:
            raise ValueError(f"EndDeviceEventType {event_type or None!r} is not a t.d.s.e code")
        created = self.utc(_text(el, _CREATED), "createdDateTime")
        details: dict[str, str] = {}
        for d in el.iterfind(_DETAILS):
            name, value = _text(d, _NAME), d.findtext(_VALUE) or ""
            if name is None or not name.isprintable() or NOT_XML.search(value):
                raise ValueError(f"EndDeviceEventDetails name {name!r} is empty or not printable")
            details.setdefault(name, value.strip())
        known = self.by_type.get(event_type)
        event: dict[str, Any] = {"meter": meter, "eventType": event_type}
        raw_code = details.pop(_IS_CODE, None)
        if raw_code is not None:
            if not raw_code.isascii() or not raw_code.isdigit():
                raise ValueError(f"isCode detail {raw_code!r} is not an integer")
            if known is not None and int(raw_code) != known.is_code:
                raise ValueError(f"isCode {raw_code} contradicts {event_type}, which is IS code {known.is_code}")
            event["isCode"] = int(raw_code)
        elif known is not None:
            event["isCode"] = known.is_code
        event["createdDateTime"] = created
        if _RECEIVED in details:
            event["receivedDateTime"] = self.utc(details.pop(_RECEIVED), "receivedDateTime detail")
        event["eventClass"] = list(known.classes) if known else []
        event["severity"] = known.severity if known else self.no_class
        alarm_id = _text(el, _MRID)
        if alarm_id is not None:
            if not alarm_id.isprintable():
                raise ValueError(f"mRID {alarm_id!r} is not printable")
            event["alarmId"] = alarm_id
        if details:
            event["details"] = details
        return event


def _source_text(payload: Any, name: str) -> str | bytes:
    if isinstance(payload, SourceChunk):
        if payload.format != "xml":
            raise DecodeError(f"{name} reads XML SourceChunks, got format {payload.format!r}")
        return payload.text
    if isinstance(payload, (str, bytes)):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise DecodeError(f"{name} reads XML (SourceChunk, str or bytes), got {type(payload).__name__}")


class CimEndDeviceEventsXmlDecoder:
    """``cim_end_device_events_xml``: 61968-9 EndDeviceEvents XML → canonical EndDeviceEvents."""

    name = "cim_end_device_events_xml"
    options_schema = LocalTimeOptions

    def __call__(self, payload: Any, context: TransformContext) -> dict:
        root = parse_end_device_events(_source_text(payload, self.name))
        with gc_paused():
            events = self._decode(root, context)
        return {"noun": END_DEVICE_EVENTS, "source": context.source_system, "EndDeviceEvent": events}

    def _decode(self, root: Element, context: TransformContext) -> list[dict]:
        reader = _EventReader(context)
        events: list[dict] = []
        seen: set[tuple[str, str, str]] = set()
        count = 0
        for k, el in enumerate(root.iterfind(END_DEVICE_EVENT_TAG)):
            count += 1
            meter = next((t for t in (_text(el, p) for p in _METER_IDS) if t), None)
            if meter is None or not meter.isprintable():
                context.reject(k, f"EndDeviceEvent[{k}]: no printable Assets/mRID or Names/name (the meter)")
                continue
            context.meters.add(meter)
            try:
                event = reader.event(el, meter)
            except ValueError as exc:
                context.reject(k, f"EndDeviceEvent[{k}] meter {meter}: {exc}")
                continue
            key = (meter, event["eventType"], event["createdDateTime"])
            if key in seen:
                continue  # the MDMS key: a repeat is the same event
            seen.add(key)
            events.append(event)
        context.rows_in = count
        return events
