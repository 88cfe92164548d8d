"""The HES stand-in: a real HTTP server on 127.0.0.1 answering on-demand reads and
meter commands with IEC 61968-100 replies, per-meter faults and idempotent commands."""
from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from urllib.parse import quote

import pytest
import requests

from simulators.control import SimulatorProcess
from simulators.hes import DEFAULT_READING_TYPES, HesServer, register_value

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


@pytest.fixture
def hes():
    with HesServer(port=0, name="hes-a") as server:
        yield server


def read_request(*meters, reading_types=None, correlation_id=None) -> dict:
    request = {"meters": list(meters)}
    if reading_types is not None:
        request["readingTypes"] = reading_types
    return {"Header": {"Verb": "get", "Noun": "MeterReadings", "MessageID": str(uuid.uuid4()),
                       "CorrelationID": correlation_id or str(uuid.uuid4()), "Source": "gridbus"},
            "Request": request}


def command_request(action, *meters, command_id=None, **params) -> dict:
    return {"Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": str(uuid.uuid4()),
                       "CorrelationID": str(uuid.uuid4()), "Source": "gridbus"},
            "Request": {"commandId": command_id or str(uuid.uuid4()), "action": action,
                        "meters": list(meters), "params": params}}


def read(server, *meters, **kw) -> requests.Response:
    return requests.post(f"{server.url}/requests/meter-readings", json=read_request(*meters, **kw), timeout=5)


def command(server, doc) -> requests.Response:
    return requests.post(f"{server.url}/requests/commands", json=doc, timeout=5)


def set_meters(server, **spec) -> None:
    requests.post(f"{server.url}/_meters", json=spec, timeout=5).raise_for_status()


def stats(server) -> dict:
    return requests.get(f"{server.url}/stats", timeout=5).json()


def instant(seconds_from_now: float, utc_offset_h: float = 0) -> str:
    """An ISO 8601 instant to the millisecond, with Z or (utc_offset_h) an offset."""
    at = dt.datetime.now(dt.timezone(dt.timedelta(hours=utc_offset_h))) + dt.timedelta(seconds=seconds_from_now)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expiring(doc: dict, seconds_from_now: float, utc_offset_h: float = 0) -> dict:
    doc["Request"]["expiresAt"] = instant(seconds_from_now, utc_offset_h)
    return doc


def status(server, command_id: str, meters: str | None = None) -> dict:
    answer = requests.get(f"{server.url}/requests/commands/{quote(command_id, safe='')}",
                          params={"meters": meters} if meters else None, timeout=5)
    assert answer.status_code == 200
    return answer.json()


def post_in_background(server, doc) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(command(server, doc)))
    thread.start()
    return thread, answers


def await_status(server, command_id: str, wanted: str, within_s: float = 2.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        meters = status(server, command_id)["meters"]
        if meters and all(m["status"] == wanted for m in meters.values()) or time.monotonic() > deadline:
            return meters
        time.sleep(0.02)


def test_reads_answer_every_meter_with_the_four_block_load_energies(hes):
    # Given a read request for three meters without readingTypes
    doc = read_request("UPM1", "UPM2", "UPM3", correlation_id="corr-1")

    # When it is posted
    answer = requests.post(f"{hes.url}/requests/meter-readings", json=doc, timeout=5)

    # Then OK, correlated, one MeterReading per meter with the four default types, stamped now
    assert answer.status_code == 200
    body = answer.json()
    assert body["Reply"] == {"Result": "OK"}
    assert body["Header"]["CorrelationID"] == "corr-1" and body["Header"]["Source"] == "hes-a"
    assert body["Header"]["Noun"] == "MeterReadings" and body["Header"]["Verb"] == "reply"
    blocks = body["Payload"]["MeterReadings"]["MeterReading"]
    assert [b["meter"] for b in blocks] == ["UPM1", "UPM2", "UPM3"]
    for block in blocks:
        assert [r["readingType"] for r in block["readings"]] == list(DEFAULT_READING_TYPES)
        for r in block["readings"]:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["timeStamp"])
            assert r["value"] == register_value(block["meter"], r["readingType"])
    # and the values are deterministic per meter and reading type
    again = read(hes, "UPM1", reading_types=[KWH_IMP, DAILY_KWH]).json()
    values = {r["readingType"]: r["value"] for r in again["Payload"]["MeterReadings"]["MeterReading"][0]["readings"]}
    assert values[KWH_IMP] == blocks[0]["readings"][0]["value"] and 0 <= values[KWH_IMP] < 2.5
    assert values[DAILY_KWH] == register_value("UPM1", DAILY_KWH)
    assert stats(hes)["read_requests"] == 2 and stats(hes)["meters_read"] == 4
    assert requests.get(f"{hes.url}/meters", timeout=5).json()["meters"] == ["UPM1", "UPM2", "UPM3"]


