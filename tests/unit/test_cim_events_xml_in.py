"""IEC 61968-9 EndDeviceEvents XML decoder: namespaces, envelope, classes, rejects, XML attacks."""
from __future__ import annotations

from pathlib import Path

import pytest

from bus.canonical import validate_document
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.cim_events_xml_in import CimEndDeviceEventsXmlDecoder

DATA = Path(__file__).parent / "data"
EDE_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
MSG_NS = "http://iec.ch/TC57/2011/schema/message"


def _decode(payload, utc_offset: str | None = None) -> tuple[dict, TransformContext]:
    context = TransformContext("uc5-hes-c-alarms", "hes-c", "msg-1", "corr-1",
                               options={"utc_offset": utc_offset} if utc_offset else {})
    return CimEndDeviceEventsXmlDecoder()(payload, context), context


def _event(p: str = "", *, type_ref: str = "3.12.29.212", created: str = "2026-11-01T10:15:02+05:30",
           meter: str = "<{p}Assets><{p}mRID>UPM1</{p}mRID></{p}Assets>", details: str = "",
           mrid: str = "hes-c-1") -> str:
    """One event; ``p`` is a prefix like ``"e:"`` or ``""`` for a default namespace."""
    body = (f"<{p}mRID>{mrid}</{p}mRID>" if mrid else "") + f"<{p}createdDateTime>{created}</{p}createdDateTime>"
    return (f"<{p}EndDeviceEvent>{body}{meter.format(p=p)}{details}"
            f'<{p}EndDeviceEventType ref="{type_ref}"/></{p}EndDeviceEvent>')


def _detail(p: str, name: str, value: str) -> str:
    return f"<{p}EndDeviceEventDetails><{p}name>{name}</{p}name><{p}value>{value}</{p}value></{p}EndDeviceEventDetails>"


EXPECTED_COVER_OPEN = {"meter": "UPM1", "eventType": "3.12.29.212", "isCode": 251,
                       "createdDateTime": "2026-11-01T04:45:02Z", "eventClass": ["fraud", "critical"],
                       "severity": "critical", "alarmId": "hes-c-1"}


@pytest.mark.parametrize("xml", [
    f'<EndDeviceEvents xmlns="{EDE_NS}">{_event()}</EndDeviceEvents>',
    f'<e:EndDeviceEvents xmlns:e="{EDE_NS}">{_event("e:")}</e:EndDeviceEvents>',
    f'<cim:EndDeviceEvents xmlns:cim="{EDE_NS}">{_event("cim:")}</cim:EndDeviceEvents>',
    f'<EventMessage xmlns="{MSG_NS}"><Header><Verb>created</Verb><Noun>EndDeviceEvents</Noun></Header>'
    f'<Payload><EndDeviceEvents xmlns="{EDE_NS}">{_event()}</EndDeviceEvents></Payload></EventMessage>',
    f'<msg:RequestMessage xmlns:msg="{MSG_NS}"><msg:Payload><x:EndDeviceEvents xmlns:x="{EDE_NS}">'
    f'{_event("x:")}</x:EndDeviceEvents></msg:Payload></msg:RequestMessage>',
])
def test_events_are_found_by_namespace_uri_bare_or_in_a_message(xml):
    # Given the same cover-open event with a default namespace, two prefixes, and inside two messages
    # When decoded
    doc, context = _decode(xml)
    # Then it is the same canonical event: IS code from the data file, class, severity, mRID as alarm id
    assert doc == {"noun": "EndDeviceEvents", "source": "hes-c", "EndDeviceEvent": [EXPECTED_COVER_OPEN]}
    assert not context.rejections and context.rows_in == 1 and context.meters == {"UPM1"}
    assert validate_document(doc) == doc


@pytest.mark.parametrize("payload_type", ["str", "bytes", "chunk"])
def test_text_bytes_and_source_chunks_are_read(payload_type):
    # Given the document as text, UTF-8 bytes with a declaration, or an XML SourceChunk
    xml = f'<?xml version="1.0" encoding="UTF-8"?><EndDeviceEvents xmlns="{EDE_NS}">{_event()}</EndDeviceEvents>'
    payload = {"str": xml, "bytes": xml.encode(), "chunk": SourceChunk(xml, "events.xml", 0, "xml")}[payload_type]
    # When / Then each decodes to the same event
    assert _decode(payload)[0]["EndDeviceEvent"] == [EXPECTED_COVER_OPEN]


@pytest.mark.parametrize("type_ref, is_code, classes, severity", [
    ("3.26.0.85", 101, ["outage", "critical"], "critical"),
    ("3.12.29.212", 251, ["fraud", "critical"], "critical"),
    ("3.12.66.242", 201, ["fraud"], "major"),
    ("3.26.1205.242", 205, ["health"], "minor"),
    ("3.7.0.24", None, [], "info"),  # a CIM type no IS code maps to: kept, in no class
])
def test_class_severity_and_is_code_come_from_the_cim_type(type_ref, is_code, classes, severity):
    # Given an event of each class, without an isCode detail
    doc, context = _decode(f'<EndDeviceEvents xmlns="{EDE_NS}">{_event(type_ref=type_ref)}</EndDeviceEvents>')
    # When / Then the data file's reverse map gives the IS code, classes and severity
    (event,) = doc["EndDeviceEvent"]
    assert (event.get("isCode"), event["eventClass"], event["severity"]) == (is_code, classes, severity)
    assert validate_document(doc) == doc and not context.rejections


