"""The WFM, FMS and ADMS stand-ins: real HTTP servers on 127.0.0.1 keeping work items,
fraud cases and raw events, idempotent under redelivery."""
from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
import requests

from simulators.control import SimulatorProcess
from simulators.fms import FmsServer
from simulators.wfm import WfmServer

LOW_PF = "3.26.1205.242"
LOW_PF_RESTORED = "3.26.1205.243"
MAGNET = "3.12.66.242"
COVER_OPEN = "3.12.29.212"


@pytest.fixture
def wfm():
    with WfmServer(port=0) as server:
        yield server


@pytest.fixture
def fms():
    with FmsServer(port=0) as server:
        yield server


def event(meter, event_type, created, is_code=205, severity="minor", classes=("health",)) -> dict:
    return {"meter": meter, "eventType": event_type, "isCode": is_code, "createdDateTime": created,
            "receivedDateTime": created, "eventClass": list(classes), "severity": severity}


def work_item(meter="UPM00000002", problem="low-power-factor", events=None, severity="minor",
              restored=False) -> dict:
    events = events or [event(meter, LOW_PF, "2026-11-01T04:45:02Z")]
    stamps = [e["createdDateTime"] for e in events]
    return {"key": f"{meter}:{problem}", "meter": meter, "problem": problem, "severity": severity,
            "firstSeen": min(stamps), "lastSeen": max(stamps), "restored": restored, "events": events}


def work_items_message(*items, message_id=None) -> dict:
    return {"Header": {"Verb": "created", "Noun": "WorkItems", "Source": "gridbus",
                       "MessageID": message_id or str(uuid.uuid4())},
            "WorkItems": list(items)}


def case(meter="UPM00000003", day="2026-11-01", evidence=None, severity="major") -> dict:
    return {"caseKey": f"{meter}:{day}T00:00:00Z", "meter": meter, "windowStart": f"{day}T00:00:00Z",
            "windowEnd": "2026-11-02T00:00:00Z", "severity": severity,
            "evidence": evidence or [event(meter, MAGNET, f"{day}T03:00:00Z", 201, "major", ("fraud",))]}


def cases_message(*cases) -> dict:
    return {"Header": {"Verb": "created", "Noun": "FraudCases", "Source": "gridbus",
                       "MessageID": str(uuid.uuid4())},
            "Cases": list(cases)}


def post(server, path, doc, **kw):
    return requests.post(f"{server.url}{path}", json=doc, timeout=5, **kw)


def stats(server) -> dict:
    return requests.get(f"{server.url}/stats", timeout=5).json()


def control(server, **spec) -> None:
    requests.post(f"{server.url}/_control", json=spec, timeout=5).raise_for_status()


def items_of(server, meter, **query) -> list[dict]:
    return requests.get(f"{server.url}/work-items", params={"meter": meter, **query}, timeout=5).json()["items"]


# --- WFM --------------------------------------------------------------------------------

def test_one_open_work_item_per_meter_and_problem(wfm):
    # Given a low power factor on one meter and a magnet on the same meter, then a second meter
    first = work_item()
    other_problem = work_item(problem="magnet", events=[event("UPM00000002", MAGNET, "2026-11-01T04:50:00Z")])
    other_meter = work_item(meter="UPM00000009")

    # When they are posted (the first two in one message)
    reply = post(wfm, "/work-items", work_items_message(first, other_problem))
    post(wfm, "/messages", work_items_message(other_meter)).raise_for_status()

    # Then three open items, numbered in order, each with one occurrence
    assert reply.status_code == 200
    body = reply.json()
    assert body["Reply"]["Result"] == "OK" and body["created"] == 2 and body["updated"] == 0
    assert body["items"] == ["WO-000001", "WO-000002"]
    found = items_of(wfm, "UPM00000002", status="open")
    assert [(i["id"], i["problem"], i["status"], i["occurrences"]) for i in found] == [
        ("WO-000001", "low-power-factor", "open", 1), ("WO-000002", "magnet", "open", 1)]
    assert {k: v for k, v in stats(wfm).items() if k in ("items", "open_items", "events")} == {
        "items": 3, "open_items": 3, "events": 3}


