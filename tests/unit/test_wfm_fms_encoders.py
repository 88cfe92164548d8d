"""Encoders to WFM work items and FMS fraud cases (docs/wfm-fms-formats.md)."""
from __future__ import annotations

import json
import re

import pytest

from bus import registry
from bus.canonical import validate_document
from bus.errors import ConfigError, ValidationError
from bus.transform import TransformContext
from transformers.fms_out import FmsCasesEncoder, check_options
from transformers.wfm_out import WfmWorkItemsEncoder

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _event(meter: str, code: int | None, created: str, severity: str | None = None,
           event_type: str | None = None, **extra) -> dict:
    from transformers.catalogue import is15959_events

    ev: dict = {"meter": meter, "eventType": event_type or is15959_events()[code].event_type}
    if code is not None:
        ev["isCode"] = code
    ev["createdDateTime"] = created
    if severity is not None:
        ev["severity"] = severity
    ev.update(extra)
    return ev


def _doc(*events: dict) -> dict:
    return {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": list(events)}


def _context(route: str = "health-to-wfm", **options) -> TransformContext:
    return TransformContext(route, "hes-a", "msg-42", "corr-7", options=options)


def _body(out) -> dict:
    return json.loads(out.body)


# --- WFM work items ---------------------------------------------------------

HEALTH = _doc(
    _event("UPM00000002", 12, "2026-11-01T06:10:00Z", "minor", alarmId="a-3"),  # voltage unbalance restored
    _event("UPM00000001", 215, "2026-11-01T05:00:00Z", "minor", alarmId="a-1"),  # overload
    _event("UPM00000002", 11, "2026-11-01T05:30:00Z", "minor", alarmId="a-2"),  # voltage unbalance
    _event("UPM00000001", 252, "2026-11-01T05:05:00Z", "critical", alarmId="a-4"),  # load switch weld
    _event("UPM00000001", 215, "2026-11-01T04:55:00Z", "minor", alarmId="a-5"),  # overload again
)


def test_the_test_documents_are_valid_canonical_documents():
    # Given the documents these tests encode
    # Then they pass the canonical schema, so the encoders are tested on real input
    assert validate_document(HEALTH) == HEALTH


def test_health_events_are_grouped_into_one_work_item_per_meter_and_problem():
    # Given health events of two meters, one meter with two overloads and a weld
    # When encoded for the WFM
    out = WfmWorkItemsEncoder()(HEALTH, _context())
    items = _body(out)["WorkItems"]
    # Then one item per (meter, problem), ordered by key
    assert [i["key"] for i in items] == ["UPM00000001:load-switch-weld", "UPM00000001:overload",
                                         "UPM00000002:voltage-unbalance"]
    overload = items[1]
    assert (overload["meter"], overload["problem"]) == ("UPM00000001", "overload")
    # and the item's events are the canonical ones sorted by createdDateTime, with first and last seen
    assert [e["alarmId"] for e in overload["events"]] == ["a-5", "a-1"]
    assert overload["events"][0] == HEALTH["EndDeviceEvent"][4]
    assert (overload["firstSeen"], overload["lastSeen"]) == ("2026-11-01T04:55:00Z", "2026-11-01T05:00:00Z")
    assert overload["restored"] is False
    # and the Outbound counts every event
    assert (out.content_type, out.noun, out.readings, out.events) == ("application/json", "WorkItems", 0, 5)


def test_a_restoration_updates_the_item_of_its_occurrence_and_marks_it_restored():
    # Given a voltage-unbalance occurrence (11) and, later, its restoration (12)
    # When encoded
    items = _body(WfmWorkItemsEncoder()(HEALTH, _context()))["WorkItems"]
    # Then both are in the one item keyed by the problem without the suffix, and it is restored
    item = items[2]
    assert item["key"] == "UPM00000002:voltage-unbalance"
    assert [e["isCode"] for e in item["events"]] == [11, 12]
    assert item["restored"] is True
    assert (item["firstSeen"], item["lastSeen"]) == ("2026-11-01T05:30:00Z", "2026-11-01T06:10:00Z")


def test_an_item_is_restored_only_when_its_latest_event_is_a_restoration():
    # Given an occurrence, its restoration, then the condition again
    doc = _doc(_event("M1", 7, "2026-11-01T05:00:00Z", "minor"), _event("M1", 8, "2026-11-01T05:10:00Z", "minor"),
               _event("M1", 7, "2026-11-01T05:20:00Z", "minor"))
    # When encoded
    [item] = _body(WfmWorkItemsEncoder()(doc, _context()))["WorkItems"]
    # Then the item is open again
    assert item["problem"] == "over-voltage" and item["restored"] is False


def test_a_suffix_followed_by_a_remark_is_still_removed_from_the_problem():
    # Given 51 "R-phase current reverse - occurrence (reverse energy)" and its restoration 52
    doc = _doc(_event("M1", 51, "2026-11-01T05:00:00Z"), _event("M1", 52, "2026-11-01T05:10:00Z"))
    # When encoded
    [item] = _body(WfmWorkItemsEncoder()(doc, _context()))["WorkItems"]
    # Then they share one problem and the restoration closes it
    assert item["key"] == "M1:r-phase-current-reverse" and item["restored"] is True


def test_the_item_takes_the_most_severe_severity_of_its_events():
    # Given one problem reported minor, critical and without severity
    doc = _doc(_event("M1", 215, "2026-11-01T05:00:00Z", "minor"),
               _event("M1", 215, "2026-11-01T05:01:00Z", "critical"),
               _event("M1", 216, "2026-11-01T05:02:00Z"))
    # When encoded / Then the item is critical
    assert _body(WfmWorkItemsEncoder()(doc, _context()))["WorkItems"][0]["severity"] == "critical"
    # and events without severity count as info
    doc = _doc(_event("M1", 215, "2026-11-01T05:00:00Z"), _event("M1", 216, "2026-11-01T05:02:00Z"))
    assert _body(WfmWorkItemsEncoder()(doc, _context()))["WorkItems"][0]["severity"] == "info"


def test_an_event_without_a_known_is_code_has_its_event_type_as_problem():
    # Given an event without isCode and one with a code the catalogue does not know
    doc = _doc(_event("M1", None, "2026-11-01T05:00:00Z", "minor", event_type="3.26.38.85"),
               _event("M1", 999, "2026-11-01T05:01:00Z", "major", event_type="3.26.99.85"))
    # When encoded
    items = _body(WfmWorkItemsEncoder()(doc, _context()))["WorkItems"]
    # Then each is its own item keyed by its eventType, never restored
    assert [(i["key"], i["problem"], i["restored"]) for i in items] == [
        ("M1:3.26.38.85", "3.26.38.85", False), ("M1:3.26.99.85", "3.26.99.85", False)]


def test_work_items_are_deterministic_whatever_the_event_order():
    # Given the same events twice, once in reverse order
    events = HEALTH["EndDeviceEvent"]
    first = _body(WfmWorkItemsEncoder()(HEALTH, _context()))
    again = _body(WfmWorkItemsEncoder()(_doc(*reversed(events)), _context()))
    # When encoded / Then the work items are identical (a redelivery differs only in the Timestamp)
    assert first["WorkItems"] == again["WorkItems"]
    out1, out2 = WfmWorkItemsEncoder()(HEALTH, _context()), WfmWorkItemsEncoder()(HEALTH, _context())
    strip = re.compile(rb'"Timestamp":"[^"]*"')
    assert strip.sub(b"", out1.body) == strip.sub(b"", out2.body)


def test_the_work_items_body_is_json_with_the_iec_61968_100_header():
    # Given / When a document is encoded
    out = WfmWorkItemsEncoder()(HEALTH, _context())
    message = json.loads(out.body)
    # Then the header names the WorkItems noun and comes from the context
    header = message["Header"]
    assert INSTANT.fullmatch(header.pop("Timestamp"))
    assert header == {"Verb": "created", "Noun": "WorkItems", "Source": "hes-a",
                      "MessageID": "msg-42", "CorrelationID": "corr-7"}
    assert set(message) == {"Header", "WorkItems"}
    assert b", " not in out.body and b'": ' not in out.body


def test_a_document_without_events_gives_an_empty_work_item_list():
    # Given an EndDeviceEvents document with no events
    # When encoded
    out = WfmWorkItemsEncoder()(_doc(), _context())
    # Then nothing is raised, the list is empty and the Outbound counts no events
    assert _body(out)["WorkItems"] == [] and out.events == 0


@pytest.mark.parametrize("encoder", [WfmWorkItemsEncoder(), FmsCasesEncoder()])
@pytest.mark.parametrize("doc", [
    {"noun": "Nonsense"},
    {"noun": "MeterReadings", "source": "hes-a", "MeterReading": []},
    _doc({"meter": "M1", "eventType": "3.26.0.85"}),
    _doc({"meter": "M1", "eventType": "3.26.0.85", "createdDateTime": "2026-11-01 05:00"}),
    _doc({"meter": "M1", "eventType": "3.26.0.85", "createdDateTime": "2026-11-01T05:00:00Z",
          "details": {"v": float("nan")}}),
])
def test_documents_the_encoders_cannot_group_are_a_validation_error(encoder, doc):
    # Given another noun, an event without a UTC created instant, or a NaN
    # When encoded / Then the worker gets a ValidationError (dead letter), not a crash
    with pytest.raises(ValidationError):
        encoder(doc, _context())


# --- FMS fraud cases --------------------------------------------------------

def test_fraud_events_of_one_meter_within_a_window_become_one_case():
    # Given a magnet event and a cover-open an hour later on one meter, on the same UTC day
    doc = _doc(_event("M7", 251, "2026-11-01T06:00:00Z", "critical", alarmId="f-2"),
               _event("M7", 201, "2026-11-01T05:00:00Z", "major", alarmId="f-1"))
    # When encoded with the default one-day window
    out = FmsCasesEncoder()(doc, _context())
    # Then one case keyed by meter and window start, evidence sorted, the most severe severity
    [case] = _body(out)["Cases"]
    assert case["caseKey"] == "M7:2026-11-01T00:00:00Z"
    assert (case["meter"], case["windowStart"], case["windowEnd"]) == (
        "M7", "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
    assert case["severity"] == "critical"
    assert [e["alarmId"] for e in case["evidence"]] == ["f-1", "f-2"]
    assert (out.content_type, out.noun, out.events) == ("application/json", "FraudCases", 2)


def test_events_in_different_windows_or_of_different_meters_are_separate_cases():
    # Given two events of one meter either side of UTC midnight, and one of another meter
    doc = _doc(_event("M7", 201, "2026-11-01T23:59:59Z", "major"),
               _event("M7", 201, "2026-11-02T00:00:00Z", "major"),
               _event("M1", 203, "2026-11-01T12:00:00Z", "major"))
    # When encoded
    cases = _body(FmsCasesEncoder()(doc, _context()))["Cases"]
    # Then three cases ordered by caseKey
    assert [c["caseKey"] for c in cases] == ["M1:2026-11-01T00:00:00Z", "M7:2026-11-01T00:00:00Z",
                                             "M7:2026-11-02T00:00:00Z"]


def test_a_route_can_set_its_own_case_window():
    # Given events at 05:10 and 05:50 and a one-hour window from the route options
    doc = _doc(_event("M7", 201, "2026-11-01T05:10:00Z", "major"),
               _event("M7", 202, "2026-11-01T05:50:00Z", "major"),
               _event("M7", 201, "2026-11-01T06:10:00Z", "major"))
    # When encoded
    cases = _body(FmsCasesEncoder()(doc, _context(fraud_case_window_s=3600)))["Cases"]
    # Then the windows are whole UTC hours
    assert [(c["windowStart"], c["windowEnd"], len(c["evidence"])) for c in cases] == [
        ("2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", 2), ("2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z", 1)]


@pytest.mark.parametrize("window", [59, 30 * 86400 + 1, 0, -3600, "3600", 3600.0, True, None])
def test_a_bad_case_window_is_a_config_error_naming_the_route(window):
    # Given a window below a minute, above 30 days, or not an int
    # When a document is encoded / Then ConfigError names the route and the option
    with pytest.raises(ConfigError, match=r"route fraud-to-fms: option fraud_case_window_s"):
        FmsCasesEncoder()(_doc(_event("M7", 201, "2026-11-01T05:10:00Z")),
                          _context("fraud-to-fms", fraud_case_window_s=window))


@pytest.mark.parametrize("window", [60, 30 * 86400])
def test_the_window_limits_are_inclusive(window):
    # Given the shortest and the longest window / When checked / Then both are accepted
    assert check_options({"fraud_case_window_s": window}) == window


def test_cases_are_deterministic_whatever_the_event_order():
    # Given the same fraud events in two orders
    events = [_event("M7", 201, "2026-11-01T05:00:00Z", "major", alarmId="f-1"),
              _event("M7", 201, "2026-11-01T05:00:00Z", "major", alarmId="f-0"),
              _event("M1", 251, "2026-11-03T05:00:00Z", "critical")]
    first = _body(FmsCasesEncoder()(_doc(*events), _context()))
    again = _body(FmsCasesEncoder()(_doc(*reversed(events)), _context()))
    # When encoded / Then the cases are identical, even for two events in the same second
    assert first["Cases"] == again["Cases"]
    assert [e["alarmId"] for e in first["Cases"][1]["evidence"]] == ["f-0", "f-1"]


def test_the_cases_body_is_json_with_the_fraud_cases_header():
    # Given / When a document is encoded
    message = json.loads(FmsCasesEncoder()(_doc(_event("M7", 201, "2026-11-01T05:00:00Z")), _context()).body)
    # Then the header's Noun is FraudCases and the cases are under "Cases"
    assert message["Header"]["Noun"] == "FraudCases" and message["Header"]["Verb"] == "created"
    assert set(message) == {"Header", "Cases"}


def test_a_document_without_events_gives_an_empty_case_list():
    # Given an empty EndDeviceEvents document / When encoded / Then no case and no event counted
    out = FmsCasesEncoder()(_doc(), _context())
    assert _body(out)["Cases"] == [] and out.events == 0


def test_both_encoders_are_registered_under_their_names():
    # Given the installed entry points / When looked up by name / Then they are these encoders
    assert isinstance(registry.transformer("to_wfm_work_items"), WfmWorkItemsEncoder)
    assert isinstance(registry.transformer("to_fms_cases"), FmsCasesEncoder)
    assert registry.transformer("to_wfm_work_items").name == "to_wfm_work_items"
    assert registry.transformer("to_fms_cases").name == "to_fms_cases"
