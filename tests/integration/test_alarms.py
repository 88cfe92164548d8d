"""Use cases 2, 4 and 5 on the shipped alarm routes: real gateway, worker, broker and stand-ins."""
from __future__ import annotations

import time

import pytest
import requests
import yaml

from bus.broker_admin import BrokerAdmin
from tests.support import Mdms, Proc, ROOT, free_port, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker

SHIPPED = ROOT / "routes" / "uc2-4-5-alarms.yaml"
EDE_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
MSG_NS = "http://iec.ch/TC57/2011/schema/message"
STAND_INS = {"mdms-1": ("simulators.mdms", "MDMS_1_URL"), "wfm": ("simulators.wfm", "WFM_URL"),
             "fms": ("simulators.fms", "FMS_URL"), "adms": ("simulators.adms", "ADMS_URL")}


@pytest.fixture
def alarms(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    systems = {name: Mdms(bus_env, logs, name, module) for name, (module, _) in STAND_INS.items()}
    env = {**bus_env, **{var: systems[name].url for name, (_, var) in STAND_INS.items()}}
    # the shipped routes, except that WFM is retried every few seconds: the test need not
    # sit out a production backoff to see the redelivery
    doc = yaml.safe_load(SHIPPED.read_text())
    for route in doc["routes"]:
        if route["id"] == "health-to-wfm":
            route["retry"] = {"attempts": 60, "first_delay_s": 1, "max_delay_s": 4, "jitter": 0}
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / SHIPPED.name).write_text(yaml.safe_dump(doc))
    env["GRIDBUS_ROUTES"] = str(routes)
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip() for s in ("hes-a", "hes-c")}
    port = free_port()
    procs = [Proc("gateway", gridbus("gateway", "--port", str(port)), env, logs).start(),
             Proc("worker", gridbus("worker", "-c", "2"), env, logs).start()]
    url = f"http://127.0.0.1:{port}"
    admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])

    def ready():
        try:
            return requests.get(f"{url}/health", timeout=1).ok and all(
                admin.queue(f"gridbus.route.{r}").get("consumers", 0) > 0
                for r in ("hes-a-alarms", "critical-to-mdms-1", "health-to-wfm", "fraud-to-fms", "outage-to-adms"))
        except Exception:
            return False
    wait_for(ready, 60, "the gateway and the worker's consumers")
    yield {"url": url, "keys": keys, "admin": admin, **systems}
    for p in procs:
        p.stop()
    for s in systems.values():
        s.stop()


def alarm(n: int, code: int, second: int = 2) -> dict:
    return {"alarm_id": f"hes-a-{n:06d}-{code}", "meter": f"UPM{n:08d}", "code": code,
            "occurred_at": f"2026-11-01T10:15:{second:02d}+05:30", "received_at": "2026-11-01T10:15:30+05:30"}


def push_json(a, body) -> requests.Response:
    return requests.post(f"{a['url']}/v1/push/hes-a/alarms", json=body, timeout=10,
                         headers={"X-API-Key": a["keys"]["hes-a"]})


def get(system, path: str) -> dict:
    return requests.get(f"{system.url}{path}", timeout=5).json()


