"""Use cases 6, 7 and 8 on the shipped request routes: billing → gateway → MDMS → gateway → HES.

Real gateway, workers, RabbitMQ, MDMS and two HES stand-ins; a real HTTP
server in the test is the billing system's callback address.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from bus.requests import replies
from bus.requests.store import RequestStore, requests_path
from tests.integration.request_stack import IST, WAITING_ROUTES, ask, command, hes_asked, hes_control, meter, status
from tests.support import Proc, ROOT, free_port, gridbus, run_cli, serving, wait_for

pytestmark = pytest.mark.broker

# --- use case 7: on-demand reads ---------------------------------------------------------

def test_on_demand_read_across_two_hes_with_one_unreachable_meter_is_partial(rr):
    # Given meters on HES-A (1, 3) and HES-B (2), meter 3 unreachable, and a meter no HES serves
    hes_control(rr["hes-a"], unreachable=[meter(3)])
    # When billing asks for an on-demand read of all four
    answer = ask(rr, "billing-1/meter-readings", {"meters": [meter(1), meter(2), meter(3), "UPM99999999"]})
    # Then one Reply merges both HES' answers: PARTIAL, an error for each failed meter only
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["Reply"]["Result"] == "PARTIAL" and body["state"] == "replied"
    errors = {e["meter"]: e["code"] for e in body["Reply"]["Error"]}
    assert errors == {meter(3): "METER_UNREACHABLE", "UPM99999999": "UNKNOWN_METER"}
    read = {r["meter"] for r in body["Payload"]["MeterReadings"]["MeterReading"]}
    assert read == {meter(1), meter(2)}
    # and each HES was asked only for its own meters
    hes_a = requests.get(f"{rr['hes-a'].url}/stats", timeout=5).json()
    assert (hes_a["meters_read"], hes_a["unreachable_answers"]) == (1, 1)
    assert requests.get(f"{rr['hes-b'].url}/stats", timeout=5).json()["meters_read"] == 1
    # and the gateway's OpenAPI document describes the request endpoints
    spec = requests.get(f"{rr['url']}/openapi.json", timeout=10).json()
    assert {"/v1/requests/billing-1/meter-readings", "/v1/requests/{request_id}"} <= set(spec["paths"])


def test_a_sync_timeout_answers_504_and_the_late_reply_is_kept(rr):
    # Given HES-B answers after 5 s while billing waits 3 s
    hes_control(rr["hes-b"], latency_ms=5000)
    # When billing asks for a read of a meter on HES-B
    started = time.monotonic()
    answer = ask(rr, "billing-1/meter-readings", {"meters": [meter(2)]})
    # Then 504 after about 3 s, with the request id
    assert answer.status_code == 504, answer.text
    assert 2.5 < time.monotonic() - started < 6
    body = answer.json()
    request_id = body["request_id"]
    assert body["Reply"]["Error"][0]["code"] == "TIMEOUT"
    # and the late reply is kept: GET /v1/requests/{id} returns it once it arrives
    wait_for(lambda: status(rr, request_id)["state"] == "replied", 30, "the late reply")
    late = status(rr, request_id)
    assert late["reply"]["Reply"]["Result"] == "OK"
    assert [r["meter"] for r in late["reply"]["Payload"]["MeterReadings"]["MeterReading"]] == [meter(2)]
    # and another system cannot see it
    assert requests.get(f"{rr['url']}/v1/requests/{request_id}", timeout=10,
                        headers={"X-API-Key": rr["keys"]["hes-a"]}).status_code == 404


def test_a_reply_kept_by_another_gateway_answers_a_request_waiting_here(rr):
    # Given HES-B answers after 5 s, and billing waits (up to 3 s) for a read of a meter on it
    hes_control(rr["hes-b"], latency_ms=5000)
    store = RequestStore(requests_path(Path(rr["env"]["GRIDBUS_HOME"]) / "state"))
    answers = []
    asking = threading.Thread(target=lambda: answers.append(ask(rr, "billing-1/meter-readings",
                                                                {"meters": [meter(2)]})))
    asking.start()
    waiting = wait_for(lambda: [r for r in store.listing(kind="meter-readings", state="sent")
                                if r.system == "billing-1"], 10, "billing's request to be stored")
    # When a second gateway sharing the store consumes its reply and keeps it there
    kept_at = time.monotonic()
    reply = replies.reply("MeterReadings", waiting[0].id, "OK")
    reply["Payload"] = {"MeterReadings": {"MeterReading": [{"meter": meter(2), "Readings": []}]}}
    store.record_reply(waiting[0].id, reply, "replied", who="gateway-2")
    asking.join(10)
    # Then the request waiting here is answered with that reply within a poll or two, before its 3 s
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    assert time.monotonic() - kept_at < 1.5
    assert answers[0].json()["request_id"] == waiting[0].id
    assert answers[0].json()["Payload"]["MeterReadings"]["MeterReading"][0]["meter"] == meter(2)


class Callback:
    """The billing system's ReplyAddress: a real HTTP server that can be down."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/replies"
        self.received: list[tuple[str, dict]] = []
        self.server = None
        self.refused = 0
        self._down: socket.socket | None = None

    def go_down(self):
        """Down as a crashed server is: connections are taken and closed unanswered (counted,
        so that a test can wait for the bus to have tried rather than sleep)."""
        self._down = socket.create_server(("127.0.0.1", self.port))

        def refuse():
            while True:
                try:
                    conn, _ = self._down.accept()
                except OSError:  # closed by start()
                    return
                self.refused += 1
                conn.close()
        threading.Thread(target=refuse, daemon=True).start()

    def start(self):
        if self._down is not None:
            self._down.shutdown(socket.SHUT_RDWR)  # wakes the accept() above; close() alone does not
            self._down.close()
            self._down = None
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.headers.get("X-Request-ID"), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def test_an_async_reply_is_posted_to_the_callback_and_waits_while_it_is_down(rr):
    # Given the billing system's callback address is down
    callback = Callback()
    callback.go_down()
    try:
        # When billing asks asynchronously
        answer = ask(rr, "billing-1/meter-readings", {"meters": [meter(5), meter(6)]},
                     header={"AsyncReplyFlag": True, "ReplyAddress": callback.url})
        # Then 202 at once with the request id
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        wait_for(lambda: status(rr, request_id)["state"] == "replied", 30, "the reply in the store")
        # and the callback route has tried it twice (the first attempt and a retry from the broker)
        wait_for(lambda: callback.refused >= 2, 30, "two attempts at the callback while it is down")
        # When the callback comes back
        callback.start()
        # Then the reply is POSTed to it, once, with the request id
        wait_for(lambda: len(callback.received) >= 1, 60, "the reply at the callback")
        time.sleep(2)  # a quiet period, not a wait for something: a second POST would come within it
        assert len(callback.received) == 1
        got_id, reply = callback.received[0]
        assert got_id == request_id and reply["Reply"]["Result"] == "OK"
        assert {r["meter"] for r in reply["Payload"]["MeterReadings"]["MeterReading"]} == {meter(5), meter(6)}
    finally:
        callback.stop()


