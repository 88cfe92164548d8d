"""Canonical document → IEC 61968-9 XML inside an IEC 61968-100 EventMessage."""
from __future__ import annotations

from xml.sax.saxutils import escape

from bus.canonical import END_DEVICE_EVENTS, validate_document
from bus.transform import Outbound, TransformContext
from transformers.cim import (
    END_DEVICE_EVENTS_NS,
    MESSAGE_NS,
    METER_READINGS_NS,
    message_header,
    noun_of,
    value_counts,
)
from transformers.instants import NoOptions

_HEADER_ORDER = ("Verb", "Noun", "Timestamp", "Source", "MessageID", "CorrelationID")  # XSD order


def _qualities(codes: list[str] | None) -> str:
    if not codes:
        return ""
    return "".join(f'<m:ReadingQualities><m:ReadingQualityType ref="{c}"/></m:ReadingQualities>' for c in codes)


def _meter_readings(doc: dict, out: list[str]) -> None:
    # Only meter names are free text: timestamps, values, mRIDs and quality codes
    # passed validate_document, whose patterns leave nothing to escape.
    out.append(f'<m:MeterReadings xmlns:m="{METER_READINGS_NS}">')
    for mr in doc["MeterReading"]:
        out.append("<m:MeterReading>")
        for block in mr.get("intervalBlocks", ()):
            out.append("<m:IntervalBlocks>")
            out.extend(
                f"<m:IntervalReadings>{_qualities(r.get('qualities'))}<m:timeStamp>{r['timeStamp']}"
                f"</m:timeStamp><m:value>{r['value']!r}</m:value></m:IntervalReadings>"
                for r in block["intervalReadings"])
            out.append(f'<m:ReadingType ref="{block["readingType"]}"/></m:IntervalBlocks>')
        out.append(f"<m:Meter><m:mRID>{escape(mr['meter'])}</m:mRID></m:Meter>")
        out.extend(
            f"<m:Readings>{_qualities(r.get('qualities'))}<m:ReadingType ref=\"{r['readingType']}\"/>"
            f"<m:timeStamp>{r['timeStamp']}</m:timeStamp><m:value>{r['value']!r}</m:value></m:Readings>"
            for r in mr.get("readings", ()))
        out.append("</m:MeterReading>")
    out.append("</m:MeterReadings>")


def _end_device_events(doc: dict, out: list[str]) -> None:
    out.append(f'<e:EndDeviceEvents xmlns:e="{END_DEVICE_EVENTS_NS}">')
    for ev in doc["EndDeviceEvent"]:
        out.append("<e:EndDeviceEvent>")
        if "alarmId" in ev:  # the HES's alarm id is the event's own mRID
            out.append(f"<e:mRID>{escape(ev['alarmId'])}</e:mRID>")
        out.append(f"<e:createdDateTime>{ev['createdDateTime']}</e:createdDateTime>")
        if "severity" in ev:
            out.append(f"<e:severity>{ev['severity']}</e:severity>")
        out.append(f"<e:Assets><e:mRID>{escape(ev['meter'])}</e:mRID></e:Assets>")
        # CIM has no field for the IS code or the HES receipt time: name/value details carry them
        if "isCode" in ev:
            out.append(f"<e:EndDeviceEventDetails><e:name>isCode</e:name>"
                       f"<e:value>{ev['isCode']}</e:value></e:EndDeviceEventDetails>")
        if "receivedDateTime" in ev:
            out.append(f"<e:EndDeviceEventDetails><e:name>receivedDateTime</e:name>"
                       f"<e:value>{ev['receivedDateTime']}</e:value></e:EndDeviceEventDetails>")
        out.extend(f"<e:EndDeviceEventDetails><e:name>{escape(k)}</e:name><e:value>{escape(str(v))}</e:value>"
                   "</e:EndDeviceEventDetails>" for k, v in ev.get("details", {}).items())
        out.append(f'<e:EndDeviceEventType ref="{ev["eventType"]}"/></e:EndDeviceEvent>')
    out.append("</e:EndDeviceEvents>")


class CimXmlEncoder:
    """``to_cim_xml``: MeterReadings or EndDeviceEvents → ``application/xml`` Outbound."""

    name = "to_cim_xml"
    options_schema = NoOptions

    def __call__(self, doc: dict, context: TransformContext) -> Outbound:
        noun = noun_of(doc)
        # The XML is written as text, so the document is validated first: a stray
        # "<" in a timestamp would otherwise become markup.
        validate_document(doc)
        header = message_header(noun, context)
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               f'<msg:EventMessage xmlns:msg="{MESSAGE_NS}"><msg:Header>']
        out.extend(f"<msg:{k}>{escape(str(header[k]))}</msg:{k}>" for k in _HEADER_ORDER)
        out.append("</msg:Header><msg:Payload>")
        (_end_device_events if noun == END_DEVICE_EVENTS else _meter_readings)(doc, out)
        out.append("</msg:Payload></msg:EventMessage>")
        readings, events = value_counts(doc)
        return Outbound(body="".join(out).encode("utf-8"), content_type="application/xml", noun=noun,
                        readings=readings, events=events)