def test_a_tamper_json_alarm_and_a_61968_9_xml_alarm_reach_fms_as_canonical_events(alarms):
    # Given HES-A sends two magnet-tamper alarms of one meter 40 s apart (vendor JSON, IS code 201)
    answer = push_json(alarms, [alarm(7, 201, second=2), alarm(7, 201, second=42)])
    assert answer.status_code == 202, answer.text
    # and HES-C sends a cover-open alarm as IEC 61968-9 EndDeviceEvents XML in a 61968-100 message
    xml = (f'<EventMessage xmlns="{MSG_NS}"><Header><Verb>created</Verb><Noun>EndDeviceEvents</Noun></Header>'
           f'<Payload><EndDeviceEvents xmlns="{EDE_NS}"><EndDeviceEvent><mRID>hes-c-77</mRID>'
           "<createdDateTime>2026-11-01T11:00:00+05:30</createdDateTime>"
           "<Assets><mRID>UPM00000008</mRID></Assets><EndDeviceEventType ref=\"3.12.29.212\"/>"
           "</EndDeviceEvent></EndDeviceEvents></Payload></EventMessage>")
    answer = requests.post(f"{alarms['url']}/v1/push/hes-c/alarms", data=xml, timeout=10,
                           headers={"X-API-Key": alarms["keys"]["hes-c"], "Content-Type": "application/xml"})
    assert answer.status_code == 202, answer.text
    # Then FMS holds one case for the JSON meter with both tamper events as evidence ...
    wait_for(lambda: alarms["fms"].stats()["evidence"] == 3, 30, "three pieces of evidence at FMS")
    [case] = get(alarms["fms"], "/cases?meter=UPM00000007")["cases"]
    assert [(e["eventType"], e["isCode"], e["createdDateTime"]) for e in case["evidence"]] == [
        ("3.12.66.242", 201, "2026-11-01T04:45:02Z"), ("3.12.66.242", 201, "2026-11-01T04:45:42Z")]
    assert all(e["eventClass"] == ["fraud"] and e["severity"] == "major" for e in case["evidence"])
    # ... and one for the XML meter, whose CIM code got its IS 15959 code, class and alarm id
    [case] = get(alarms["fms"], "/cases?meter=UPM00000008")["cases"]
    [event] = case["evidence"]
    assert (event["eventType"], event["isCode"], event["alarmId"]) == ("3.12.29.212", 251, "hes-c-77")
    assert event["eventClass"] == ["fraud", "critical"] and case["severity"] == "critical"
    # and the cover open, being critical too, reached MDMS-1, while WFM and the ADMS got nothing
    wait_for(lambda: alarms["mdms-1"].stats()["events"] == 1, 30, "the critical event at MDMS-1")
    assert alarms["wfm"].stats()["events"] == 0 and alarms["adms"].stats()["events"] == 0


def _waiting_for_wfm(admin: BrokerAdmin) -> int:
    """WFM's messages in the broker: its route queue plus the retry delay queues (only WFM fails here)."""
    queues = admin.queues()
    return sum(q.get("messages", 0) for q in queues
               if q["name"] == "gridbus.route.health-to-wfm" or q["name"].startswith("celery_delayed_"))


def test_wfm_down_for_60_s_holds_back_no_other_subscriber_and_gets_everything_once_when_back(alarms):
    # Given the WFM goes down (connections dropped without an answer)
    alarms["wfm"].control(mode="down")
    down_at = time.monotonic()
    waiting = []
    burst = 0
    # When HES-A sends a burst every 10 s for 60 s: a health, a fraud and a last-gasp alarm per meter
    while time.monotonic() - down_at < 60:
        meters = range(burst * 100, burst * 100 + 100)
        body = [alarm(n, code) for n in meters for code in (205, 201, 101)]
        assert push_json(alarms, body).status_code == 202
        burst += 1
        # Then MDMS-1 (critical), FMS (fraud) and the ADMS (outage) keep receiving every burst at once
        wait_for(lambda: alarms["mdms-1"].stats()["events"] == burst * 100, 15, f"burst {burst} at MDMS-1")
        wait_for(lambda: alarms["fms"].stats()["evidence"] == burst * 100, 15, f"burst {burst} at FMS")
        wait_for(lambda: alarms["adms"].stats()["events"] == burst * 100, 15, f"burst {burst} at the ADMS")
        waiting.append(_waiting_for_wfm(alarms["admin"]))
        time.sleep(max(0.0, down_at + burst * 10 - time.monotonic()))
    # while what is owed to the WFM grows in the broker, and nothing reached it
    assert burst >= 6 and waiting[-1] > waiting[0] and waiting[-1] >= burst - 1, waiting
    assert alarms["wfm"].stats()["events"] == 0 and alarms["wfm"].stats()["refused_posts"] > 0
    # When the WFM comes back
    alarms["wfm"].control(mode="healthy")
    # Then every health event is delivered, one open work item per meter and problem ...
    wait_for(lambda: alarms["wfm"].stats()["events"] == burst * 100, 60, "every health event at the WFM")
    wfm = alarms["wfm"].stats()
    assert wfm["open_items"] == burst * 100 and wfm["duplicate_events"] == 0
    # ... and nothing arrived twice anywhere
    assert alarms["mdms-1"].stats()["duplicate_values"] == 0
    assert alarms["fms"].stats()["duplicate_evidence"] == 0
    assert alarms["adms"].stats()["duplicate_values"] == 0
    # and the broker owes the WFM nothing any more (the management API's figures lag by seconds)
    wait_for(lambda: _waiting_for_wfm(alarms["admin"]) == 0, 30, "the WFM's queues to drain")
