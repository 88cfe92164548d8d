"""Requests and commands under faults, checked against what the HES stand-ins really did.

Every test here injects a fault into the billing → gateway → MDMS → gateway → HES
path (a process killed with SIGKILL mid-flight, an HES slower than the bus's
timeout, an HES answering 503 for a while) and then compares every caller's
final answer with the ground truth: the executions each HES stand-in recorded
(``GET /meters/<m>``) and the register values it serves
(``simulators.hes.register_value``).  The counts that matter: wrong answers,
commands executed twice, commands executed after their expiry; each must be 0.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import requests

from simulators.hes import DEFAULT_READING_TYPES, register_value
from tests.integration.request_stack import WAITING_ROUTES, ask, command, hes_asked, hes_control, meter
from tests.support import Mdms, Proc, gridbus, run_cli, serving, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]
SETTLED = {"executed", "failed", "expired", "replied", "rejected", "cancelled", "refused"}


def hes_of(rr, m: str):
    return rr["hes-a"] if int(m[3:]) % 2 else rr["hes-b"]


def executions(rr, m: str, command_id: str) -> list[dict]:
    done = requests.get(f"{hes_of(rr, m).url}/meters/{m}", timeout=5).json()["executions"]
    return [e for e in done if e["commandId"] == command_id]


def found(rr, system: str, key: str, name: str = "messageId") -> list[dict]:
    answer = requests.get(f"{rr['url']}/v1/requests", params={name: key}, timeout=10,
                          headers={"X-API-Key": rr["keys"][system]})
    assert answer.status_code == 200, answer.text
    return answer.json()["requests"]


def outcome(rr, system: str, key: str, name: str = "messageId", timeout_s: float = 120) -> dict:
    """The caller's request with this id, once it has its final outcome (found by the id alone)."""
    def settled():
        hits = found(rr, system, key, name)
        return hits[0] if hits and hits[0]["state"] in SETTLED else None
    return wait_for(settled, timeout_s, f"{name} {key} of {system} to be settled: {found(rr, system, key, name)}")


def in_threads(calls: dict) -> dict:
    """Run each call in a thread at once; {key: its HTTP answer, or the exception}."""
    results: dict = {}

    def run(key, call):
        try:
            results[key] = call()
        except requests.RequestException as exc:
            results[key] = exc
    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    return results, threads


def restart_request_worker(rr, name: str = "worker-requests-2") -> None:
    rr["procs"][1].kill9()
    rr["procs"].append(Proc(name, gridbus("worker", "--pool", "asyncio", "--routes", WAITING_ROUTES),
                            rr["env"], rr["logs"]).start())


def wrong_reads(reply: dict, meters: list[str], unreachable: set[str]) -> list[str]:
    """How a read's reply differs from the HES's truth (values and failed meters)."""
    wrong = []
    got = {b["meter"]: b for b in (reply.get("Payload") or {}).get("MeterReadings", {}).get("MeterReading", [])}
    errors = {e.get("meter") for e in reply["Reply"].get("Error") or []}
    for m in meters:
        if m in unreachable:
            if m in got or m not in errors:
                wrong.append(f"{m}: unreachable, answered {'read' if m in got else 'without an error'}")
            continue
        values = {r["readingType"]: r["value"] for r in (got.get(m) or {}).get("readings", [])}
        expected = {rt: register_value(m, rt) for rt in DEFAULT_READING_TYPES}
        if values != expected:
            wrong.append(f"{m}: read {values}, the HES serves {expected}")
    expected_result = ("OK" if not unreachable & set(meters) else
                       "FAILED" if set(meters) <= unreachable else "PARTIAL")
    if reply["Reply"].get("Result") != expected_result:
        wrong.append(f"Result {reply['Reply'].get('Result')}, the HES's answers make it {expected_result}")
    return wrong