# --- use case 8: commands and their safety --------------------------------------------------

def executions(rr, m: str) -> list:
    hes = rr["hes-a"] if int(m[3:]) % 2 else rr["hes-b"]
    return requests.get(f"{hes.url}/meters/{m}", timeout=5).json()["executions"]


def approve_as(rr, user: str, request_id: str, password: str | None = None):
    return run_cli({**rr["env"], "GRIDBUS_OPERATOR_PASSWORD": password or f"{user.lower()}-long-password"},
                   "commands", "approve", request_id, "--user", user)


def test_a_disconnect_of_51_meters_waits_for_a_second_user(rr):
    meters = [meter(n) for n in range(1, 52)]
    # When alice at billing-1 asks to disconnect 51 meters
    answer = ask(rr, "billing-1/commands", command("cmd-51", "disconnect", meters), user="alice")
    # Then it is accepted as pending-approval, and nothing reaches any HES
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    assert answer.json()["state"] == "pending-approval"
    assert executions(rr, meter(1)) == []
    listed = run_cli(rr["env"], "commands", "list", "--state", "pending-approval").stdout
    assert request_id in listed
    # Given operator accounts: Alice and bob are approvers with passwords of their own
    for name in ("Alice", "bob"):
        added = run_cli(rr["env"], "operators", "add", name, "--role", "approver", "--password-stdin",
                        input=f"{name.lower()}-long-password\n")
        assert added.returncode == 0, added.stderr
    # When Alice, the requester under another spelling, tries to approve it  Then she is refused
    own = approve_as(rr, "Alice", request_id)
    assert own.returncode == 1 and "second, different user" in own.stderr
    # When bob gives a wrong password, or someone with no account tries  Then nothing is sent
    assert approve_as(rr, "bob", request_id, "guessed-password").returncode == 1
    assert approve_as(rr, "mallory", request_id, "mallory-long-password").returncode == 1
    assert status(rr, request_id)["state"] == "pending-approval"
    # When bob approves it  Then it is sent and executed on both HES, once per meter
    approved = approve_as(rr, "bob", request_id)
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: status(rr, request_id)["state"] == "executed", 30, "the approved command executed")
    done = status(rr, request_id)
    assert done["approved_by"] == "bob" and done["reply"]["Reply"]["Result"] == "OK"
    assert all(len(executions(rr, m)) == 1 for m in meters)
    # and the audit trail says who did what
    events = [(a["who"], a["event"]) for a in done["audit"]]
    assert events[:3] == [("alice", "pending-approval"), ("bob", "requested"), ("bob", "sent")]
    assert events[-1][1] == "executed"