def test_a_repeat_of_the_problem_updates_its_open_item(wfm):
    # Given an open item for a low power factor
    post(wfm, "/work-items", work_items_message(work_item())).raise_for_status()

    # When the bus reports it again with a new occurrence, a higher severity and a restoration
    events = [event("UPM00000002", LOW_PF, "2026-11-01T04:45:02Z"),
              event("UPM00000002", LOW_PF, "2026-11-01T06:10:00Z"),
              event("UPM00000002", LOW_PF_RESTORED, "2026-11-01T07:00:00Z", 206)]
    reply = post(wfm, "/work-items", work_items_message(work_item(events=events, severity="major",
                                                                  restored=True))).json()

    # Then the same item is updated: distinct events merged, span widened, most severe kept
    assert (reply["created"], reply["updated"], reply["items"]) == (0, 1, ["WO-000001"])
    (item,) = items_of(wfm, "UPM00000002")
    assert item["occurrences"] == 3 and item["severity"] == "major" and item["restored"] is True
    assert (item["firstSeen"], item["lastSeen"]) == ("2026-11-01T04:45:02Z", "2026-11-01T07:00:00Z")
    assert [e["createdDateTime"] for e in item["events"]] == [
        "2026-11-01T04:45:02Z", "2026-11-01T06:10:00Z", "2026-11-01T07:00:00Z"]
    s = stats(wfm)
    assert (s["items"], s["updates"], s["events"], s["duplicate_events"]) == (1, 1, 3, 1)


def test_a_redelivered_message_changes_nothing_but_the_counters(wfm):
    # Given a message stored once
    message = work_items_message(work_item(events=[
        event("UPM00000002", LOW_PF, "2026-11-01T04:45:02Z"),
        event("UPM00000002", LOW_PF, "2026-11-01T05:00:00Z")]))
    post(wfm, "/work-items", message).raise_for_status()
    before_items, before = items_of(wfm, "UPM00000002"), stats(wfm)

    # When it is delivered again (an at-least-once redelivery)
    again = post(wfm, "/work-items", message).json()

    # Then the item is exactly as it was; only posts and duplicate_events moved
    assert (again["created"], again["updated"], again["items"]) == (0, 0, ["WO-000001"])
    assert items_of(wfm, "UPM00000002") == before_items
    after = stats(wfm)
    assert after["posts"] == before["posts"] + 1
    assert after["duplicate_events"] == before["duplicate_events"] + 2
    assert {k: v for k, v in after.items() if k not in ("posts", "duplicate_events")} == \
        {k: v for k, v in before.items() if k not in ("posts", "duplicate_events")}


def test_an_older_message_arriving_late_does_not_undo_a_restoration(wfm):
    # Given an item the bus has already reported restored
    late = work_items_message(work_item(events=[event("UPM00000002", LOW_PF, "2026-11-01T04:45:02Z")]))
    restored = work_item(restored=True, events=[
        event("UPM00000002", LOW_PF, "2026-11-01T05:00:00Z"),
        event("UPM00000002", LOW_PF_RESTORED, "2026-11-01T06:00:00Z", 206)])
    post(wfm, "/work-items", work_items_message(restored)).raise_for_status()

    # When an earlier report, with an event the WFM has not seen, arrives after it
    assert post(wfm, "/work-items", late).json()["updated"] == 1

    # Then the event is added but the item stays restored
    (item,) = items_of(wfm, "UPM00000002")
    assert item["occurrences"] == 3 and item["restored"] is True
    assert (item["firstSeen"], item["lastSeen"]) == ("2026-11-01T04:45:02Z", "2026-11-01T06:00:00Z")


def test_after_a_close_a_new_occurrence_opens_a_new_item_but_a_redelivery_does_not(wfm):
    # Given an item closed by the crew
    first = work_items_message(work_item())
    post(wfm, "/work-items", first).raise_for_status()
    closed = requests.post(f"{wfm.url}/work-items/WO-000001/close", timeout=5)
    assert closed.status_code == 200 and closed.json()["item"]["status"] == "closed"

    # When the original message is redelivered, then the problem happens again
    redelivered = post(wfm, "/work-items", first).json()
    again = post(wfm, "/work-items", work_items_message(work_item(events=[
        event("UPM00000002", LOW_PF, "2026-11-02T09:00:00Z")]))).json()

    # Then the redelivery reopens nothing, and the new occurrence opens WO-000002
    assert (redelivered["created"], redelivered["items"]) == (0, ["WO-000001"])
    assert (again["created"], again["items"]) == (1, ["WO-000002"])
    found = items_of(wfm, "UPM00000002")
    assert [(i["id"], i["status"], i["occurrences"]) for i in found] == [
        ("WO-000001", "closed", 1), ("WO-000002", "open", 1)]
    assert (stats(wfm)["items"], stats(wfm)["open_items"]) == (2, 1)
    assert requests.post(f"{wfm.url}/work-items/WO-000099/close", timeout=5).status_code == 404


