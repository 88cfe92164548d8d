"""The outage correlator's AMI pings end to end: a verify decision published on a request route
of its own (``bus-request`` source), run by a real request worker against two HES stand-ins
that simulate outages, the reply read from the asking process's queue with the bus's batch
consumer, and turned into the engine's answers (bus/outages/verify.py).

No gateway: the correlator is a bus process.  The stack (two HES, one request worker) is
built once per worker pool (the event loop, and Celery's threads) and reset before each test.
"""
from __future__ import annotations

import time
import uuid

import orjson
import pytest
import requests
import yaml

from bus import naming
from bus.broker_admin import BrokerAdmin
from bus.messaging import ConfirmingPublisher
from bus.messaging.connect import pika_connect
from bus.messaging.consumer import BatchConsumer, Delivery
from bus.outages import MemoryTopology, MeterEvent, OutageEngine
from bus.outages.verify import answers_of, is_reply, verify_message
from bus.routes import load_routes
from simulators.network import NetworkModel
from tests.support import (ROOT, Mdms, Proc, drop_vhost, env_of_its_own, gridbus, run_cli, start_gateway,
                           wait_for)

ROUTE_ID = "outages-verify-reads"
REPLIES = "test.outages.verify.replies"
T0 = 1_793_491_800.0          # 2026-11-01T00:10:00Z


def meter(n: int) -> str:
    return f"UPM{n:08d}"


M1, M2, M3, M4 = (meter(n) for n in range(1, 5))


def route_doc(timeout_s: float = 3, retry_for_s: float = 2) -> dict:
    """The route of routes/uc3-outages.yaml, with the HES's timeout and retry budget short."""
    return {"use_case": 3, "routes": [{
        "id": ROUTE_ID, "use_case": 7, "description": "The outage correlator's AMI pings",
        "source": {"system": "outages", "connector": "bus-request", "kind": "meter-readings", "timeout_s": 20},
        "method": "request-response",
        "destinations": [{"system": "hes", "connector": "hes-request", "operation": "meter-readings",
                          "assignment": "${GRIDBUS_METER_ASSIGNMENT}",
                          "hes": {"hes-a": "${HES_A_URL}", "hes-b": "${HES_B_URL}"},
                          "timeout_s": timeout_s, "retry_for_s": retry_for_s}],
        "retry": {"attempts": 2, "first_delay_s": 1, "max_delay_s": 5}}]}


def _model() -> NetworkModel:
    return NetworkModel.generate(6000, seed=11, dts_per_feeder=6, feeders_per_substation=5)