def test_an_unreachable_meter_makes_the_answer_partial(hes):
    # Given one of two meters unreachable
    set_meters(hes, unreachable=["UPM2"])

    # When both are read
    body = read(hes, "UPM1", "UPM2").json()

    # Then PARTIAL: the reachable meter's readings and one error naming the other
    assert body["Reply"]["Result"] == "PARTIAL"
    assert [(e["code"], e["meter"]) for e in body["Reply"]["Error"]] == [("METER_UNREACHABLE", "UPM2")]
    assert [b["meter"] for b in body["Payload"]["MeterReadings"]["MeterReading"]] == ["UPM1"]
    assert stats(hes)["unreachable_answers"] == 1


def test_all_meters_unreachable_is_a_failed_business_answer(hes):
    # Given both meters unreachable
    set_meters(hes, unreachable=["UPM1", "UPM2"])

    # When they are read
    answer = read(hes, "UPM1", "UPM2")

    # Then 200 with Result FAILED and one error per meter
    assert answer.status_code == 200
    assert answer.json()["Reply"]["Result"] == "FAILED"
    assert sorted(e["meter"] for e in answer.json()["Reply"]["Error"]) == ["UPM1", "UPM2"]
    assert answer.json()["Payload"]["MeterReadings"]["MeterReading"] == []


def test_latency_is_added_to_every_business_request(hes):
    # Given a latency of 200 ms
    set_meters(hes, latency_ms=200)
    assert requests.get(f"{hes.url}/_meters", timeout=5).json()["meters"]["latency_ms"] == 200

    # When a read and a command are posted
    started = time.monotonic()
    read(hes, "UPM1").raise_for_status()
    command(hes, command_request("connect", "UPM1")).raise_for_status()

    # Then each took the latency; after a reset none
    assert time.monotonic() - started >= 0.4
    requests.post(f"{hes.url}/_reset", timeout=5).raise_for_status()
    started = time.monotonic()
    read(hes, "UPM1").raise_for_status()
    assert time.monotonic() - started < 0.2


def test_a_timeout_meter_hangs_the_whole_request(hes):
    # Given a meter that hangs the HES (shortened from 30 s for the test)
    set_meters(hes, timeout=["UPM9"], timeout_s=0.6)

    # When a request naming it is posted by a client that waits 0.2 s, Then the client times out
    with pytest.raises(requests.Timeout):
        requests.post(f"{hes.url}/requests/meter-readings", json=read_request("UPM1", "UPM9"), timeout=0.2)
    # and a request without it is answered at once
    started = time.monotonic()
    read(hes, "UPM1").raise_for_status()
    assert time.monotonic() - started < 0.3