@pytest.mark.parametrize("mutate,code", [
    (lambda m: m["WorkItems"][1].pop("key"), "INVALID_WORK_ITEM"),
    (lambda m: m["WorkItems"][1].update(severity="urgent"), "INVALID_SEVERITY"),
    (lambda m: m["WorkItems"][1]["events"][0].update(createdDateTime="2026-11-01T10:15:02+05:30"),
     "INVALID_TIMESTAMP"),
    (lambda m: m["WorkItems"][1]["events"][0].update(eventType="low-pf"), "INVALID_EVENT_TYPE"),
    (lambda m: m["WorkItems"][1].update(events=[]), "INVALID_MESSAGE"),
    (lambda m: m["Header"].update(Noun="EndDeviceEvents"), "UNKNOWN_NOUN"),
    (lambda m: m.pop("WorkItems"), "INVALID_MESSAGE"),
], ids=["no-key", "bad-severity", "local-time", "bad-event-type", "no-events", "other-noun", "no-items"])
def test_a_bad_message_is_refused_whole_and_stores_nothing(wfm, mutate, code):
    # Given a message whose second item (after a good one) is wrong
    message = work_items_message(work_item(), work_item(meter="UPM00000007"))
    mutate(message)

    # When it is posted
    reply = post(wfm, "/work-items", message)

    # Then 400 with an IEC FAILED reply naming the problem, and the store is untouched
    assert reply.status_code == 400
    assert reply.json()["Reply"]["Result"] == "FAILED"
    assert reply.json()["Reply"]["Error"][0]["code"] == code
    s = stats(wfm)
    assert (s["items"], s["events"], s["posts"], s["rejected_posts"]) == (0, 0, 0, 1)


def test_malformed_json_is_refused(wfm):
    reply = requests.post(f"{wfm.url}/work-items", data=b"{nope", timeout=5)
    assert reply.status_code == 400 and reply.json()["Reply"]["Error"][0]["code"] == "MALFORMED_JSON"


def test_down_mode_drops_the_connection_and_stores_nothing(wfm):
    # Given the WFM down
    control(wfm, mode="down")

    # When a work item is posted, Then the connection is dropped without an answer
    with pytest.raises(requests.ConnectionError):
        post(wfm, "/work-items", work_items_message(work_item()))
    assert requests.get(f"{wfm.url}/health", timeout=5).status_code == 503

    # And once healthy the same message goes through
    control(wfm, mode="healthy")
    assert post(wfm, "/work-items", work_items_message(work_item())).status_code == 200
    s = stats(wfm)
    assert (s["refused_posts"], s["items"], s["posts"]) == (1, 1, 1)


def test_error_mode_answers_the_status_then_recovers(wfm):
    # Given the WFM told to answer 503 with Retry-After once
    control(wfm, mode="error", status=503, times=1, retry_after_s=2)
    message = work_items_message(work_item())

    # When the same message is tried twice
    answers = [post(wfm, "/work-items", message) for _ in range(2)]

    # Then a 503 with Retry-After and a FAILED reply, then the item; the log shows both
    assert [a.status_code for a in answers] == [503, 200]
    assert answers[0].headers["Retry-After"] == "2" and answers[0].json()["Reply"]["Result"] == "FAILED"
    log = requests.get(f"{wfm.url}/_requests", params={"limit": 5}, timeout=5).json()["requests"]
    assert [(r["message_id"], r["status"]) for r in log] == [
        (message["Header"]["MessageID"], 503), (message["Header"]["MessageID"], 200)]
    assert stats(wfm)["items"] == 1 and stats(wfm)["mode"] == "healthy"


def test_slow_mode_delays_the_answer_but_stores(wfm):
    # Given the WFM slowed down by 0.3 s for one request
    control(wfm, mode="slow", delay_s=0.3, times=1)

    # When a client with a short timeout posts
    with pytest.raises(requests.Timeout):
        requests.post(f"{wfm.url}/work-items", json=work_items_message(work_item()), timeout=0.1)

    # Then the item is stored anyway (a retry must be idempotent)
    time.sleep(0.35)
    assert stats(wfm)["items"] == 1


