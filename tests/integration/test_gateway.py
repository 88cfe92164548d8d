"""The REST gateway as a real waitress process: authenticated pushes onto routes, IEC-style errors."""
from __future__ import annotations

import textwrap

import pytest
import requests

from pathlib import Path

from tests.support import Mdms, Proc, gridbus, run_cli, start_gateway, wait_for

pytestmark = pytest.mark.broker

READINGS = {"noun": "MeterReadings", "source": "mdms-x", "MeterReading": [
    {"meter": "UPM00000777", "intervalBlocks": [{"readingType": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
                                                 "intervalReadings": [{"timeStamp": "2026-11-01T00:15:00Z",
                                                                       "value": 0.25}]}]}]}


@pytest.fixture
def gateway(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    mdms = Mdms(bus_env, logs)
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "push.yaml").write_text(textwrap.dedent(f"""\
        use_case: 2
        routes:
          - id: hes-a-readings-push
            source: {{system: hes-a, connector: http-push, path: hes-a/readings, max_body_kb: 4}}
            method: push
            message: {{noun: MeterReadings}}
            transform: [canonical, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "{mdms.url}/messages"}}
          - id: hes-a-alarms-push
            source: {{system: hes-a, connector: http-push, path: hes-a/alarms}}
            method: push
            message: {{noun: EndDeviceEvents}}
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "{mdms.url}/messages"}}
          - id: hes-c-alarms-xml
            source: {{system: hes-c, connector: http-push, path: hes-c/alarms, format: xml}}
            method: push
            message: {{noun: EndDeviceEvents}}
            transform: [cim_end_device_events_xml, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "{mdms.url}/messages"}}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    keys = {system: run_cli(env, "gateway", "keys", "add", system).stdout.strip() for system in ("hes-a", "hes-b", "hes-c")}
    worker = Proc("worker", gridbus("worker", "-c", "1"), env, logs).start()
    server, url = start_gateway(env, logs, "--rate-per-system", "5")
    yield {"url": url, "keys": keys, "mdms": mdms, "env": env}
    for p in (server, worker):
        p.stop()
    mdms.stop()


def push(g, body, key="hes-a", path="hes-a/readings", **kw):
    headers = {"X-API-Key": g["keys"][key]} if key else {}
    return requests.post(f"{g['url']}/v1/push/{path}", json=body, headers=headers, timeout=10, **kw)


def test_an_authenticated_push_is_accepted_with_its_message_id_and_delivered(gateway):
    # Given HES-A's key  When it pushes a canonical document onto its own route
    answer = push(gateway, READINGS)
    # Then 202 with the message id, in an IEC 61968-100-style reply
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["Reply"]["Result"] == "OK" and body["message_id"] == body["Header"]["MessageID"]
    # and the reading reaches MDMS-1
    wait_for(lambda: gateway["mdms"].stats()["readings"] == 1, 30, "the pushed reading at MDMS-1")


def test_who_may_send_what(gateway):
    # No key → 401; another system's key → 403, each with a FAILED reply naming the reason
    missing = push(gateway, READINGS, key=None)
    assert missing.status_code == 401 and missing.json()["Reply"]["Error"][0]["code"] == "UNAUTHENTICATED"
    wrong = requests.post(f"{gateway['url']}/v1/push/hes-a/readings", json=READINGS, timeout=10,
                          headers={"X-API-Key": gateway["keys"]["hes-a"][:-2] + "xx"})
    assert wrong.status_code == 401
    other = push(gateway, READINGS, key="hes-b")
    assert other.status_code == 403 and "hes-b may not publish" in other.json()["Reply"]["Error"][0]["reason"]
    # and nothing of those reached the MDMS
    assert gateway["mdms"].stats()["posts"] == 0


def test_bad_requests_get_the_right_status_and_nothing_is_published(gateway):
    too_big = push(gateway, {"noun": "MeterReadings", "pad": "x" * 5000})
    assert too_big.status_code == 413
    not_json = requests.post(f"{gateway['url']}/v1/push/hes-a/readings", data=b"{nope",
                             headers={"X-API-Key": gateway["keys"]["hes-a"], "Content-Type": "application/json"},
                             timeout=10)
    assert not_json.status_code == 400 and not_json.json()["Reply"]["Result"] == "FAILED"
    form = requests.post(f"{gateway['url']}/v1/push/hes-a/readings", data="a=b",
                         headers={"X-API-Key": gateway["keys"]["hes-a"]}, timeout=10)
    assert form.status_code == 415
    assert push(gateway, READINGS, path="nowhere").status_code == 404
    assert gateway["mdms"].stats()["posts"] == 0


def test_openapi_document_and_docs_page(gateway):
    spec = requests.get(f"{gateway['url']}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.") and "/v1/push/hes-a/readings" in spec["paths"]
    assert "Reply" in spec["components"]["schemas"]
    page = requests.get(f"{gateway['url']}/docs", timeout=10)
    assert page.status_code == 200 and "/v1/push/hes-a/readings" in page.text


def test_a_system_over_its_rate_gets_429_with_retry_after(gateway):
    # Given a gateway allowing 5 requests/s per system (bursts of 10)
    # When HES-B (forbidden on this route, so nothing is published) sends 30 at once
    answers = [push(gateway, READINGS, key="hes-b") for _ in range(30)]
    # Then the burst passes up to its size and the rest is refused with Retry-After
    limited = [a for a in answers if a.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["Reply"]["Error"][0]["code"] == "RATE_LIMITED"
    # and HES-A's own budget is untouched by HES-B's burst
    assert push(gateway, READINGS).status_code == 202


def alarm(n: int, code: int = 101) -> dict:
    return {"alarm_id": f"hes-a-{n:06d}", "meter": f"UPM{n:08d}", "code": code,
            "occurred_at": "2026-11-01T10:15:02+05:30", "received_at": "2026-11-01T10:15:04+05:30"}


def test_an_alarm_id_seen_before_gets_the_same_answer_and_is_not_published_again(gateway):
    # Given a burst of three alarms accepted and delivered
    burst = {"hes": "hes-a", "alarms": [alarm(1), alarm(2), alarm(3, 251)]}
    first = push(gateway, burst, path="hes-a/alarms")
    assert first.status_code == 202, first.text
    wait_for(lambda: gateway["mdms"].stats()["events"] == 3, 30, "three events at MDMS-1")
    posts = gateway["mdms"].stats()["posts"]
    # When the HES sends the same burst again (its retry after a lost answer)
    again = push(gateway, burst, path="hes-a/alarms")
    # Then the answer is the same message id, and nothing is published twice
    assert again.status_code == 202 and again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["duplicates"] == 3
    # When a burst mixes one new alarm with seen ones
    mixed = push(gateway, [alarm(2), alarm(3, 251), alarm(4, 201)], path="hes-a/alarms")
    # Then only the new alarm travels
    assert mixed.status_code == 202 and mixed.json()["duplicates"] == 2
    assert mixed.json()["message_id"] != first.json()["message_id"]
    wait_for(lambda: gateway["mdms"].stats()["events"] == 4, 30, "the fourth event")
    assert gateway["mdms"].stats()["posts"] == posts + 1


EDE_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
BOMB = (Path(__file__).parent.parent / "unit" / "data" / "billion_laughs.xml").read_text()


def xml_alarm(meter: str = "<Assets><mRID>UPM00000901</mRID></Assets>") -> str:
    return (f'<EndDeviceEvents xmlns="{EDE_NS}"><EndDeviceEvent><mRID>hes-c-1</mRID>'
            f"<createdDateTime>2026-11-01T10:15:02+05:30</createdDateTime>{meter}"
            '<EndDeviceEventType ref="3.12.29.212"/></EndDeviceEvent></EndDeviceEvents>')


def push_xml(g, xml: str):
    return requests.post(f"{g['url']}/v1/push/hes-c/alarms", data=xml.encode(), timeout=10,
                         headers={"X-API-Key": g["keys"]["hes-c"], "Content-Type": "application/xml"})


def test_a_document_of_the_wrong_shape_is_refused_with_the_reason_and_nothing_is_published(gateway):
    # Given alarms without a meter, with an unknown code, and an object that is no alarm document
    for body, reason in [([{"alarm_id": "x1", "code": 101, "occurred_at": "2026-11-01T10:15:02Z"}], "meter"),
                         ([alarm(1, code=999)], "999"),
                         ({"alarms": "none"}, "alarms")]:
        # When HES-A pushes it
        answer = push(gateway, body, path="hes-a/alarms")
        # Then 400 with a FAILED reply that says what is wrong
        assert answer.status_code == 400, answer.text
        error = answer.json()["Reply"]["Error"][0]
        assert error["code"] == "INVALID_DOCUMENT" and reason in error["reason"], error
    # and nothing reached the broker or MDMS-1
    assert gateway["mdms"].stats()["posts"] == 0


def test_a_burst_with_one_bad_alarm_is_accepted_partially_without_it(gateway):
    # Given a burst of two good alarms and one with a code no IS 15959 table has
    answer = push(gateway, [alarm(11), alarm(12, code=999), alarm(13, 251)], path="hes-a/alarms")
    # Then it is accepted PARTIAL, naming the bad alarm
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["Reply"]["Result"] == "PARTIAL" and body["message_id"]
    assert [e["code"] for e in body["Reply"]["Error"]] == ["REJECTED"] and "999" in body["Reply"]["Error"][0]["reason"]
    # and the two good alarms reach MDMS-1 in one message
    wait_for(lambda: gateway["mdms"].stats()["events"] == 2, 30, "the two good events")
    assert gateway["mdms"].stats()["posts"] == 1


def test_xml_with_a_dtd_an_external_entity_or_an_entity_bomb_is_refused_and_nothing_is_published(gateway):
    # Given an external-entity XML, an entity bomb and cut-off XML
    external = ('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                + xml_alarm(meter="<Assets><mRID>&x;</mRID></Assets>"))
    for xml, reason in [(external, "DTD"), (BOMB, "DTD"), (xml_alarm()[:-20], "malformed")]:
        # When HES-C pushes it
        answer = push_xml(gateway, xml)
        # Then 400 with the reason
        assert answer.status_code == 400, answer.text
        assert reason in answer.json()["Reply"]["Error"][0]["reason"]
    # and JSON on the XML route is refused as the wrong media type
    assert requests.post(f"{gateway['url']}/v1/push/hes-c/alarms", json={}, timeout=10,
                         headers={"X-API-Key": gateway["keys"]["hes-c"]}).status_code == 415
    # When it then pushes a well-formed 61968-9 alarm, that one is delivered as a canonical event
    assert push_xml(gateway, xml_alarm()).status_code == 202
    wait_for(lambda: gateway["mdms"].stats()["events"] == 1, 30, "the XML alarm at MDMS-1")
    event = requests.get(f"{gateway['mdms'].url}/events?meter=UPM00000901", timeout=5).json()["events"][0]
    assert event["eventType"] == "3.12.29.212" and event["isCode"] == 251
    assert gateway["mdms"].stats()["posts"] == 1