def test_an_expired_command_is_never_sent(rr):
    # Given a disconnect of 51 meters that expires in 2 s
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).isoformat()
    meters = [meter(n) for n in range(101, 152)]
    answer = ask(rr, "billing-1/commands", command("cmd-exp", "disconnect", meters, expiresAt=expires))
    request_id = answer.json()["request_id"]
    # When bob approves it after its expiry
    wait_for(lambda: dt.datetime.now(dt.timezone.utc).isoformat() > expires, 10, "the command's expiry")
    run_cli(rr["env"], "operators", "add", "bob", "--role", "approver", "--password-stdin",
            input="bob-long-password\n")
    late = approve_as(rr, "bob", request_id)
    # Then the approval is refused, the command is expired, and no HES ever saw it
    assert late.returncode == 1 and "expired" in late.stderr
    expired = status(rr, request_id)
    assert expired["state"] == "expired"
    # (never sent: the audit says so, and so does every HES, which would have executed it at once)
    assert "sent" not in [a["event"] for a in expired["audit"]]
    assert all(executions(rr, m) == [] for m in meters)
    # and a command whose expiry is already past is refused at the door
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    refused = ask(rr, "billing-1/commands", command("cmd-past", "connect", [meter(1)], expiresAt=past))
    assert refused.status_code == 400 and refused.json()["Reply"]["Error"][0]["code"] == "EXPIRED"


