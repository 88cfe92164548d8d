"""The GIS push endpoint's pure half: what body is a change document, and what the Reply says."""
from __future__ import annotations

import json

import pytest

from bus.network.model import ApplyResult, Outcome, Reason
from connectors.http_push.app import Refusal
from connectors.http_push.gis_push import _document, network_reply

T = "2026-11-03T02:00:00+05:30"


def change(n: int, **kw) -> dict:
    return {"changeId": f"g-{n}", "sequence": n, "effectiveFrom": T, "kind": "create", "type": "substation",
            "mrid": f"SS-{n}", **kw}


def refusal(raw: bytes, fmt: str = "json", max_changes: int = 100) -> tuple[int, str]:
    with pytest.raises(Refusal) as caught:
        _document(raw, fmt, max_changes)
    return caught.value.args[0], caught.value.args[1]


def test_a_change_document_gives_its_changes_and_header():
    # Given an IEC 61968-100 change document  When it is read
    raw = json.dumps({"Header": {"Noun": "NetworkChanges", "MessageID": "m-1"},
                      "Payload": {"changes": [change(1), change(2)]}}).encode()
    changes, header = _document(raw, "json", 100)
    # Then its changes, unchecked (the store checks them one by one), and its header
    assert [c["changeId"] for c in changes] == ["g-1", "g-2"] and header["MessageID"] == "m-1"


@pytest.mark.parametrize("raw, status, code", [
    (b"not json", 400, "MALFORMED_JSON"),
    (b"[" * 10_000 + b"]" * 10_000, 400, "TOO_DEEP"),
    (b'{"changes": {"a": 1}}', 400, "NOT_A_CHANGE_DOCUMENT"),
    (b'["changes"]', 400, "NOT_A_CHANGE_DOCUMENT"),
    (b'{"Header": {"Noun": "MeterReadings"}, "Payload": {"changes": []}}', 400, "NOT_A_CHANGE_DOCUMENT"),
    (b'{"changes": [{"attributes": {"x": 123456789012345678901234567890}}]}', 400, "NUMBER_OUT_OF_RANGE"),
    (b'{"changes": ["\\ud800"]}', 400, "MALFORMED_JSON"),
    (b'{"changes": [' + b",".join([b"{}"] * 1000) + b"]}", 413, "TOO_MANY_CHANGES"),
    (b'{"changes": [' + b",".join([b"1"] * 101) + b"]}", 413, "TOO_MANY_CHANGES"),
])
def test_a_body_that_is_no_change_document_is_refused_with_its_reason(raw, status, code):
    # Given a hostile or mistaken body  When it is read  Then a 4xx naming what is wrong
    assert refusal(raw) == (status, code)


def test_braces_and_long_digit_runs_inside_strings_count_for_nothing():
    # Given attribute values full of brackets and digits (strings, not structure)
    raw = json.dumps({"changes": [change(n, attributes={"note": "{[" * 50 + "9" * 40}) for n in range(60)]}).encode()
    # When read with a limit of 60 changes  Then taken
    assert len(_document(raw, "json", 60)[0]) == 60


def test_a_master_data_linkage_config_becomes_changes():
    # Given a 61968-9 create of a usage point's links  When read as XML
    xml = b"""<RequestMessage><Header><Verb>create</Verb><Noun>MasterDataLinkageConfig</Noun>
      <MessageID>mdlc-7</MessageID></Header><Payload><MasterDataLinkageConfig>
      <ConfigurationEvent><effectiveDateTime>2026-11-03T02:00:00+05:30</effectiveDateTime></ConfigurationEvent>
      <Meter><Names><name>UPM1</name></Names></Meter>
      <UsagePoint><mRID>CON-1</mRID><Equipments><mRID>DT-1</mRID></Equipments></UsagePoint>
      </MasterDataLinkageConfig></Payload></RequestMessage>"""
    changes, header = _document(xml, "xml", 100)
    # Then a create of the consumer under its DT with its meter, and the message id as the header's
    assert [(c["kind"], c["mrid"], c["parent"], c["attributes"]) for c in changes] == \
        [("create", "CON-1", "DT-1", {"meter": "UPM1"})]
    assert header == {"MessageID": "mdlc-7"}
    assert refusal(b"<a><b>", "xml")[1] == "NOT_A_CHANGE_DOCUMENT"


def test_the_reply_names_each_change_not_applied_and_a_duplicate_only_informs():
    # Given one change applied, one refused, one duplicate
    result = ApplyResult([Outcome(0, "g-1", "SS-1", "applied"),
                          Outcome(1, "g-2", "F-1", "refused", Reason.UNKNOWN_PARENT, "parent SS-9 is not known"),
                          Outcome(2, "g-3", "SS-3", "duplicate", Reason.DUPLICATE, "applied before")])
    # When answered
    body = network_reply(result, "reply-1", "m-1")
    # Then PARTIAL, each named with its code and xpath, the duplicate at INFO, and the counts
    assert body["Reply"]["Result"] == "PARTIAL" and body["Header"]["CorrelationID"] == "m-1"
    assert [(e["code"], e["level"], e["details"], e["xpath"]) for e in body["Reply"]["Error"]] == [
        ("UNKNOWN_PARENT", "ERROR", "g-2", "Payload.changes[1]"), ("DUPLICATE", "INFO", "g-3", "Payload.changes[2]")]
    assert body["summary"] == {"result": "PARTIAL", "applied": 1, "duplicate": 1, "refused": 1, "updates": 0}
