"""Vendor HES alarm JSON decoder: IS classes, payload shapes, per-alarm rejects, UTC."""
from __future__ import annotations

import json
import re

import pytest

from bus.canonical import validate_document
from bus.errors import DecodeError, ValidationError
from bus.transform import TransformContext
from transformers.cim_events_xml_in import CimEndDeviceEventsXmlDecoder
from transformers.cim_xml_out import CimXmlEncoder
from transformers.hes_alarm_json import HesAlarmJsonDecoder
from transformers.mdms_json_out import MdmsJsonEncoder

# The example of docs/alarm-formats.md
EXAMPLE = {
    "hes": "hes-a",
    "sent_at": "2026-11-01T10:15:05+05:30",
    "alarms": [
        {"alarm_id": "hes-a-20261101-000001", "meter": "UPM00012345", "code": 101,
         "occurred_at": "2026-11-01T10:15:02+05:30", "received_at": "2026-11-01T10:15:04+05:30",
         "details": {"voltage": 0, "phase": "R"}},
        {"alarm_id": "hes-a-20261101-000002", "meter": "UPM00067890", "code": 251,
         "occurred_at": "2026-11-01T04:40:00Z", "received_at": "2026-11-01T04:40:09Z"},
    ],
}


def _decode(payload, utc_offset: str | None = None) -> tuple[dict, TransformContext]:
    context = TransformContext("uc5-hes-a-alarms", "hes-a", "msg-1", "corr-1",
                               options={"utc_offset": utc_offset} if utc_offset else {})
    return HesAlarmJsonDecoder()(payload, context), context


def _alarm(code, **extra) -> dict:
    return {"alarm_id": f"a-{code}", "meter": "UPM1", "code": code, "occurred_at": "2026-11-01T10:15:02+05:30",
            **extra}


def test_the_documented_example_becomes_canonical_events():
    # Given the example of docs/alarm-formats.md
    # When it is decoded
    doc, context = _decode(EXAMPLE)
    # Then each alarm is a canonical event in UTC with CIM and IS codes, class, severity, id and details
    assert doc == {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
        {"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101,
         "createdDateTime": "2026-11-01T04:45:02Z", "receivedDateTime": "2026-11-01T04:45:04Z",
         "eventClass": ["outage", "critical"], "severity": "critical", "alarmId": "hes-a-20261101-000001",
         "details": {"voltage": 0, "phase": "R"}},
        {"meter": "UPM00067890", "eventType": "3.12.29.212", "isCode": 251,
         "createdDateTime": "2026-11-01T04:40:00Z", "receivedDateTime": "2026-11-01T04:40:09Z",
         "eventClass": ["fraud", "critical"], "severity": "critical", "alarmId": "hes-a-20261101-000002"},
    ]}
    assert not context.rejections and context.rows_in == 2
    assert context.meters == {"UPM00012345", "UPM00067890"}
    assert validate_document(doc) == doc


@pytest.mark.parametrize("code, event_type, classes, severity", [
    (101, "3.26.0.85", ["outage", "critical"], "critical"),    # last gasp
    (251, "3.12.29.212", ["fraud", "critical"], "critical"),   # cover open
    (201, "3.12.66.242", ["fraud"], "major"),                  # magnet
    (205, "3.26.1205.242", ["health"], "minor"),               # low power factor
    (301, "3.31.0.68", [], "info"),                            # load switch disconnected: no class
])
def test_class_and_severity_come_from_the_data_file(code, event_type, classes, severity):
    # Given one alarm of each IS class
    # When decoded
    doc, _ = _decode(_alarm(code))
    # Then the CIM type, classes and severity are those of transformers/data/is15959_events.yaml
    (event,) = doc["EndDeviceEvent"]
    assert (event["eventType"], event["isCode"], event["eventClass"], event["severity"]) == (
        event_type, code, classes, severity)
    assert validate_document(doc) == doc