def test_commands_execute_and_change_the_meter_state(hes):
    # Given a meter in the default state
    assert requests.get(f"{hes.url}/meters/UPM7", timeout=5).json()["state"] == {
        "relay": "connected", "load_limit_kw": None, "credit": 0, "payment_mode": "postpaid"}

    # When it is disconnected, load-limited, credited twice and switched to prepaid
    answers = [command(hes, command_request(action, "UPM7", **params)).json() for action, params in (
        ("disconnect", {}), ("load-limit", {"limit_kw": 2.5}), ("credit-update", {"amount": 100}),
        ("credit-update", {"amount": 50.5}), ("payment-mode", {"mode": "prepaid"}))]

    # Then every command executed and the state shows all of them
    assert {a["Reply"]["Result"] for a in answers} == {"OK"}
    assert answers[0]["Header"]["Noun"] == "EndDeviceControls"
    last = answers[-1]["Payload"]["EndDeviceControls"]["results"]
    assert last == [{"meter": "UPM7", "status": "executed", "state": {
        "relay": "disconnected", "load_limit_kw": 2.5, "credit": 150.5, "payment_mode": "prepaid"}}]
    meter = requests.get(f"{hes.url}/meters/UPM7", timeout=5).json()
    assert meter["state"] == last[0]["state"]
    assert [e["action"] for e in meter["executions"]] == [
        "disconnect", "load-limit", "credit-update", "credit-update", "payment-mode"]
    assert stats(hes)["executions"] == 5 and stats(hes)["command_requests"] == 5


def test_the_same_command_id_executes_once_per_meter(hes):
    # Given a credit update sent to two meters, one of them unreachable
    set_meters(hes, unreachable=["UPM2"])
    doc = command_request("credit-update", "UPM1", "UPM2", command_id="CMD-1", amount=100)
    first = command(hes, doc).json()
    assert first["Reply"]["Result"] == "PARTIAL"

    # When the meter is reachable again and the same command is retried
    set_meters(hes, unreachable=[])
    retry = command(hes, doc).json()

    # Then the meter that had executed answers the same result without executing again,
    # and the one that had failed executes now; each meter was credited once
    assert retry["Reply"]["Result"] == "OK"
    by_meter = {r["meter"]: r for r in retry["Payload"]["EndDeviceControls"]["results"]}
    assert by_meter["UPM1"]["duplicate"] is True and by_meter["UPM1"]["status"] == "executed"
    assert by_meter["UPM2"]["status"] == "executed" and "duplicate" not in by_meter["UPM2"]
    for meter in ("UPM1", "UPM2"):
        assert requests.get(f"{hes.url}/meters/{meter}", timeout=5).json()["state"]["credit"] == 100
    s = stats(hes)
    assert s["executions"] == 2 and s["duplicate_executions"] == 1
    # and the id cannot be reused for another command
    reused = command(hes, command_request("disconnect", "UPM1", command_id="CMD-1")).json()
    assert reused["Reply"]["Result"] == "FAILED"
    assert reused["Reply"]["Error"][0]["code"] == "COMMAND_ID_REUSED"


@pytest.mark.parametrize("change,code", [
    ({"action": "explode"}, "UNKNOWN_ACTION"),
    ({"action": "load-limit", "params": {"limit_kw": 0}}, "INVALID_PARAMS"),
    ({"action": "credit-update", "params": {"amount": "100"}}, "INVALID_PARAMS"),
    ({"action": "payment-mode", "params": {"mode": "free"}}, "INVALID_PARAMS"),
    ({"meters": []}, "INVALID_REQUEST"),
    ({"commandId": ""}, "INVALID_REQUEST"),
    ({"expiresAt": "2026-12-04T22:10:00"}, "INVALID_REQUEST"),       # no Z or offset: no instant
    ({"expiresAt": "2026-02-30T22:10:00Z"}, "INVALID_REQUEST"),
    ({"expiresAt": "tomorrow"}, "INVALID_REQUEST"),
    ({"expiresAt": 1796422200}, "INVALID_REQUEST"),
])
def test_bad_commands_are_refused_with_400(hes, change, code):
    # Given a command with a bad field
    doc = command_request("connect", "UPM1")
    doc["Request"].update(change)

    # When it is posted, Then 400 with a FAILED reply naming the problem, and nothing ran
    answer = command(hes, doc)
    assert answer.status_code == 400
    assert answer.json()["Reply"]["Result"] == "FAILED"
    assert answer.json()["Reply"]["Error"][0]["code"] == code
    assert answer.json()["Header"]["CorrelationID"] == doc["Header"]["CorrelationID"]
    assert stats(hes)["executions"] == 0 and stats(hes)["rejected_posts"] == 1
    # and a command the HES could not read was never received
    if doc["Request"]["commandId"]:
        assert status(hes, doc["Request"]["commandId"])["meters"] == {}