def wrong_command(rr, request: dict, command_id: str, meters: list[str], expires: float | None = None) -> list[str]:
    """How a command's settled record differs from what the HES did: a meter reported executed
    that was not (or the other way), one executed twice, one executed after the expiry."""
    wrong = []
    reply = request["reply"] or {}
    results = (reply.get("Payload") or {}).get("EndDeviceControls", {}).get("results", [])
    reported = {r["meter"] for r in results if r.get("status") == "executed"}
    failed = {e.get("meter") for e in (reply.get("Reply") or {}).get("Error") or []}
    for m in meters:
        done = executions(rr, m, command_id)
        if len(done) > 1:
            wrong.append(f"{m}: executed {len(done)} times")
        if done and expires is not None:
            at = dt.datetime.strptime(done[0]["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
            if at.timestamp() > expires:
                wrong.append(f"{m}: executed at {done[0]['at']}, after its expiry")
        if bool(done) != (m in reported):
            wrong.append(f"{m}: the HES {'executed' if done else 'did not execute'} it; the answer says "
                         f"{'executed' if m in reported else 'not executed'}")
        if bool(done) == (m in failed):
            wrong.append(f"{m}: {'executed but' if done else 'not executed and not'} reported failed")
    executed_all, executed_none = reported >= set(meters), not reported
    expected_state = "executed" if not executed_none else "failed"
    expected_result = "OK" if executed_all else "FAILED" if executed_none else "PARTIAL"
    if request["state"] != expected_state or reply.get("Reply", {}).get("Result") != expected_result:
        wrong.append(f"state {request['state']} Result {reply.get('Reply', {}).get('Result')}; "
                     f"the HES's executions make it {expected_state} {expected_result}")
    return wrong


def test_a_request_worker_killed_with_reads_and_commands_in_flight_gives_no_wrong_answer(rr):
    # Given both HES answering after 4 s, meters 3, 7, 11, 15, 19 (HES-A) unreachable
    unreachable = {meter(n) for n in (3, 7, 11, 15, 19)}
    for name in ("hes-a", "hes-b"):
        hes_control(rr[name], latency_ms=4000, unreachable=sorted(unreachable))
    # and billing-1 asking 50 two-hop on-demand reads and 10 disconnects, each with its own id
    reads = {f"read-{n}": [meter(n), meter(n + 1)] for n in range(1, 101, 2)}
    disconnects = {f"cut-{n}": [meter(n), meter(n + 100)] for n in range(11, 21)}
    calls = {key: (lambda key=key, ms=ms: ask(rr, "billing-1/meter-readings", {"meters": ms},
                                              header={"MessageID": key}))
             for key, ms in reads.items()}
    calls.update({key: (lambda key=key, ms=ms: ask(rr, "billing-1/commands", command(key, "disconnect", ms)))
                  for key, ms in disconnects.items()})
    answers, threads = in_threads(calls)
    # When the request worker is killed (SIGKILL) once both HES hold requests of it in flight,
    # and started again
    wait_for(lambda: hes_asked(rr) >= 20, 30, "the HES to hold requests in flight")
    restart_request_worker(rr)
    for t in threads:
        t.join(60)
    # Then no caller was given an answer without an outcome: every 200 carries a Result and
    # a payload or errors; the others are 504 pending with their request id
    for key, answer in answers.items():
        assert not isinstance(answer, Exception), f"{key}: {answer}"
        body = answer.json()
        assert answer.status_code in (200, 504), f"{key}: {answer.status_code} {answer.text[:300]}"
        if answer.status_code == 200:
            assert body["Reply"].get("Result") and (body.get("Payload") or body["Reply"].get("Error")), body
        else:
            assert body["pending"] and "Result" not in body["Reply"], body
    # and every read, found by its MessageID alone, answers what the HES serve
    wrong = {}
    for key, ms in reads.items():
        request = outcome(rr, "billing-1", key)
        wrong[key] = wrong_reads(request["reply"], ms, unreachable)
    # and every disconnect's record says of each meter exactly what its HES did: executed once,
    # or failed METER_UNREACHABLE and still connected
    for key, ms in disconnects.items():
        request = outcome(rr, "billing-1", key, "commandId")
        wrong[key] = wrong_command(rr, request, key, ms)
    wrong = {k: v for k, v in wrong.items() if v}
    assert wrong == {}, wrong
    cut = [m for ms in disconnects.values() for m in ms if m not in unreachable]
    assert all(requests.get(f"{hes_of(rr, m).url}/meters/{m}", timeout=5).json()["state"]["relay"] == "disconnected"
               for m in cut)


def test_an_hes_answering_503_for_a_while_is_asked_again_and_a_command_it_never_took_can_be_resent(rr):
    # Given HES-A answering 503 (Retry-After 1) to its next 3 requests
    requests.post(f"{rr['hes-a'].url}/_control", json={"mode": "error", "status": 503, "times": 3,
                                                        "retry_after_s": 1}, timeout=5).raise_for_status()
    # When billing sends a connect of a meter on HES-A
    answer = ask(rr, "billing-1/commands", command("conn-503", "connect", [meter(1)]))
    # Then the bus asked again after the 503s, and the command was executed once: OK
    assert answer.status_code == 200, answer.text
    assert answer.json()["Reply"]["Result"] == "OK" and answer.json()["state"] == "executed"
    assert len(executions(rr, meter(1), "conn-503")) == 1
    # Given HES-A answering 503 until further notice
    requests.post(f"{rr['hes-a'].url}/_control", json={"mode": "error", "status": 503, "retry_after_s": 1},
                  timeout=5).raise_for_status()
    # When billing sends a disconnect that expires in 4 s
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    refused = ask(rr, "billing-1/commands", command("cut-503", "disconnect", [meter(3)], expiresAt=expires))
    # Then it fails HES_UNAVAILABLE once the HES was asked until the expiry, and nothing ran
    assert refused.status_code == 200, refused.text
    assert refused.json()["state"] == "failed"
    assert {e["code"] for e in refused.json()["Reply"]["Error"]} == {"HES_UNAVAILABLE"}
    assert executions(rr, meter(3), "cut-503") == []
    # When HES-A recovers and billing sends the same command id again
    requests.post(f"{rr['hes-a'].url}/_control", json={"mode": "healthy"}, timeout=5).raise_for_status()
    again = ask(rr, "billing-1/commands", command("cut-503", "disconnect", [meter(3)]))
    # Then it runs (transient was not final) and is executed once
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "executed" and not again.json().get("duplicate"), again.json()
    assert len(executions(rr, meter(3), "cut-503")) == 1
    # and both records are kept: the failed one gave up its id, with an audit row saying so
    hits = found(rr, "billing-1", "cut-503", "commandId")
    assert [h["state"] for h in hits] == ["executed"]
    # and the same id with a different command is refused 409, not answered with the old result
    conflict = ask(rr, "billing-1/commands", command("cut-503", "disconnect", [meter(5)]))
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["Reply"]["Error"][0]["code"] == "ID_CONFLICT"
    assert executions(rr, meter(5), "cut-503") == []


def test_an_hes_slower_than_the_timeout_is_asked_what_became_of_the_command(rr):
    # Given HES-A answering after 12 s, longer than the bus waits for it (10 s)
    hes_control(rr["hes-a"], latency_ms=12000)
    # When billing sends a disconnect that expires in 6 s, and one that expires in 90 s
    soon = time.time() + 6
    at = dt.datetime.fromtimestamp(soon, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    answers, threads = in_threads({
        "late-cut": lambda: ask(rr, "billing-1/commands", command("late-cut", "disconnect", [meter(1)],
                                                                 expiresAt=at)),
        "slow-cut": lambda: ask(rr, "billing-1/commands", command("slow-cut", "disconnect", [meter(3)])),
    })
    for t in threads:
        t.join(60)
    # Then the first is never executed (the HES refuses it past its expiry) and its record says so
    late = outcome(rr, "billing-1", "late-cut", "commandId")
    assert executions(rr, meter(1), "late-cut") == []
    assert late["state"] == "failed", late
    assert {e["code"] for e in late["reply"]["Reply"]["Error"]} == {"EXPIRED"}
    # and the second, executed by the HES after the bus stopped waiting, is recorded executed:
    # the bus asked the HES for its status instead of calling it failed
    slow = outcome(rr, "billing-1", "slow-cut", "commandId")
    assert wrong_command(rr, slow, "slow-cut", [meter(3)]) == []
    assert slow["state"] == "executed"
    assert requests.get(f"{rr['hes-a'].url}/meters/{meter(3)}", timeout=5).json()["state"]["relay"] == "disconnected"
    assert wrong_command(rr, late, "late-cut", [meter(1)], soon) == []


def test_a_gateway_killed_with_callers_waiting_lets_each_find_its_outcome_by_its_own_id(rr):
    # Given both HES answering after 3 s and 20 billing reads waiting, each with its MessageID
    for name in ("hes-a", "hes-b"):
        hes_control(rr[name], latency_ms=3000)
    reads = {f"gw-read-{n}": [meter(n)] for n in range(1, 21)}
    answers, threads = in_threads({key: (lambda key=key, ms=ms: ask(rr, "billing-1/meter-readings",
                                                                    {"meters": ms}, header={"MessageID": key}))
                                   for key, ms in reads.items()})
    wait_for(lambda: sum(h.stats()["arrivals"] for h in (rr["hes-a"], rr["hes-b"])) >= 20, 20,
             "the HES to be asked for every read")
    # When the gateway is killed (SIGKILL) and started again
    rr["procs"][0].kill9()
    for t in threads:
        t.join(30)
    port = rr["url"].rsplit(":", 1)[1]
    rr["procs"].append(Proc("gateway-2", gridbus("gateway", "--port", port), rr["env"], rr["logs"]).start())
    wait_for(lambda: serving(f"{rr['url']}/health"), 30, "the gateway")
    # Then the callers still waiting lost their connection without a request id (one that
    # waited its 3 s before the kill, on a busy machine, had a 504 pending with its id)
    lost = [key for key, a in answers.items() if isinstance(a, Exception)]
    assert lost, answers
    assert all(a.status_code == 504 and a.json()["pending"] for a in answers.values() if not isinstance(a, Exception))
    # and each finds its outcome by its own MessageID: the values its HES serves
    wrong = {key: wrong_reads(outcome(rr, "billing-1", key)["reply"], ms, set()) for key, ms in reads.items()}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_an_mdms_killed_with_commands_in_flight_gives_no_wrong_answer_and_no_double_execution(rr):
    # Given both HES answering after 3 s, and 6 connects from billing-1 through MDMS-1
    for name in ("hes-a", "hes-b"):
        hes_control(rr[name], latency_ms=3000)
    connects = {f"mdms-kill-{n}": [meter(n), meter(n + 1)] for n in range(31, 43, 2)}
    answers, threads = in_threads({key: (lambda key=key, ms=ms: ask(rr, "billing-1/commands",
                                                                    command(key, "connect", ms)))
                                   for key, ms in connects.items()})
    wait_for(lambda: sum(h.stats()["arrivals"] for h in (rr["hes-a"], rr["hes-b"])) >= 6, 20,
             "the HES to be asked for every command")
    # When the MDMS stand-in is killed (SIGKILL) and started again on its port
    mdms: Mdms = rr["mdms"]
    mdms.proc.kill9()
    rr["mdms"] = restarted = Mdms.__new__(Mdms)
    restarted.port, restarted.url = mdms.port, mdms.url
    restarted.proc = Proc("mdms-1-again", [*mdms.proc.argv], rr["env"], rr["logs"]).start()
    rr["procs"].append(restarted.proc)  # stopped with the stack
    wait_for(restarted._healthy, 20, "the MDMS to listen again")
    for t in threads:
        t.join(60)
    # Then each command's record, found by its command id, says what the HES did, once
    wrong = {key: wrong_command(rr, outcome(rr, "billing-1", key, "commandId"), key, ms)
             for key, ms in connects.items()}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_both_hops_of_a_request_are_traced_at_the_gateway_under_one_correlation_id(rr):
    # Given the trace recorder running
    recorder = Proc("recorder", gridbus("recorder"), rr["env"], rr["logs"]).start()
    rr["procs"].append(recorder)
    # When billing asks a two-hop read without a CorrelationID
    answer = ask(rr, "billing-1/meter-readings", {"meters": [meter(1)]})
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    # Then the trace of its request id holds both hops, each received, published and replied at
    # the gateway and consumed by the worker, all under the first hop's request id as correlation
    def both_hops():
        events = json.loads(run_cli(rr["env"], "trace", request_id, "--json").stdout or "[]")
        routes = {(e.get("route"), e["kind"]) for e in events}
        wanted = {(r, k) for r in ("billing-1-reads", "mdms-1-reads-to-hes")
                  for k in ("received", "published", "consumed", "replied")}
        return events if wanted <= routes else None
    events = wait_for(both_hops, 30, "both hops in the trace")
    assert {e["correlation_id"] for e in events if e.get("route") in ("billing-1-reads", "mdms-1-reads-to-hes")} \
        == {request_id}