def test_the_same_command_id_twice_executes_once_and_an_hes_key_cannot_command(rr):
    # Given the commands refused before this test (the stack is shared with the other request tests)
    store = RequestStore(requests_path(Path(rr["env"]["GRIDBUS_HOME"]) / "state"))
    refused_before = {r.id for r in store.listing(kind="commands", state="refused", limit=100_000)}
    # When billing sends the same command twice (a retry after a lost answer)
    first = ask(rr, "billing-1/commands", command("cmd-twice", "disconnect", [meter(7), meter(8)]))
    again = ask(rr, "billing-1/commands", command("cmd-twice", "disconnect", [meter(7), meter(8)]))
    # Then both answers are the same request, executed once on each meter
    assert first.status_code == 200 and first.json()["Reply"]["Result"] == "OK", first.text
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["request_id"] == first.json()["request_id"]
    assert len(executions(rr, meter(7))) == 1 and len(executions(rr, meter(8))) == 1
    assert requests.get(f"{rr['hes-a'].url}/stats", timeout=5).json()["command_requests"] == 1
    # When an HES credential asks for a disconnect  Then 403, and nothing is executed
    hes_key = ask(rr, "billing-1/commands", command("cmd-hes", "disconnect", [meter(9)]), system="hes-a",
                  user="intruder")
    assert hes_key.status_code == 403 and hes_key.json()["Reply"]["Error"][0]["code"] == "FORBIDDEN"
    # and the attempt is kept for the security officer: who, what, when, why refused (`commands list`)
    # (those refused before this test left out: this test's own refusals are exactly this one)
    listed = json.loads(run_cli(rr["env"], "commands", "list", "--state", "refused", "--json").stdout)
    assert [(c["request_id"], c["system"], c["requested_by"], c["action"], c["meters"]) for c in listed
            if c["request_id"] not in refused_before] == [
        (hes_key.json()["request_id"], "hes-a", "intruder", "disconnect", 1)]
    shown = json.loads(run_cli(rr["env"], "commands", "show", hes_key.json()["request_id"]).stdout)
    assert shown["reply"]["Reply"]["Error"][0]["code"] == "FORBIDDEN"
    assert [(a["who"], a["event"]) for a in shown["audit"]] == [("intruder", "refused")]
    # and a command without meters, or a load limit without a limit, is refused with the reason
    for bad, field in [({"commandId": "cmd-bad", "action": "disconnect"}, "meters"),
                       (command("cmd-bad2", "load-limit", [meter(9)]), "limit_kw")]:
        refused = ask(rr, "billing-1/commands", bad)
        assert refused.status_code == 400 and field in refused.json()["Reply"]["Error"][0]["reason"], refused.text
    assert executions(rr, meter(9)) == []
    # and a command id refused once (invalid) still works when the command is sent right
    fixed = ask(rr, "billing-1/commands", command("cmd-bad2", "load-limit", [meter(9)], params={"limit_kw": 2.5}))
    assert fixed.status_code == 200 and fixed.json()["Reply"]["Result"] == "OK", fixed.text


# --- use case 6: billing determinants --------------------------------------------------------

def _independent_determinants(csv_path: Path, meter_id: str, start: dt.datetime, end: dt.datetime) -> dict:
    """From the HES file itself: kWh/kVAh by TOD zone of the interval's start in IST (peak 18-22,
    off-peak 22-06, normal otherwise), MD = 4 × the largest 15-min energy, PF = kWh / kVAh."""
    rows = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["meter_serial"] != meter_id:
                continue
            t = dt.datetime.fromisoformat(row["interval_end"]).astimezone(dt.timezone.utc)
            if start < t <= end:
                rows[t] = row
    zones = {"peak": 0.0, "off-peak": 0.0, "normal": 0.0}
    kwh, kvah, exp = [], [], []
    for t, row in sorted(rows.items()):
        hour = (t - dt.timedelta(minutes=15)).astimezone(IST).hour
        zone = "peak" if 18 <= hour < 22 else "off-peak" if hour >= 22 or hour < 6 else "normal"
        zones[zone] += float(row["kwh_imp"])
        kwh.append((t, float(row["kwh_imp"])))
        kvah.append((t, float(row["kvah_imp"])))
        exp.append(float(row["kwh_exp"]))
    md = max(kwh, key=lambda x: x[1])
    total_kwh, total_kvah = math.fsum(v for _, v in kwh), math.fsum(v for _, v in kvah)
    return {"kwh": total_kwh, "zones": zones, "kvah": total_kvah, "export": math.fsum(exp),
            "md_kw": 4 * md[1], "md_at": md[0].strftime("%Y-%m-%dT%H:%M:%SZ"), "pf": total_kwh / total_kvah,
            "intervals": len(kwh)}