def test_malformed_and_misdirected_requests_are_refused(hes):
    # Given a body that is not JSON, and a command posted to the read path
    bad = requests.post(f"{hes.url}/requests/meter-readings", data=b"{nope", timeout=5)
    wrong = requests.post(f"{hes.url}/requests/meter-readings", json=command_request("connect", "UPM1"), timeout=5)

    # Then both are 400 FAILED
    assert (bad.status_code, bad.json()["Reply"]["Error"][0]["code"]) == (400, "MALFORMED_JSON")
    assert (wrong.status_code, wrong.json()["Reply"]["Error"][0]["code"]) == (400, "UNKNOWN_NOUN")
    # but a header without Noun and Verb is taken as the path says
    bare = {"Header": {"MessageID": "m-1"}, "Request": {"meters": ["UPM1"], "readingTypes": None}}
    answer = requests.post(f"{hes.url}/requests/meter-readings", json=bare, timeout=5)
    assert answer.json()["Reply"]["Result"] == "OK" and answer.json()["Header"]["CorrelationID"] == "m-1"


def test_error_and_down_modes_refuse_business_requests(hes):
    # Given the HES answering 503 for one request
    requests.post(f"{hes.url}/_control", json={"mode": "error", "status": 503, "times": 1,
                                                "retry_after_s": 2}, timeout=5).raise_for_status()
    doc = command_request("disconnect", "UPM1")

    # When a command is posted, Then 503 with Retry-After, and nothing executed
    refused = command(hes, doc)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert refused.json()["Reply"]["Result"] == "FAILED"
    assert requests.get(f"{hes.url}/meters/UPM1", timeout=5).json()["executions"] == []

    # When it is down, Then the connection is dropped and /health says so
    requests.post(f"{hes.url}/_control", json={"mode": "down"}, timeout=5).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        command(hes, doc)
    assert requests.get(f"{hes.url}/health", timeout=5).status_code == 503

    # And once healthy the command executes
    requests.post(f"{hes.url}/_control", json={"mode": "healthy"}, timeout=5).raise_for_status()
    assert command(hes, doc).json()["Reply"]["Result"] == "OK"
    s = stats(hes)
    assert s["refused_posts"] == 2 and s["executions"] == 1 and s["name"] == "hes-a"


def test_bad_meter_fault_settings_are_refused(hes):
    for spec in ({"unreachable": "UPM1"}, {"latency_ms": -1}, {"slow": True}):
        assert requests.post(f"{hes.url}/_meters", json=spec, timeout=5).status_code == 400


def test_runs_as_a_subprocess_that_announces_its_url():
    # Given the HES started as the demo and the bus tests start it
    with SimulatorProcess("simulators.hes", "--port", "0", "--name", "hes-b") as proc:
        # When asked for its health, Then it answers under its name, and stops on SIGTERM
        assert requests.get(f"{proc.url}/health", timeout=5).json() == {
            "status": "ok", "mode": "healthy", "name": "hes-b"}
    assert proc.proc.returncode == 0


def test_an_expired_command_is_refused_per_meter_and_never_executed(hes):
    # Given a disconnect for two meters that expired a minute ago
    doc = expiring(command_request("disconnect", "UPM1", "UPM2", command_id="CMD-OLD"), -60)

    # When it is posted
    body = command(hes, doc).json()

    # Then FAILED: one EXPIRED error and one expired result per meter, and neither executed
    assert body["Reply"]["Result"] == "FAILED"
    assert [(e["code"], e["level"], e["meter"]) for e in body["Reply"]["Error"]] == [
        ("EXPIRED", "FATAL", "UPM1"), ("EXPIRED", "FATAL", "UPM2")]
    assert all(e["reason"] for e in body["Reply"]["Error"])
    assert body["Payload"]["EndDeviceControls"]["results"] == [
        {"meter": m, "status": "expired", "state": {
            "relay": "connected", "load_limit_kw": None, "credit": 0, "payment_mode": "postpaid"}}
        for m in ("UPM1", "UPM2")]
    for meter in ("UPM1", "UPM2"):
        assert requests.get(f"{hes.url}/meters/{meter}", timeout=5).json()["executions"] == []
    s = stats(hes)
    assert s["expired_refusals"] == 2 and s["executions"] == 0
    assert status(hes, "CMD-OLD") == {"commandId": "CMD-OLD", "meters": {
        "UPM1": {"status": "expired"}, "UPM2": {"status": "expired"}}}

    # When it is retried with a later expiresAt, Then it stays expired: a refusal is final
    retry = command(hes, expiring(doc, 60)).json()
    assert retry["Reply"]["Result"] == "FAILED" and stats(hes)["executions"] == 0