class PingStack:
    def __init__(self, env: dict, tmp, pool: str):
        self.env, self.tmp, self.pool = env, tmp, pool
        logs = self.logs = tmp / "logs"
        logs.mkdir()
        # meters 1-200 and every meter of the engine's network: odd serials on HES-A, even on HES-B
        self.topo = MemoryTopology.from_model(_model())
        network = [m for d in self.topo.dts.values() for m in (*d.meters, d.dt_meter)]
        network += [f.head_meter for f in self.topo.feeders.values()]
        rows = [meter(n) for n in range(1, 201)] + [m for m in network if m not in {meter(n) for n in range(1, 201)}]
        assignment = tmp / "assignment.csv"
        assignment.write_text("meter,hes\n" + "".join(f"{m},{'hes-a' if int(m[-1]) % 2 else 'hes-b'}\n" for m in rows))
        self.hes_of = {m: "hes-a" if int(m[-1]) % 2 else "hes-b" for m in rows}
        routes = tmp / "routes"
        routes.mkdir()
        (routes / "uc3-verify.yaml").write_text(yaml.safe_dump(route_doc()))
        self.hes = {name: Mdms(env, logs, name, "simulators.hes") for name in ("hes-a", "hes-b")}
        env.update({"GRIDBUS_ROUTES": str(routes), "GRIDBUS_METER_ASSIGNMENT": str(assignment),
                    "HES_A_URL": self.hes["hes-a"].url, "HES_B_URL": self.hes["hes-b"].url})
        self.route = load_routes([routes], env=env).get(ROUTE_ID)
        self.admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])
        args = ("worker", "--kind", "requests", "--pool", pool) + (("-c", "4") if pool == "threads" else ())
        self.worker = Proc(f"worker-requests-{pool}", gridbus(*args), env, logs).start()
        wait_for(self._consuming, 60, f"the request worker ({pool}) to consume")
        conn = pika_connect(env["GRIDBUS_BROKER_URL"], "test-replies")
        conn.channel().queue_declare(REPLIES, durable=True, arguments={"x-queue-type": "quorum"})
        conn.close()
        self.publisher = ConfirmingPublisher(env["GRIDBUS_BROKER_URL"], "test-outages")

    def _consuming(self) -> bool:
        try:
            return self.admin.queue(naming.route_queue_name(ROUTE_ID)).get("consumers", 0) > 0
        except Exception:
            return False

    def reset(self) -> None:
        assert self.worker.popen.poll() is None, self.worker.log()[-3000:]
        for hes in self.hes.values():
            hes.control(mode="healthy")
            requests.post(f"{hes.url}/_reset", timeout=5).raise_for_status()
        self.replies(expect=0, wait_s=0)          # nothing left over from the last test

    def out(self, *meters: str) -> None:
        """The HES stand-ins simulate an outage of ``meters`` (each at the HES that serves it)."""
        for name, hes in self.hes.items():
            mine = [m for m in meters if self.hes_of.get(m) == name]
            if mine:
                requests.post(f"{hes.url}/_outages", json={"meters": mine}, timeout=5).raise_for_status()

    def publish(self, message: tuple) -> None:
        self.publisher.publish(*message)
        self.publisher.flush(timeout_s=10)

    def publish_raw(self, body: bytes, **props) -> None:
        self.publish(("", REPLIES, body, {"delivery_mode": 2, **props}, {}))

    def replies(self, expect: int = 1, wait_s: float = 30) -> list[Delivery]:
        """What arrives on the reply queue, as the correlator's batch consumer gets it."""
        got: list[Delivery] = []
        consumer = BatchConsumer(self.env["GRIDBUS_BROKER_URL"], [REPLIES], got.extend, name="test-correlator",
                                 batch_max=100, window_s=0.05)
        deadline = time.monotonic() + wait_s
        while True:
            consumer.drain(idle_s=0.3, timeout_s=2)
            if len(got) >= expect or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if expect == 0:
            return got
        assert len(got) == expect, (f"{len(got)} replies, {expect} expected (worker log: "
                                    f"{self.worker.log()[-3000:]})")
        return got

    def ask(self, meters: list[str], request_id: str | None = None, **kw) -> tuple[str, dict | None, Delivery]:
        """Publish the verification of ``meters``; (request id, answers, the reply as delivered)."""
        decision = {"type": "verify", "requestId": request_id or f"OUT-TEST-{uuid.uuid4().hex[:8]}/verify",
                    "outage": "OUT-TEST", "equipment": "DT-TEST", "meters": meters}
        self.publish(verify_message(self.route, decision, REPLIES, **kw))
        [reply] = self.replies()
        assert is_reply(reply.properties, reply.headers, route_id=ROUTE_ID)
        rid, answers = answers_of(reply.properties, reply.headers, reply.body, asked=meters)
        assert rid == decision["requestId"]
        return rid, answers, reply

    def stop(self) -> None:
        self.publisher.close()
        self.worker.stop()
        for hes in self.hes.values():
            hes.stop()