def test_details_carry_is_code_receipt_time_and_the_rest_and_meters_may_be_named():
    # Given a last gasp with isCode, receivedDateTime and a voltage detail, its meter known only by name
    details = (_detail("", "isCode", "101") + _detail("", "receivedDateTime", "2026-11-01T10:15:04+05:30")
               + _detail("", "voltage", "0"))
    meter = "<Names><name>UPM00012345</name></Names>"
    xml = f'<EndDeviceEvents xmlns="{EDE_NS}">{_event(type_ref="3.26.0.85", meter=meter, details=details)}</EndDeviceEvents>'
    # When decoded
    doc, _ = _decode(xml)
    # Then isCode and receivedDateTime become fields of their own and the rest stays in details
    assert doc["EndDeviceEvent"] == [{
        "meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101,
        "createdDateTime": "2026-11-01T04:45:02Z", "receivedDateTime": "2026-11-01T04:45:04Z",
        "eventClass": ["outage", "critical"], "severity": "critical", "alarmId": "hes-c-1",
        "details": {"voltage": "0"}}]
    assert validate_document(doc) == doc


def test_bad_events_are_rejected_by_index_and_the_rest_go_through():
    # Given good events around: no meter, a bad type, a bad time, an isCode contradicting the type,
    # and an isCode that is not a number
    events = [_event(), _event(meter=""), _event(type_ref="3.26.0"), _event(created="yesterday"),
              _event(type_ref="3.26.0.85", details=_detail("", "isCode", "201")),
              _event(details=_detail("", "isCode", "x")), _event(type_ref="3.12.66.242")]
    doc, context = _decode(f'<EndDeviceEvents xmlns="{EDE_NS}">{"".join(events)}</EndDeviceEvents>')
    # When / Then the good ones are events and each bad one is named by its 0-based index
    assert [e["isCode"] for e in doc["EndDeviceEvent"]] == [251, 201]
    assert [(r.line, r.reason) for r in context.rejections] == [
        (1, "EndDeviceEvent[1]: no printable Assets/mRID or Names/name (the meter)"),
        (2, "EndDeviceEvent[2] meter UPM1: EndDeviceEventType '3.26.0' is not a t.d.s.e code"),
        (3, "EndDeviceEvent[3] meter UPM1: createdDateTime 'yesterday' is not an ISO 8601 time"),
        (4, "EndDeviceEvent[4] meter UPM1: isCode 201 contradicts 3.26.0.85, which is IS code 101"),
        (5, "EndDeviceEvent[5] meter UPM1: isCode detail 'x' is not an integer"),
    ]
    assert context.rows_in == 7 and validate_document(doc) == doc


def test_local_times_are_ist_unless_the_route_says_otherwise():
    # Given an event time without an offset
    xml = f'<EndDeviceEvents xmlns="{EDE_NS}">{_event(created="2026-11-01T00:10:00")}</EndDeviceEvents>'
    # When decoded with the default zone and with a route in UTC
    # Then IST crosses back into 31 October, UTC is taken as it is
    assert _decode(xml)[0]["EndDeviceEvent"][0]["createdDateTime"] == "2026-10-31T18:40:00Z"
    assert _decode(xml, "+00:00")[0]["EndDeviceEvent"][0]["createdDateTime"] == "2026-11-01T00:10:00Z"


def test_a_repeated_event_collapses_and_an_event_without_mrid_has_no_alarm_id():
    # Given the same event twice, without mRID
    doc, context = _decode(f'<EndDeviceEvents xmlns="{EDE_NS}">{_event(mrid="") * 2}</EndDeviceEvents>')
    # When / Then one event, no alarmId, no rejection
    assert len(doc["EndDeviceEvent"]) == 1 and "alarmId" not in doc["EndDeviceEvent"][0]
    assert not context.rejections and context.rows_in == 2


@pytest.mark.parametrize("xml, reason", [
    (f'<!DOCTYPE EndDeviceEvents SYSTEM "http://127.0.0.1:9/x.dtd"><EndDeviceEvents xmlns="{EDE_NS}"/>', "DTD"),
    (f'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><EndDeviceEvents xmlns="{EDE_NS}">'
     f'{_event(meter="<Assets><mRID>&x;</mRID></Assets>")}</EndDeviceEvents>', "DTD"),
    ((DATA / "billion_laughs.xml").read_text(), "DTD"),
    (f'<EndDeviceEvents xmlns="{EDE_NS}"><EndDeviceEvent>', "malformed XML"),
    (f'<e:EndDeviceEvents xmlns:e="http://example.com/not-cim#">{_event("e:")}</e:EndDeviceEvents>',
     "neither EndDeviceEvents"),
    (f'<EventMessage xmlns="{MSG_NS}"><Payload><Other/></Payload></EventMessage>', "without Payload/EndDeviceEvents"),
    (SourceChunk("a,b\n1,2\n", "x.csv"), "format 'csv'"),
    ({"EndDeviceEvents": []}, "got dict"),
])
def test_dtds_entities_malformed_xml_and_other_documents_are_refused_whole(xml, reason):
    # Given a DTD, an external entity, an entity bomb, cut-off XML, the right names in a foreign
    # namespace, a message without events, a CSV chunk and a dict
    # When / Then the message is refused with the reason; nothing is expanded or fetched
    with pytest.raises(DecodeError, match=reason):
        _decode(xml)
