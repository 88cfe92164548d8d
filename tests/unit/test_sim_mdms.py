"""The MDMS stand-in: a real HTTP server on 127.0.0.1 storing IEC 61968-100 messages."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from simulators.control import SimulatorProcess
from simulators.mdms import MdmsServer

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
POWER_FAILURE = "3.26.0.85"


@pytest.fixture
def mdms():
    with MdmsServer(port=0) as server:
        yield server


def readings_message(meters=("UPM00012345",), slots=4, message_id=None, value=0.125) -> dict:
    stamps = [f"2026-10-31T{18 + (15 * (s + 3)) // 60}:{(15 * (s + 3)) % 60:02d}:00Z"
              for s in range(slots)]
    return {
        "Header": {"Verb": "created", "Noun": "MeterReadings", "Timestamp": "2026-11-26T12:00:00Z",
                   "Source": "hes-a", "MessageID": message_id or str(uuid.uuid4())},
        "Payload": {"MeterReadings": {"MeterReading": [
            {"meter": m,
             "intervalBlocks": [{"readingType": rt,
                                 "intervalReadings": [{"timeStamp": t, "value": value} for t in stamps]}
                                for rt in (KWH_IMP, KWH_EXP)],
             "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z",
                           "value": 1234.5}]}
            for m in meters]}},
    }


def events_message(events, message_id=None) -> dict:
    return {"Header": {"Verb": "created", "Noun": "EndDeviceEvents", "Source": "hes-a",
                       "MessageID": message_id or str(uuid.uuid4())},
            "Payload": {"EndDeviceEvents": {"EndDeviceEvent": events}}}


def stats(server) -> dict:
    return requests.get(f"{server.url}/stats", timeout=5).json()


def control(server, **spec) -> None:
    requests.post(f"{server.url}/_control", json=spec, timeout=5).raise_for_status()


def test_readings_are_stored_and_answered_with_an_iec_reply(mdms):
    # Given a message of 2 meters x (2 interval blocks x 4 slots + 1 register)
    message = readings_message(meters=("UPM00000001", "UPM00000002"))

    # When it is posted
    reply = requests.post(f"{mdms.url}/messages", json=message, timeout=5)

    # Then every reading is new and the reply says OK and correlates to the MessageID
    assert reply.status_code == 200
    body = reply.json()
    assert body["Reply"]["Result"] == "OK" and body["stored"] == 18 and body["duplicates"] == 0
    assert body["Header"]["CorrelationID"] == message["Header"]["MessageID"]
    assert stats(mdms)["readings"] == 18


def test_posting_the_same_message_twice_changes_nothing(mdms):
    # Given a message already stored
    message = readings_message(slots=8)
    requests.post(f"{mdms.url}/messages", json=message, timeout=5).raise_for_status()
    before = stats(mdms)

    # When it is delivered again (a redelivery after a lost ack)
    again = requests.post(f"{mdms.url}/messages", json=message, timeout=5).json()

    # Then no reading is added; the repeat is counted as duplicates only
    after = stats(mdms)
    assert again["stored"] == 0 and again["duplicates"] == 17
    assert after["readings"] == before["readings"] == 17
    assert after["messages"] == 1 and after["duplicate_values"] == 17 and after["posts"] == 2


def test_a_reading_is_keyed_by_meter_reading_type_and_time(mdms):
    # Given a stored reading
    requests.post(f"{mdms.url}/messages", json=readings_message(slots=1, value=0.1), timeout=5)

    # When the same key arrives with a corrected value, and a quality flag on another
    corrected = readings_message(slots=2, value=0.2)
    corrected["Payload"]["MeterReadings"]["MeterReading"][0]["intervalBlocks"][0][
        "intervalReadings"][1]["qualities"] = ["1.4.1"]
    requests.post(f"{mdms.url}/messages", json=corrected, timeout=5).raise_for_status()

    # Then the value is replaced, not added, and the quality is kept
    found = requests.get(f"{mdms.url}/readings", params={"meter": "UPM00012345"}, timeout=5).json()
    imports = [r for r in found["readings"] if r["readingType"] == KWH_IMP]
    assert [r["value"] for r in imports] == [0.2, 0.2]
    assert imports[1]["qualities"] == ["1.4.1"] and "qualities" not in imports[0]
    assert found["count"] == 5 == stats(mdms)["readings"]


def test_events_are_keyed_by_meter_event_type_and_creation_time(mdms):
    # Given a last gasp reported twice (two HES paths) and one restoration
    gasp = {"meter": "UPM00012345", "eventType": POWER_FAILURE, "isCode": 101,
            "createdDateTime": "2026-10-31T18:40:12Z", "receivedDateTime": "2026-10-31T18:40:15Z"}
    restored = {**gasp, "eventType": "3.26.0.216", "isCode": 102,
                "createdDateTime": "2026-10-31T18:52:00Z"}

    # When they are posted
    first = requests.post(f"{mdms.url}/messages", json=events_message([gasp, restored]), timeout=5)
    second = requests.post(f"{mdms.url}/messages", json=events_message([gasp]), timeout=5)

    # Then two events are stored and the repeat is a duplicate
    assert first.json()["stored"] == 2 and second.json()["duplicates"] == 1
    assert stats(mdms)["events"] == 2
    found = requests.get(f"{mdms.url}/events", params={"meter": "UPM00012345"}, timeout=5).json()
    assert [e["isCode"] for e in found["events"]] == [101, 102]


@pytest.mark.parametrize("body,code", [
    (b"{not json", "MALFORMED_JSON"),
    (b'{"Header": {"Verb": "created", "Noun": "Invoices"}, "Payload": {}}', "UNKNOWN_NOUN"),
    (b'{"Header": {"Verb": "created", "Noun": "MeterReadings"}, "Payload": {}}', "INVALID_MESSAGE"),
])
def test_bad_messages_are_refused_with_a_failed_reply(mdms, body, code):
    # Given a body that is not a usable message, When it is posted
    reply = requests.post(f"{mdms.url}/messages", data=body, timeout=5)

    # Then the MDMS answers 400 with an IEC FAILED reply naming the problem
    assert reply.status_code == 400
    assert reply.json()["Reply"]["Result"] == "FAILED"
    assert reply.json()["Reply"]["Error"][0]["code"] == code
    assert stats(mdms)["rejected_posts"] == 1


def test_a_refused_message_stores_nothing_at_all(mdms):
    # Given a message whose last block has a local-time timestamp, after good ones
    message = readings_message(meters=("UPM00000001", "UPM00000002"))
    last = message["Payload"]["MeterReadings"]["MeterReading"][-1]["intervalBlocks"][-1]
    last["intervalReadings"][-1]["timeStamp"] = "2026-11-01T00:15:00+05:30"
    text_value = readings_message()
    text_value["Payload"]["MeterReadings"]["MeterReading"][0]["intervalBlocks"][0][
        "intervalReadings"][0]["value"] = "0.125"

    # When they are posted
    codes = [requests.post(f"{mdms.url}/messages", json=m, timeout=5).json()["Reply"]["Error"][0]["code"]
             for m in (message, text_value)]

    # Then both are refused for what is wrong, and the store is untouched
    assert codes == ["INVALID_TIMESTAMP", "INVALID_VALUE"]
    assert stats(mdms)["readings"] == 0


def test_error_mode_answers_the_status_for_n_requests_then_recovers(mdms):
    # Given the MDMS told to answer 503 with Retry-After for the next 2 requests
    control(mdms, mode="error", status=503, times=2, retry_after_s=1)
    message = readings_message()

    # When the same message is tried three times
    answers = [requests.post(f"{mdms.url}/messages", json=message, timeout=5) for _ in range(3)]

    # Then two 503s with Retry-After, then the message is stored; the log shows 3 attempts
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert stats(mdms)["readings"] == 9 and stats(mdms)["mode"] == "healthy"
    log = requests.get(f"{mdms.url}/_requests", params={"limit": 10}, timeout=5).json()["requests"]
    assert [(r["message_id"], r["status"]) for r in log] == [
        (message["Header"]["MessageID"], 503), (message["Header"]["MessageID"], 503),
        (message["Header"]["MessageID"], 200)]


def test_error_mode_without_times_lasts_until_changed(mdms):
    # Given a permanent 400 error mode
    control(mdms, mode="error", status=400)

    # When several posts arrive, Then all are refused until the mode is set healthy
    assert {requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=5).status_code
            for _ in range(4)} == {400}
    control(mdms, mode="healthy")
    assert requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=5).status_code == 200


def test_slow_mode_delays_the_answer_but_stores(mdms):
    # Given the MDMS slowed down by 0.4 s for one request
    control(mdms, mode="slow", delay_s=0.4, times=1)

    # When a client with a short timeout posts, and then another posts normally
    with pytest.raises(requests.Timeout):
        requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=0.15)
    started = time.monotonic()
    requests.post(f"{mdms.url}/messages", json=readings_message(meters=("UPM2",)), timeout=5)

    # Then the slow one still got stored (a retry must be idempotent) and the next is fast
    assert time.monotonic() - started < 0.3
    time.sleep(0.4)
    assert stats(mdms)["readings"] == 18


def test_down_mode_closes_the_connection_without_an_answer(mdms):
    # Given the MDMS down
    control(mdms, mode="down")

    # When a message is posted, Then the client sees the connection dropped
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=5)
    assert requests.get(f"{mdms.url}/health", timeout=5).status_code == 503

    # And once healthy again the same message goes through
    control(mdms, mode="healthy")
    assert requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=5).status_code == 200
    assert stats(mdms)["refused_posts"] == 1


def test_bad_control_requests_are_refused(mdms):
    # Given control requests with an unknown mode or a success status
    for spec in ({"mode": "sleepy"}, {"mode": "error", "status": 200}, {"times": 0, "mode": "down"}):
        # When posted, Then refused and the mode is unchanged
        assert requests.post(f"{mdms.url}/_control", json=spec, timeout=5).status_code == 400
    assert stats(mdms)["mode"] == "healthy"


def test_reset_clears_store_counters_and_request_log(mdms):
    # Given a store with readings and a request log
    requests.post(f"{mdms.url}/messages", json=readings_message(), timeout=5)

    # When it is reset
    requests.post(f"{mdms.url}/_reset", timeout=5).raise_for_status()

    # Then everything is back to zero
    assert {k: v for k, v in stats(mdms).items() if isinstance(v, int)} == dict.fromkeys(
        ("readings", "posts", "duplicate_values", "rejected_posts", "refused_posts",
         "values_received", "events", "messages"), 0)
    assert requests.get(f"{mdms.url}/_requests", timeout=5).json()["requests"] == []


def test_stop_drops_kept_alive_connections(mdms):
    # Given a client with a pooled keep-alive connection to the MDMS
    session = requests.Session()
    assert session.get(f"{mdms.url}/health", timeout=5).status_code == 200

    # When the MDMS stops
    mdms.stop()

    # Then the pooled connection no longer reaches it
    with pytest.raises(requests.ConnectionError):
        session.post(f"{mdms.url}/messages", json=readings_message(), timeout=2)


def test_runs_as_a_subprocess_that_announces_its_url():
    # Given the MDMS started the way the bus CLI and the demo start it
    with SimulatorProcess("simulators.mdms", "--port", "0", "--name", "mdms-9") as proc:
        # When it is asked for its health
        health = requests.get(f"{proc.url}/health", timeout=5).json()

        # Then it answers under its name, and stops cleanly on SIGTERM
        assert health == {"status": "ok", "mode": "healthy", "name": "mdms-9"}
    assert proc.proc.returncode == 0