@pytest.fixture(scope="module", params=["asyncio", "threads"])
def stack(request, rabbitmq_proc, management_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ping")
    env, name = env_of_its_own(rabbitmq_proc, management_url, tmp, prefix="ping")
    env = {k: v for k, v in env.items() if not k.startswith("GRIDBUS_DEV_NETWORK")}
    built = PingStack(env, tmp, request.param)
    yield built
    built.stop()
    drop_vhost(management_url, name)


@pytest.fixture
def ping(stack, request):
    # Celery's threads pool and the event loop reply through the same code (bus/worker/task.py
    # reply_message); the first test proves it on both, the others run on the default pool only,
    # which keeps this module's share of CI at about a minute
    if stack.pool == "threads" and request.node.originalname != "test_a_meter_out_is_dead_the_others_alive":
        pytest.skip("the threads pool's reply path is the event loop's: covered by the first test")
    stack.reset()
    return stack


def asked_at(hes) -> list[str]:
    return requests.get(f"{hes.url}/meters", timeout=5).json()["meters"]


def test_a_meter_out_is_dead_the_others_alive(ping):
    # Given meters M1..M3 with M2 out at its HES stand-in
    ping.out(M2)
    # When the verification of M1..M3 is published with reply_to the test queue
    rid, answers, reply = ping.ask([M1, M2, M3])
    # Then the worker's reply, parsed, says M2 is dead and the others alive
    assert answers == {M1: True, M2: False, M3: True}
    assert reply.properties["correlation_id"] == rid and reply.properties["app_id"] == ROUTE_ID


def test_meters_split_over_two_hes(ping):
    # Given M1..M4 (odd on HES-A, even on HES-B) with one meter out at each HES
    ping.out(M2, M3)
    # When they are verified
    _, answers, _ = ping.ask([M1, M2, M3, M4])
    # Then each HES was asked for its own meters only, and the answers are merged
    assert answers == {M1: True, M2: False, M3: False, M4: True}
    assert asked_at(ping.hes["hes-a"]) == [M1, M3] and asked_at(ping.hes["hes-b"]) == [M2, M4]


def test_the_same_decision_is_the_same_request(ping):
    # Given a verification published twice (a process that restarted before it saw the reply)
    ping.out(M1)
    decision = {"type": "verify", "requestId": "OUT-TWICE/verify", "outage": "OUT-TWICE", "meters": [M1, M3]}
    first, again = (verify_message(ping.route, decision, REPLIES) for _ in range(2))
    ping.publish(first)
    ping.publish(again)
    # Then both replies carry the same correlation, and say the same
    replies = ping.replies(expect=2)
    assert {r.properties["message_id"] for r in replies} == {"OUT-TWICE/verify.reply"}
    assert [answers_of(r.properties, r.headers, r.body) for r in replies] == \
        [("OUT-TWICE/verify", {M1: False, M3: True})] * 2


@pytest.mark.parametrize("control", [{"mode": "down"}, {"mode": "error", "status": 503}])
def test_an_hes_that_is_down_settles_nothing(ping, control):
    # Given HES-B down entirely (drops its connections, or answers 503 until the retry budget is spent)
    ping.hes["hes-b"].control(**control)
    # When meters of both HES are verified (M2 on HES-B; HES-A answers for M1 and M3)
    started = time.monotonic()
    rid, answers, reply = ping.ask([M1, M2, M3])
    # Then the reply settles nothing: an HES down is no evidence that its meters have no power
    assert answers is None
    codes = {e["meter"]: e["code"] for e in orjson.loads(reply.body)["Reply"]["Error"]}
    assert codes == {M2: "HES_UNREACHABLE" if control["mode"] == "down" else "HES_UNAVAILABLE"}
    assert time.monotonic() - started < 15


def test_every_hes_down_settles_nothing(ping):
    # Given both HES refusing everything
    for hes in ping.hes.values():
        hes.control(mode="error", status=503)
    # When meters are verified, Then nothing is settled (not "every meter dead")
    _, answers, _ = ping.ask([M1, M2])
    assert answers is None


def test_an_hes_that_hangs_settles_nothing(ping):
    # Given HES-A hanging on a request naming M3 (longer than the route's 3 s)
    requests.post(f"{ping.hes['hes-a'].url}/_meters", json={"timeout": [M3], "timeout_s": 5}, timeout=5)
    # When M1..M3 are verified, Then the TIMEOUT of HES-A's meters settles nothing
    _, answers, reply = ping.ask([M1, M2, M3])
    assert answers is None
    codes = {e["meter"]: e["code"] for e in orjson.loads(reply.body)["Reply"]["Error"]}
    assert codes == {M1: "TIMEOUT", M3: "TIMEOUT"}
    time.sleep(2.5)  # HES-A answers late; the next test starts with it idle


def test_a_late_ping_is_not_run(ping):
    # Given a verification that waited past its expiry before a worker took it
    _, answers, reply = ping.ask([M1, M2], expires_s=1, now=time.time() - 60)
    # Then it was never run (no HES asked) and it settles nothing
    assert answers is None
    assert reply.headers.get(naming.H_REPLY_STATE) == "expired"
    assert sum(h.stats()["arrivals"] for h in ping.hes.values()) == 0


def test_a_meter_not_asked_is_ignored(ping):
    # Given a reply on the queue that answers for a meter that was not asked as well
    reply = {"Header": {"Verb": "reply", "Noun": "MeterReadings", "CorrelationID": "OUT-X/verify"},
             "Reply": {"Result": "PARTIAL", "Error": [{"code": "METER_UNREACHABLE", "level": "FATAL",
                                                       "reason": "x", "meter": M2}]},
             "Payload": {"MeterReadings": {"MeterReading": [
                 {"meter": m, "readings": [{"readingType": "x", "timeStamp": "x", "value": 1}]} for m in (M1, M4)]}}}
    ping.publish_raw(orjson.dumps(reply), correlation_id="OUT-X/verify", message_id="OUT-X/verify.reply",
                     app_id=ROUTE_ID)
    [got] = ping.replies()
    # Then the meters asked are answered, the other one is left out
    assert answers_of(got.properties, got.headers, got.body, asked=[M1, M2]) == ("OUT-X/verify", {M1: True, M2: False})


def test_hostile_replies_never_crash(ping):
    # Given messages on the reply queue that no worker wrote
    rid = "OUT-H/verify"
    bodies = [b"not json", b"\xff\xfe garbage", b"{" * 50_000, b'{"Reply": {}}', b'{"Header": {}}', b"[]",
              b'{"Reply": {"Result": "OK"}, "Payload": {"MeterReadings": {"MeterReading": [{"meter": {"x": 1}}]}}}',
              b'{"Reply": {"Result": "OK"}, "pad": "' + b"x" * (2 << 20) + b'"}']
    for body in bodies:
        ping.publish_raw(body, correlation_id=rid, message_id=f"{rid}.reply")
    ping.publish_raw(b'{"Reply": {"Result": "OK"}}')                           # no correlation id at all
    got = ping.replies(expect=len(bodies) + 1)
    # Then each is an unsettled verification or a clear ValueError, never anything else
    settled = []
    for delivery in got:
        if not is_reply(delivery.properties, delivery.headers):
            with pytest.raises(ValueError):
                answers_of(delivery.properties, delivery.headers, delivery.body)
            continue
        settled.append(answers_of(delivery.properties, delivery.headers, delivery.body, asked=[M1]))
    assert settled == [(rid, None)] * len(bodies)


def test_the_engine_is_verified_or_closed_by_what_the_hes_says(ping):
    """The loop the correlator runs: decision → request → reply → engine.answer."""
    topo = ping.topo
    engine = OutageEngine(topo)
    engine.advance(T0)
    ids = iter(range(1, 10_000))
    # Given two DTs whose DT meters gasp alone: DT 1 really is out (its meters are out at their
    # HES), DT 2's DT meter failed (its consumers have power)
    real, false = topo.feeders["FDR-0003"].dts[3], topo.feeders["FDR-0004"].dts[3]
    gasps = [MeterEvent(topo.dts[d].dt_meter, 101, T0 + 1, T0 + 4, "hes-a", f"hes-a:{next(ids)}")
             for d in (real, false)]
    out = engine.process(gasps) + engine.advance(T0 + 20)
    requests_ = {d["equipment"]: d for d in out if d["type"] == "verify"}
    assert set(requests_) == {real, false}
    ping.out(*topo.dts[real].meters)
    # When each verification goes through the bus and its answers back to the engine
    decided = []
    for equipment, decision in requests_.items():
        ping.publish(verify_message(ping.route, decision, REPLIES))
        [reply] = ping.replies()
        rid, answers = answers_of(reply.properties, reply.headers, reply.body)
        assert rid == decision["requestId"] and set(answers) == set(decision["meters"])
        decided += engine.answer(rid, answers)
    # Then the real one is verified and the false one closed as a false alarm
    docs = {(d["Outage"]["Equipment"]["mRID"], d["verb"]): d["Outage"] for d in decided if d["type"] == "outage"}
    assert docs[(real, "changed")]["outageKind"] == "verified"
    assert docs[(false, "closed")]["closedReason"].startswith("false alarm: 3 of 3")


def test_the_gateway_does_not_expose_it(bus_env, tmp_path):
    # Given the route beside the shipped request routes, and a gateway key for its system
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "uc3-verify.yaml").write_text(yaml.safe_dump(route_doc()))
    (routes / "uc6-7-8-requests.yaml").write_text((ROOT / "routes" / "uc6-7-8-requests.yaml").read_text())
    assignment = tmp_path / "assignment.csv"
    assignment.write_text(f"meter,hes\n{M1},hes-a\n")
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes), "GRIDBUS_METER_ASSIGNMENT": str(assignment),
           "HES_A_URL": "http://127.0.0.1:9", "HES_B_URL": "http://127.0.0.1:9", "MDMS_1_URL": "http://127.0.0.1:9"}
    key = run_cli(env, "gateway", "keys", "add", "outages").stdout.strip()
    (tmp_path / "logs").mkdir()
    gateway, url = start_gateway(env, tmp_path / "logs")
    try:
        # When the system asks through the gateway, at any path the route could have
        body = {"Header": {"MessageID": "m-1"}, "Request": {"meters": [M1]}}
        for path in ("outages/meter-readings", "outages-verify-reads", "outages"):
            answer = requests.post(f"{url}/v1/requests/{path}", json=body, timeout=10, headers={"X-API-Key": key})
            # Then no route takes it, and the API documents no such path
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert not [p for p in requests.get(f"{url}/openapi.json", timeout=10).json()["paths"] if "outages" in p]
        assert "outages-verify-reads" not in gateway.log()
    finally:
        gateway.stop()
    # And the route alone gives the gateway nothing to serve
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "uc3-verify.yaml").write_text(yaml.safe_dump(route_doc()))
    refused = run_cli({**env, "GRIDBUS_ROUTES": str(alone)}, "gateway", "--port", "9")
    assert refused.returncode != 0 and "nothing for the gateway to serve" in refused.stderr