@pytest.mark.parametrize("shape", ["wrapped", "array", "single", "json-text", "json-bytes"])
def test_a_burst_array_a_wrapper_and_a_single_alarm_decode_alike(shape):
    # Given the same alarm as {"alarms": [...]}, a bare array, one object, JSON text or bytes
    alarm = _alarm(201)
    payload = {"wrapped": {"hes": "hes-a", "alarms": [alarm]}, "array": [alarm], "single": alarm,
               "json-text": json.dumps([alarm]), "json-bytes": json.dumps(alarm).encode()}[shape]
    # When decoded
    doc, context = _decode(payload)
    # Then the result is the same one event
    assert [e["alarmId"] for e in doc["EndDeviceEvent"]] == ["a-201"] and context.rows_in == 1


def test_bad_alarms_are_rejected_by_index_and_the_rest_go_through():
    # Given a burst with good alarms between an unknown code, no meter, a bad time,
    # a bad receipt time, nested details and something that is not an object
    alarms = [_alarm(101), _alarm(999), {"code": 101, "occurred_at": "2026-11-01T10:15:02Z"},
              _alarm(201, occurred_at="yesterday"), _alarm(205, received_at="2026-13-01T00:00:00Z"),
              _alarm(251, details={"evidence": {"photo": 1}}), "UPM1,101", _alarm(102)]
    # When decoded
    doc, context = _decode(alarms)
    # Then the good ones are events and each bad one is rejected with its 0-based index and reason
    assert [e["isCode"] for e in doc["EndDeviceEvent"]] == [101, 102]
    assert [(r.line, r.reason) for r in context.rejections] == [
        (1, "meter UPM1: unknown IS 15959 event code 999"),
        (2, "meter None is missing or not a printable string"),
        (3, "meter UPM1: occurred_at 'yesterday' is not an ISO 8601 time"),
        (4, "meter UPM1: received_at '2026-13-01T00:00:00Z' is not an ISO 8601 time"),
        (5, "meter UPM1: details.evidence must be a string or a finite number, not {'photo': 1}"),
        (6, "an alarm is an object, not str"),
    ]
    assert context.rows_in == 8 and context.meters == {"UPM1"}
    assert validate_document(doc) == doc


def test_times_become_utc_whatever_the_offset_and_local_times_are_ist_unless_the_route_says():
    # Given the same instant with +05:30, Z, and no offset (local time)
    alarms = [_alarm(101, occurred_at="2026-11-01T00:10:00+05:30"),
              _alarm(201, occurred_at="2026-10-31T18:40:00Z"),
              _alarm(205, occurred_at="2026-11-01T00:10:00")]
    # When decoded with the default zone and with a route saying UTC
    ist, _ = _decode(alarms)
    utc, _ = _decode(alarms, utc_offset="+00:00")
    # Then all three are the same UTC instant by default (it crosses midnight back into 31 October)
    assert {e["createdDateTime"] for e in ist["EndDeviceEvent"]} == {"2026-10-31T18:40:00Z"}
    assert [e["createdDateTime"] for e in utc["EndDeviceEvent"]][2] == "2026-11-01T00:10:00Z"


def test_a_code_as_a_digit_string_and_an_integer_alarm_id_are_read():
    # Given a vendor that writes the code as "251" and the alarm id as a number
    doc, _ = _decode(_alarm("251", alarm_id=77))
    # When / Then they become the integer IS code and a string alarm id
    assert (doc["EndDeviceEvent"][0]["isCode"], doc["EndDeviceEvent"][0]["alarmId"]) == (251, "77")


def test_a_repeated_alarm_collapses_into_the_first():
    # Given a HES retry: the same meter, code and time twice
    doc, context = _decode([_alarm(101), _alarm(101, alarm_id="retry")])
    # When / Then one event, the first, and no rejection
    assert [e["alarmId"] for e in doc["EndDeviceEvent"]] == ["a-101"] and not context.rejections