@pytest.mark.parametrize("delay", ["slow", "latency", "hang"])
def test_a_command_that_expires_while_the_hes_is_slow_is_refused_after_the_delay(hes, delay):
    # Given an HES that takes 0.8 s before it executes (slow mode, latency, or a hung meter)
    if delay == "slow":
        requests.post(f"{hes.url}/_control", json={"mode": "slow", "delay_s": 0.8, "times": 1},
                      timeout=5).raise_for_status()
    elif delay == "latency":
        set_meters(hes, latency_ms=800)
    else:
        set_meters(hes, timeout=["UPM1"], timeout_s=0.8)
    # and a command that was still valid on arrival, expiring 0.3 s later (given in IST)
    doc = expiring(command_request("disconnect", "UPM1"), 0.3, utc_offset_h=5.5)

    # When it is posted
    started = time.monotonic()
    body = command(hes, doc).json()

    # Then it was refused after the delay, when it came to execute, and never executed
    assert time.monotonic() - started >= 0.8
    assert body["Reply"]["Result"] == "FAILED" and body["Reply"]["Error"][0]["code"] == "EXPIRED"
    assert body["Payload"]["EndDeviceControls"]["results"][0]["status"] == "expired"
    assert requests.get(f"{hes.url}/meters/UPM1", timeout=5).json()["executions"] == []
    assert status(hes, doc["Request"]["commandId"])["meters"] == {"UPM1": {"status": "expired"}}


def test_a_duplicate_of_an_executed_command_answers_its_first_result_even_after_expiry(hes):
    # Given a command that executed shortly before its expiresAt
    doc = expiring(command_request("credit-update", "UPM1", amount=100), 0.4)
    first = command(hes, doc).json()
    assert first["Reply"]["Result"] == "OK"

    # When the same command is retried after expiry
    time.sleep(0.5)
    retry = command(hes, doc).json()

    # Then the retry answers the first execution's result; nothing ran twice or was refused
    assert retry["Reply"]["Result"] == "OK"
    assert retry["Payload"]["EndDeviceControls"]["results"] == [
        {**first["Payload"]["EndDeviceControls"]["results"][0], "duplicate": True}]
    s = stats(hes)
    assert (s["executions"], s["duplicate_executions"], s["expired_refusals"]) == (1, 1, 0)
    assert status(hes, doc["Request"]["commandId"])["meters"]["UPM1"]["status"] == "executed"


def test_the_status_request_shows_in_progress_while_a_slow_command_runs_then_executed(hes):
    # Given an HES in slow mode for one request
    requests.post(f"{hes.url}/_control", json={"mode": "slow", "delay_s": 1.0, "times": 1},
                  timeout=5).raise_for_status()
    doc = command_request("load-limit", "UPM1", "UPM2", command_id="CMD-SLOW", limit_kw=2.5)

    # When a command is posted and its status asked from another client during the delay
    thread, answers = post_in_background(hes, doc)
    during = await_status(hes, "CMD-SLOW", "in-progress")

    # Then both meters are in progress, answered while the slow HES still sleeps on the command
    assert during == {"UPM1": {"status": "in-progress"}, "UPM2": {"status": "in-progress"}}
    assert thread.is_alive()
    thread.join(5)
    assert answers[0].json()["Reply"]["Result"] == "OK"
    # and once answered, executed with the state after the execution and when it ran
    after = status(hes, "CMD-SLOW")
    assert after["commandId"] == "CMD-SLOW" and set(after["meters"]) == {"UPM1", "UPM2"}
    for entry in after["meters"].values():
        assert entry["status"] == "executed" and entry["state"]["load_limit_kw"] == 2.5
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["at"])
    assert after["meters"]["UPM1"]["at"] == requests.get(f"{hes.url}/meters/UPM1", timeout=5).json()[
        "executions"][0]["at"]