def test_billing_determinants_of_reads_ingested_through_use_case_1_match_an_independent_computation(rr):
    # Given a day of block-load reads for three meters, ingested through use case 1
    env = rr["env"]
    rr["procs"] += [Proc("worker", gridbus("worker", "-c", "1", "--routes", "hes-a-csv-to-mdms-1"), env,
                         rr["logs"]).start(),
                    Proc("ingress", gridbus("ingress", "--routes", "hes-a-csv-to-mdms-1"), env, rr["logs"]).start()]
    staging = rr["tmp"] / "staging"
    done = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging), "--profile",
                           "block-load", "--format", "csv", "--meters", "3", "--days", "1", "--start-date",
                           "2026-11-01", "--first-serial", "500", "--duplicate-share", "0", "--malformed-rows", "0",
                           "--seed", "3"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    source = Path(summary["path"])
    inbox = Path(env["GRIDBUS_INBOX"]) / "hes-a"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / source.name).write_bytes(source.read_bytes())
    wait_for(lambda: rr["mdms"].stats()["readings"] == summary["expected_readings"], 120, "the day's reads at MDMS-1")
    # When billing asks for the determinants of usage point UP-UPM00000500 for that IST day
    start = dt.datetime(2026, 11, 1, tzinfo=IST).astimezone(dt.timezone.utc)
    end = start + dt.timedelta(days=1)
    answer = ask(rr, "billing-1/billing-determinants", {"usagePoint": "UP-UPM00000500",
                                                        "from": start.isoformat(), "to": end.isoformat()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["Reply"]["Result"] == "OK", answer.text
    got = answer.json()["Payload"]["BillingDeterminants"]
    # Then they match what this test computes from the HES file itself
    want = _independent_determinants(source, "UPM00000500", start, end)
    assert got["intervals"] == want["intervals"] > 0
    assert got["kwh_import"]["total"] == pytest.approx(want["kwh"], abs=1e-6)
    for zone, value in want["zones"].items():
        assert got["kwh_import"]["zones"][zone] == pytest.approx(value, abs=1e-6), zone
    assert got["kvah_import"]["total"] == pytest.approx(want["kvah"], abs=1e-6)
    assert got["kwh_export"]["total"] == pytest.approx(want["export"], abs=1e-6)
    assert got["max_demand_kw"]["value"] == pytest.approx(want["md_kw"], abs=1e-6)
    assert got["max_demand_kw"]["at"] == want["md_at"]
    assert got["average_pf"] == pytest.approx(want["pf"], abs=1e-4)


# --- failures: the request worker killed, the broker restarted, mid-request ------------------

def reads_in_flight(rr, count: int, latency_ms: int) -> tuple[dict, list]:
    """``count`` sync on-demand reads from MDMS-1 (one meter each), returned once both HES
    (answering after ``latency_ms``) hold all of them: (answers by meter number, their threads)."""
    for name in ("hes-a", "hes-b"):
        hes_control(rr[name], latency_ms=latency_ms)
    answers: dict[int, requests.Response] = {}

    def read(n: int) -> None:
        answers[n] = ask(rr, "mdms-1/meter-readings", {"meters": [meter(n)]}, system="mdms-1")

    asking = [threading.Thread(target=read, args=(n,)) for n in range(1, count + 1)]
    for t in asking:
        t.start()
    wait_for(lambda: hes_asked(rr) >= count, 10, f"the HES to be asked for all {count} reads")
    return answers, asking


def test_a_request_worker_killed_mid_request_loses_no_request(rr):
    # Given both HES answering after 1.5 s, and 20 on-demand reads from MDMS-1 waiting on them
    answers, asking = reads_in_flight(rr, 20, latency_ms=1500)
    # When the request worker is killed (SIGKILL) with all 20 taken and unanswered, and started again
    rr["procs"][1].kill9()
    rr["procs"].append(Proc("worker-requests-2", gridbus("worker", "--pool", "asyncio", "--routes",
                                                         WAITING_ROUTES), rr["env"], rr["logs"]).start())
    for t in asking:
        t.join(30)
    # Then every read is answered OK within its 15 s wait: the broker redelivered what was unacked
    assert sorted(answers) == list(range(1, 21))
    assert all(a.status_code == 200 and a.json()["Reply"]["Result"] == "OK" for a in answers.values()), \
        [a.text[:200] for a in answers.values() if a.status_code != 200][:3]
    # and the HES were asked again for them (at least once, never lost)
    assert hes_asked(rr) >= 40


def test_a_read_is_answered_before_its_reply_is_committed_and_a_gateway_crash_then_loses_nothing(rr):
    # Given three on-demand reads from MDMS-1 stored, sent, and waiting on HES answering after 1 s
    answers, asking = reads_in_flight(rr, 3, latency_ms=1000)
    path = requests_path(Path(rr["env"]["GRIDBUS_HOME"]) / "state")
    store = RequestStore(path)
    # and another process holding the store's write lock, so no reply can be committed meanwhile
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # When the replies come back
        for t in asking:
            t.join(10)
        # Then every caller has its reply already
        assert sorted(answers) == [1, 2, 3]
        assert all(a.status_code == 200 and a.json()["Reply"]["Result"] == "OK" for a in answers.values()), \
            [a.text[:200] for a in answers.values()]
        ids = [a.json()["request_id"] for a in answers.values()]
        assert {store.get(i).state for i in ids} == {"sent"}  # not committed yet
        # When the gateway is killed (SIGKILL) before it could commit them
        rr["procs"][0].kill9()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Then the replies were never acked: a gateway started again keeps them from their queue
    port = rr["url"].rsplit(":", 1)[1]
    rr["procs"].append(Proc("gateway-2", gridbus("gateway", "--port", port), rr["env"], rr["logs"]).start())
    wait_for(lambda: {store.get(i).state for i in ids} == {"replied"}, 60, "the replies to be kept after the crash")
    assert all(store.get(i).reply["Reply"]["Result"] == "OK" for i in ids)


def test_a_read_answered_is_found_replied_by_a_get_right_after(rr):
    # Given a read answered synchronously by the gateway
    answer = ask(rr, "mdms-1/meter-readings", {"meters": [meter(1)]}, system="mdms-1")
    assert answer.status_code == 200, answer.text
    # When its caller asks the same gateway for it at once
    seen = status(rr, answer.json()["request_id"], "mdms-1")
    # Then the request is replied, with the reply the caller got
    assert seen["state"] == "replied"
    assert seen["reply"]["Reply"] == answer.json()["Reply"]


def test_a_gateway_deletes_reads_past_their_retention_and_keeps_commands(rr):
    # Given a read and a command, both answered
    read = ask(rr, "mdms-1/meter-readings", {"meters": [meter(1)]}, system="mdms-1")
    connect = ask(rr, "billing-1/commands", command("cmd-kept", "connect", [meter(3)]))
    assert read.status_code == 200 and connect.status_code == 200, (read.text, connect.text)
    read_id, command_id = read.json()["request_id"], connect.json()["request_id"]
    store = RequestStore(requests_path(Path(rr["env"]["GRIDBUS_HOME"]) / "state"))
    # When the gateway runs again keeping requests for 2 s, looking every 0.5 s
    rr["procs"][0].stop()
    port = rr["url"].rsplit(":", 1)[1]
    rr["procs"].append(Proc("gateway-2", gridbus("gateway", "--port", port, "--keep-requests", "2s",
                                                 "--prune-every", "0.5s"), rr["env"], rr["logs"]).start())
    wait_for(lambda: serving(f"{rr['url']}/health"), 30, "the gateway")
    # Then the read is deleted once it is older than that, and a GET no longer finds it
    wait_for(lambda: store.get(read_id) is None, 20, "the read past its retention to be deleted")
    gone = requests.get(f"{rr['url']}/v1/requests/{read_id}", headers={"X-API-Key": rr["keys"]["mdms-1"]},
                        timeout=10)
    assert gone.status_code == 404, gone.text
    # and the command, as old, stays with its audit trail
    assert store.get(command_id).state == "executed"
    assert [a["event"] for a in store.audit_of(command_id)][-1] == "executed"
    # and a read made now is answered and found, like any other
    fresh = ask(rr, "mdms-1/meter-readings", {"meters": [meter(1)]}, system="mdms-1")
    assert fresh.status_code == 200 and status(rr, fresh.json()["request_id"], "mdms-1")["state"] == "replied"


def test_a_broker_restart_mid_request_loses_no_request(rr, rabbitmq_proc):
    # Given both HES answering after 0.5 s, and 10 on-demand reads from MDMS-1 waiting on them
    answers, asking = reads_in_flight(rr, 10, latency_ms=500)
    # When the broker restarts under them
    rabbitmq_proc.rabbitctl_output("stop_app")
    rabbitmq_proc.rabbitctl_output("start_app")
    for t in asking:
        t.join(30)
    # Then every request ends replied OK: answered in its wait, or (504) kept for GET /v1/requests/{id}
    assert sorted(answers) == list(range(1, 11))
    for n, answer in answers.items():
        assert answer.status_code in (200, 504), answer.text[:300]
        request_id = answer.json()["request_id"]
        wait_for(lambda: status(rr, request_id, "mdms-1")["state"] == "replied", 60,
                 f"read {n} to be replied after the restart")
        assert status(rr, request_id, "mdms-1")["reply"]["Reply"]["Result"] == "OK"
    # and the gateway and the worker took new requests again without being restarted
    for name in ("hes-a", "hes-b"):
        hes_control(rr[name], latency_ms=0)
    # (a request that meets the bus still reconnecting is refused 503 with Retry-After, never lost)
    def read_ok() -> bool:
        after = ask(rr, "mdms-1/meter-readings", {"meters": [meter(1), meter(2)]}, system="mdms-1")
        assert after.status_code in (200, 503), after.text[:300]
        return after.status_code == 200 and after.json()["Reply"]["Result"] == "OK"
    wait_for(read_ok, 30, "a read after the restart")


def test_a_malformed_x_user_is_a_400_and_never_stored(rr):
    import http.client

    body = json.dumps({"Header": {}, "Request": {"commandId": "c-user", "action": "connect", "meters": [meter(1)]}})
    host, port = rr["url"].rsplit("/", 1)[1].split(":")
    # When billing asserts its user with two headers, 4 KB of name, or a byte outside ASCII
    # (a header over 8 KB never reaches the gateway: its HTTP parser answers 400 itself)
    for users in (["alice", "mallory"], ["x" * 4000], ["ren\xe9"]):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("POST", "/v1/requests/billing-1/commands")
        for name, value in (("X-API-Key", rr["keys"]["billing-1"]), ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), *(("X-User", u) for u in users)):
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders(body.encode())
        answer = conn.getresponse()
        # Then 400 INVALID_USER, and the command never ran
        assert answer.status == 400, answer.read()[:300]
        assert json.loads(answer.read())["Reply"]["Error"][0]["code"] == "INVALID_USER"
        conn.close()
    assert executions(rr, meter(1)) == []