def test_reset_clears_items_counters_and_log(wfm):
    # Given a store with an item and a refused post
    post(wfm, "/work-items", work_items_message(work_item())).raise_for_status()
    requests.post(f"{wfm.url}/work-items", data=b"[]", timeout=5)

    # When it is reset
    requests.post(f"{wfm.url}/_reset", timeout=5).raise_for_status()

    # Then every counter is zero, numbering starts again and the log is empty
    assert stats(wfm) == {"posts": 0, "items": 0, "open_items": 0, "updates": 0, "events": 0,
                          "duplicate_events": 0, "rejected_posts": 0, "refused_posts": 0,
                          "mode": "healthy", "name": "wfm"}
    assert post(wfm, "/work-items", work_items_message(work_item())).json()["items"] == ["WO-000001"]
    assert len(requests.get(f"{wfm.url}/_requests", timeout=5).json()["requests"]) == 1


# --- FMS --------------------------------------------------------------------------------

def test_fraud_cases_are_upserted_by_case_key_with_evidence_grouped(fms):
    # Given a magnet on meter 3 today, then a cover open on it the same day, and a case on meter 4
    magnet = event("UPM00000003", MAGNET, "2026-11-01T03:00:00Z", 201, "major", ("fraud",))
    cover = event("UPM00000003", COVER_OPEN, "2026-11-01T03:05:00Z", 251, "critical", ("fraud", "critical"))

    # When posted in two messages
    first = post(fms, "/cases", cases_message(case(evidence=[magnet]), case(meter="UPM00000004"))).json()
    second = post(fms, "/messages", cases_message(case(evidence=[magnet, cover], severity="critical"))).json()

    # Then meter 3 has one case holding both pieces of evidence, at the higher severity
    assert (first["created"], first["cases"]) == (2, ["FC-000001", "FC-000002"])
    assert (second["created"], second["updated"], second["cases"]) == (0, 1, ["FC-000001"])
    found = requests.get(f"{fms.url}/cases", params={"meter": "UPM00000003"}, timeout=5).json()
    assert found["count"] == 1
    (c,) = found["cases"]
    assert c["id"] == "FC-000001" and c["severity"] == "critical" and c["evidenceCount"] == 2
    assert [e["isCode"] for e in c["evidence"]] == [201, 251]
    s = stats(fms)
    assert (s["cases"], s["evidence"], s["duplicate_evidence"], s["posts"]) == (2, 3, 1, 2)


def test_a_new_window_of_the_same_meter_is_a_new_case(fms):
    post(fms, "/cases", cases_message(case())).raise_for_status()
    reply = post(fms, "/cases", cases_message(case(day="2026-11-02", evidence=[
        event("UPM00000003", MAGNET, "2026-11-02T01:00:00Z", 201, "major", ("fraud",))]))).json()
    assert (reply["created"], reply["cases"]) == (1, ["FC-000002"])


def test_fms_redelivery_is_idempotent(fms):
    # Given a case stored once
    message = cases_message(case())
    post(fms, "/cases", message).raise_for_status()
    before = requests.get(f"{fms.url}/cases", timeout=5).json()

    # When the same message is delivered again
    again = post(fms, "/cases", message).json()

    # Then nothing changes but the post and duplicate counters
    assert (again["created"], again["updated"]) == (0, 0)
    assert requests.get(f"{fms.url}/cases", timeout=5).json() == before
    s = stats(fms)
    assert (s["posts"], s["cases"], s["evidence"], s["duplicate_evidence"]) == (2, 1, 1, 1)


def test_fms_refuses_a_bad_case_whole_and_honours_failure_modes(fms):
    # Given a message whose second case has a window ending before it starts
    bad = cases_message(case(), case(meter="UPM00000004"))
    bad["Cases"][1]["windowEnd"] = "2026-10-31T00:00:00Z"

    # When posted, Then 400 and nothing stored
    reply = post(fms, "/cases", bad)
    assert reply.status_code == 400 and reply.json()["Reply"]["Error"][0]["code"] == "INVALID_CASE"
    assert (stats(fms)["cases"], stats(fms)["rejected_posts"]) == (0, 1)

    # And when told to fail, the FMS answers 502 / drops the connection, storing nothing
    control(fms, mode="error", status=502, times=1)
    assert post(fms, "/cases", cases_message(case())).status_code == 502
    control(fms, mode="down", times=1)
    with pytest.raises(requests.ConnectionError):
        post(fms, "/cases", cases_message(case()))
    assert (stats(fms)["cases"], stats(fms)["refused_posts"], stats(fms)["mode"]) == (0, 2, "healthy")