@pytest.mark.parametrize("payload, reason", [
    ("{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ('{"alarms": [{"code": NaN}]}', "not JSON"),
    ("42", "object or an array"),
    ({"alarms": {"meter": "UPM1"}}, "'alarms' must be an array"),
    ({"hes": "hes-b", "alarms": []}, "came from 'hes-a'"),
    (3.5, "JSON text or an object/array"),
])
def test_a_payload_that_is_not_alarm_json_is_a_decode_error(payload, reason):
    # Given text that is not JSON, JSON of the wrong shape, or alarms claiming another HES
    # When / Then the whole message is refused with the reason
    with pytest.raises(DecodeError, match=reason):
        _decode(payload)


def test_an_empty_burst_is_an_empty_document():
    # Given / When an empty array is decoded / Then a valid empty document, nothing rejected
    doc, context = _decode({"hes": "hes-a", "alarms": []})
    assert doc["EndDeviceEvent"] == [] and context.rows_in == 0 and validate_document(doc) == doc


def test_both_encoders_carry_the_alarm_fields():
    # Given the decoded example
    doc, context = _decode(EXAMPLE)
    # When it is encoded as the MDMS JSON message and as CIM XML, and the XML is read back
    message = json.loads(MdmsJsonEncoder()(doc, context).body)
    xml = CimXmlEncoder()(doc, context).body
    back = CimEndDeviceEventsXmlDecoder()(xml, TransformContext("r", "hes-a", "m", "c"))
    # Then the JSON payload is the canonical list unchanged
    assert message["Payload"]["EndDeviceEvents"]["EndDeviceEvent"] == doc["EndDeviceEvent"]
    # and the XML keeps everything, with detail values as XML text (strings)
    expected = json.loads(json.dumps(doc))
    expected["EndDeviceEvent"][0]["details"] = {"voltage": "0", "phase": "R"}
    assert back == expected


def test_a_50000_alarm_burst_decodes_and_validates_whole():
    # Given a feeder-trip burst: 50,000 meters send a last gasp within a few seconds
    burst = json.dumps({"hes": "hes-a", "alarms": [
        {"alarm_id": f"a{i}", "meter": f"UPM{i:08d}", "code": 101,
         "occurred_at": f"2026-11-01T10:15:0{i % 5}+05:30", "received_at": "2026-11-01T10:15:06+05:30"}
        for i in range(50_000)]}).encode()
    # When it is decoded and validated
    doc, context = _decode(burst)
    validate_document(doc)
    # Then all are events, none rejected.  (How fast: `gridbus bench alarms`; a timed unit test
    # would only flake on a shared machine.)
    assert len(doc["EndDeviceEvent"]) == 50_000 and not context.rejections


@pytest.mark.parametrize("field, value, expected", [
    ("eventClass", ["outage", "outage"], "distinct classes"),
    ("eventClass", ["tamper"], "distinct classes"),
    ("eventClass", "fraud", "distinct classes"),
    ("severity", "high", "is not one of ['critical', 'major', 'minor', 'info']"),
    ("alarmId", "", "non-empty printable string"),
    ("alarmId", 7, "non-empty printable string"),
    ("details", {"a": {"b": 1}}, "details.a"),
    ("details", {"a": True}, "details.a"),
    ("details", {"a": float("nan")}, "details.a"),
    ("details", {"a": "bell\x07"}, "control character"),
    ("details", [], "details must be an object"),
    ("evidence", [], "unexpected keys ['evidence']"),
])
def test_the_canonical_schema_refuses_bad_alarm_fields(field, value, expected):
    # Given a decoded alarm event with one alarm field broken
    doc, _ = _decode(EXAMPLE)
    first = doc["EndDeviceEvent"][0]
    # (a copy of the first event: its type and instants were seen, so the list's fast path checks it)
    doc["EndDeviceEvent"].append({**first, field: value})
    # When / Then validation names the field, on the fast path and the slow one alike
    with pytest.raises(ValidationError, match=re.escape(expected)):
        validate_document(doc)
    doc["EndDeviceEvent"][2]["eventType"] = "9.9.9.9"  # a type not seen before: the slow path
    with pytest.raises(ValidationError, match=re.escape(expected)):
        validate_document(doc)