def test_the_status_request_names_only_meters_received_and_filters_by_meters(hes):
    # Given a command with an URL-unsafe id on two meters, one of them unreachable
    set_meters(hes, unreachable=["UPM2"])
    doc = command_request("disconnect", "UPM1", "UPM2", command_id="CMD/7 ä&x")
    command(hes, doc).raise_for_status()

    # When its status is asked, Then the executed meter, the failed one, and no other
    meters = status(hes, "CMD/7 ä&x")["meters"]
    assert meters["UPM1"]["status"] == "executed" and meters["UPM1"]["state"]["relay"] == "disconnected"
    assert meters["UPM2"] == {"status": "failed", "error": "METER_UNREACHABLE"}
    assert set(meters) == {"UPM1", "UPM2"}
    # and ?meters= limits the answer, still leaving out a meter never received
    assert status(hes, "CMD/7 ä&x", meters="UPM2,UPM3") == {
        "commandId": "CMD/7 ä&x", "meters": {"UPM2": {"status": "failed", "error": "METER_UNREACHABLE"}}}
    # and an unknown commandId has no meters
    assert status(hes, "CMD-NEVER") == {"commandId": "CMD-NEVER", "meters": {}}

    # When the failed meter is reachable and the command retried, Then it executed
    set_meters(hes, unreachable=[])
    command(hes, doc).raise_for_status()
    assert status(hes, "CMD/7 ä&x", meters="UPM2")["meters"]["UPM2"]["status"] == "executed"
    # and /_reset forgets every status
    requests.post(f"{hes.url}/_reset", timeout=5).raise_for_status()
    assert status(hes, "CMD/7 ä&x")["meters"] == {}


def test_a_post_refused_by_an_injected_failure_leaves_no_in_progress_mark(hes):
    # Given the HES answering 503 for one request
    requests.post(f"{hes.url}/_control", json={"mode": "error", "status": 503, "times": 1},
                  timeout=5).raise_for_status()
    doc = command_request("disconnect", "UPM1", command_id="CMD-503")

    # When a command is refused with 503, Then the HES never received it
    assert command(hes, doc).status_code == 503
    assert status(hes, "CMD-503")["meters"] == {}

    # When it is down, Then a dropped command leaves no mark either, and the status is still answered
    requests.post(f"{hes.url}/_control", json={"mode": "down"}, timeout=5).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        command(hes, doc)
    assert status(hes, "CMD-503")["meters"] == {}
    assert requests.get(f"{hes.url}/meters/UPM1", timeout=5).json()["executions"] == []


def test_two_concurrent_posts_of_one_command_execute_each_meter_once(hes):
    # Given a latency so that two posts of the same command are in flight together
    set_meters(hes, latency_ms=300)
    doc = command_request("credit-update", "UPM1", command_id="CMD-TWICE", amount=10)

    # When both are posted at once
    threads = [post_in_background(hes, doc) for _ in range(2)]
    assert await_status(hes, "CMD-TWICE", "in-progress") == {"UPM1": {"status": "in-progress"}}
    for thread, _ in threads:
        thread.join(5)

    # Then one executed and the other answered its result as a duplicate
    results = [answers[0].json()["Payload"]["EndDeviceControls"]["results"][0] for _, answers in threads]
    assert sorted(r.get("duplicate", False) for r in results) == [False, True]
    assert requests.get(f"{hes.url}/meters/UPM1", timeout=5).json()["state"]["credit"] == 10
    assert stats(hes)["executions"] == 1
    assert status(hes, "CMD-TWICE")["meters"]["UPM1"]["status"] == "executed"