# --- as processes -----------------------------------------------------------------------

@pytest.mark.parametrize("module,name", [("simulators.wfm", "wfm-2"), ("simulators.fms", "fms-2")])
def test_wfm_and_fms_run_as_subprocesses(module, name):
    with SimulatorProcess(module, "--port", "0", "--name", name) as proc:
        assert requests.get(f"{proc.url}/health", timeout=5).json() == {
            "status": "ok", "mode": "healthy", "name": name}
    assert proc.proc.returncode == 0


def test_adms_runs_as_a_subprocess_and_stores_end_device_events():
    # Given the ADMS started the way the demo starts it
    gasp = {"meter": "UPM00000002", "eventType": "3.26.0.85", "isCode": 101,
            "createdDateTime": "2026-11-01T04:45:02Z", "eventClass": ["outage", "critical"],
            "severity": "critical"}
    message = {"Header": {"Verb": "created", "Noun": "EndDeviceEvents", "Source": "gridbus",
                          "MessageID": str(uuid.uuid4())},
               "Payload": {"EndDeviceEvents": {"EndDeviceEvent": [gasp, copy.deepcopy(gasp)]}}}
    with SimulatorProcess("simulators.adms", "--port", "0") as proc:
        # When an IEC EndDeviceEvents message (with a repeated last gasp) is posted
        reply = requests.post(f"{proc.url}/messages", json=message, timeout=5)

        # Then it is stored once, under the ADMS's name
        assert reply.status_code == 200 and reply.json()["Reply"]["Result"] == "OK"
        found = requests.get(f"{proc.url}/events", params={"meter": "UPM00000002"}, timeout=5).json()
        assert found["count"] == 1
        s = requests.get(f"{proc.url}/stats", timeout=5).json()
        assert (s["events"], s["name"]) == (1, "adms")
    assert proc.proc.returncode == 0


# --- the bus's own output ---------------------------------------------------------------

def test_the_stand_ins_take_what_the_bus_encoders_write(wfm, fms):
    from bus.transform import TransformContext
    from simulators.hes_alarms import Network, mixed
    from transformers.fms_out import FmsCasesEncoder
    from transformers.hes_alarm_json import HesAlarmJsonDecoder
    from transformers.wfm_out import WfmWorkItemsEncoder

    # Given health and fraud alarms of a small network, decoded, then selected by class and
    # encoded as the subscriber routes do
    alarms = mixed(Network.build(2, 2, 5), 120, "2026-11-01T10:00:00+05:30",
                   mix={"health": 1, "fraud": 1}, window_s=7200)
    doc = HesAlarmJsonDecoder()(alarms, TransformContext("alarms", "hes-a", "m-1", "c-1"))

    def of_class(cls):
        return {**doc, "EndDeviceEvent": [e for e in doc["EndDeviceEvent"] if cls in e["eventClass"]]}

    health, fraud = of_class("health"), of_class("fraud")
    to_wfm = WfmWorkItemsEncoder()(health, TransformContext("health-to-wfm", "hes-a", "m-1", "c-1"))
    to_fms = FmsCasesEncoder()(fraud, TransformContext("fraud-to-fms", "hes-a", "m-1", "c-1",
                                                       options={"fraud_case_window_s": 86400}))

    # When each body is posted twice (the second time a redelivery)
    headers = {"Content-Type": "application/json"}
    first = [requests.post(f"{s.url}/messages", data=out.body, headers=headers, timeout=5)
             for s, out in ((wfm, to_wfm), (fms, to_fms))]
    again = [requests.post(f"{s.url}/messages", data=out.body, headers=headers, timeout=5).json()
             for s, out in ((wfm, to_wfm), (fms, to_fms))]

    # Then both are accepted, every event is stored once, and the redelivery changes nothing
    assert [r.status_code for r in first] == [200, 200], [r.text for r in first]
    assert stats(wfm)["events"] == len(health["EndDeviceEvent"])
    assert stats(fms)["evidence"] == len(fraud["EndDeviceEvent"])
    assert stats(wfm)["items"] == len(json.loads(to_wfm.body)["WorkItems"]) == first[0].json()["created"]
    assert stats(fms)["cases"] == len(json.loads(to_fms.body)["Cases"])
    assert [(a["created"], a["updated"]) for a in again] == [(0, 0), (0, 0)]
