"""The ``amqp`` destination against a real RabbitMQ: Outage documents to the ADMS's own queue,
the ADMS's broker user that may read that queue and nothing else, and the ADMS stand-in that
keeps outages by mRID and survives whatever is put in its queue."""
from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
import requests

from bus.broker_admin import BrokerAdmin
from bus.envelope import Envelope
from bus.errors import BrokerError, TransientDeliveryError
from bus.messaging import ConfirmingPublisher
from bus.routes import load_routes
from bus.routes.model import Endpoint
from bus.transform import Outbound
from connectors import amqp_out
from tests.support import Mdms, Proc, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker

ROUTE_ID = "outages-to-adms"


def outage(mrid: str, n: int, verb: str, **fields) -> dict:
    """A correlator decision as bus/outages/outage.py makes it."""
    return {"type": "outage", "verb": verb, "noun": "Outage", "messageId": f"{mrid}/{n}",
            "Outage": {"mRID": mrid, "kind": "feeder", "Equipment": {"mRID": "FDR-0002", "kind": "Feeder"},
                       "actualPeriod": {"start": "2026-11-01T00:10:01Z", "end": None}, **fields}}


@dataclass
class AdmsStack:
    env: dict
    vhost: str
    port: int
    password: str
    api: BrokerAdmin
    management: str
    endpoint: Endpoint
    adms: Mdms

    @property
    def bus_url(self) -> str:
        return self.env["GRIDBUS_BROKER_URL"]

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.adms.url}{path}", timeout=5)

    def stats(self) -> dict:
        return self.get("/stats").json()

    def adms_channel(self):
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, self.vhost, pika.PlainCredentials("adms", self.password)))
        return conn, conn.channel()

    def guest_channel(self):
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, self.vhost))
        ch = conn.channel()
        ch.confirm_delivery()
        return conn, ch

    def consumed(self) -> bool:
        try:
            return self.api.queue("adms.outages").get("consumers", 0) > 0
        except BrokerError:
            return False


def write_route(folder: Path, destination: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "uc3-test.yaml"
    path.write_text(textwrap.dedent(f"""\
        use_case: 3
        routes:
          - id: {ROUTE_ID}
            source: {{system: adms, connector: subscription, topic: "Outage.#"}}
            method: pub-sub
            transform: [to_mdms_json]
            destinations:
              - {destination}
        """))
    return path


@pytest.fixture
def stack(bus_env, tmp_path, rabbitmq_proc, management_url):
    # Given a route delivering to the ADMS over AMQP, applied to the broker
    routes = tmp_path / "routes"
    write_route(routes, "{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, "
                        "queue: adms.outages}")
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    applied = run_cli(env, "routes", "apply")
    assert applied.returncode == 0, applied.stderr
    # and the ADMS's broker user, made by `gridbus broker users add adms`
    added = run_cli(env, "broker", "users", "add", "adms")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    # and the ADMS stand-in consuming its queue as that user (a small body limit for the hostile test)
    logs = tmp_path / "logs"
    logs.mkdir()
    url = f"amqp://adms:{password}@127.0.0.1:{rabbitmq_proc.port}/{vhost}"
    adms = Mdms(env, logs, name="adms", module="simulators.adms",
                args=("--amqp-url", url, "--amqp-queue", "adms.outages", "--amqp-max-body-kb", "256"))
    table = load_routes([routes], env=env)
    s = AdmsStack(env, vhost, rabbitmq_proc.port, password, BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost),
                  management_url, table.get(ROUTE_ID).destinations[0], adms)
    try:
        wait_for(s.consumed, 30, f"the ADMS stand-in to consume adms.outages (log: {adms.proc.log()[-1500:]})")
        yield s
    finally:
        adms.stop()


def test_outage_documents_published_through_the_connector_are_kept_by_mrid_and_repeats_dropped(stack):
    # When the correlator's decisions for two outages are published through the connector, one
    # batch on the process's own confirming publisher, with a redelivered copy of one message
    decisions = [outage("OUT-FDR-0002-000004", 1, "created", metersAffected=2140),
                 outage("OUT-FDR-0007-000001", 1, "created", metersAffected=12),
                 outage("OUT-FDR-0002-000004", 2, "changed", metersAffected=2140, outageKind="verified"),
                 outage("OUT-FDR-0002-000004", 2, "changed", metersAffected=2140, outageKind="verified"),
                 outage("OUT-FDR-0002-000004", 3, "closed", metersAffected=0, closedReason="restored")]
    with ConfirmingPublisher(stack.bus_url, "test-correlator") as publisher:
        for decision in decisions:
            publisher.publish(*amqp_out.document_message(stack.endpoint, decision))
        publisher.flush()
    # Then the ADMS has both outages by mRID, the latest document of each, every verb in order
    wait_for(lambda: stack.stats()["outage_messages"] + stack.stats()["duplicates"] == 5, 20, "5 messages taken")
    stats = stack.stats()
    assert (stats["outage_messages"], stats["duplicates"], stats["rejected_messages"]) == (4, 1, 0)
    assert (stats["outages"], stats["outages_open"]) == (2, 1)
    feeder = stack.get("/outages/OUT-FDR-0002-000004").json()
    assert [(m["verb"], m["messageId"]) for m in feeder["messages"]] == [
        ("created", "OUT-FDR-0002-000004/1"), ("changed", "OUT-FDR-0002-000004/2"),
        ("closed", "OUT-FDR-0002-000004/3")]
    assert feeder["Outage"]["closedReason"] == "restored" and feeder["open"] is False
    # and ?open=1 lists only the one still open
    assert [o["mRID"] for o in stack.get("/outages?open=1").json()["outages"]] == ["OUT-FDR-0007-000001"]
    assert stack.get("/outages").json()["count"] == 2
    assert stack.get("/outages/OUT-NOPE").status_code == 404
    # and the messages were persistent, with the document's id: the queue is empty once acked
    assert stack.api.queue("adms.outages").get("messages", 0) == 0
    # and /_reset forgets them
    requests.post(f"{stack.adms.url}/_reset", timeout=5).raise_for_status()
    assert stack.get("/outages").json() == {"outages": [], "count": 0} and stack.stats()["outage_messages"] == 0


def test_a_worker_route_delivers_through_deliver_with_confirms(stack, monkeypatch):
    # Given the connector as a worker calls it, on the bus's broker
    monkeypatch.setenv("GRIDBUS_BROKER_URL", stack.bus_url)
    monkeypatch.setenv("GRIDBUS_ENV_FILE", stack.env["GRIDBUS_ENV_FILE"])
    connector = amqp_out.AmqpDestination()
    doc = outage("OUT-FDR-0003-000001", 1, "created")
    envelope = Envelope(route_id=ROUTE_ID, source="outages", verb="created", noun="Outage",
                        message_id="OUT-FDR-0003-000001/1")
    # When it delivers one document, and the same message again (a retry after a lost ack)
    receipts = [connector.deliver(Outbound(json.dumps(doc).encode(), "application/json", "Outage"),
                                  envelope, stack.endpoint) for _ in range(2)]
    # Then each publish was confirmed, and the ADMS kept it once
    assert [r.status for r in receipts] == ["confirmed", "confirmed"]
    wait_for(lambda: stack.stats()["duplicates"] == 1, 20, "the repeat dropped")
    assert stack.stats()["outage_messages"] == 1
    assert stack.get("/outages/OUT-FDR-0003-000001").json()["verb"] == "created"


def test_an_unroutable_publish_fails_and_never_vanishes(stack, monkeypatch):
    monkeypatch.setenv("GRIDBUS_BROKER_URL", stack.bus_url)
    monkeypatch.setenv("GRIDBUS_ENV_FILE", stack.env["GRIDBUS_ENV_FILE"])
    doc = outage("OUT-FDR-0009-000001", 1, "created")
    unbound = Endpoint("adms", "amqp", {**stack.endpoint.options, "routing_key": "nobody-binds-this"})
    missing = Endpoint("adms", "amqp", {**stack.endpoint.options, "exchange": "adms.no-such-exchange"})
    # When a batch publishes with a key no queue is bound with  Then the flush raises
    with ConfirmingPublisher(stack.bus_url, "test-correlator") as publisher:
        publisher.publish(*amqp_out.document_message(unbound, doc))
        with pytest.raises(BrokerError, match="unroutable"):
            publisher.flush()
    # And through deliver, unroutable or to an exchange that does not exist: a transient error that
    # says the ADMS never had it
    connector = amqp_out.AmqpDestination()
    envelope = Envelope(route_id=ROUTE_ID, source="outages", verb="created", noun="Outage",
                        message_id="OUT-FDR-0009-000001/1")
    outbound = Outbound(json.dumps(doc).encode(), "application/json", "Outage")
    for endpoint, why in ((unbound, "unroutable"), (missing, "NotFound")):
        with pytest.raises(TransientDeliveryError, match=why) as failed:
            connector.deliver(outbound, envelope, endpoint)
        assert failed.value.maybe_sent is False and failed.value.destination == "adms"
    # and the next delivery, on a fresh channel, goes through
    assert connector.deliver(outbound, envelope, stack.endpoint).status == "confirmed"
    wait_for(lambda: stack.stats()["outage_messages"] == 1, 20, "the good one at the ADMS")


def test_the_adms_broker_user_consumes_its_queue_and_nothing_else(stack):
    # Given the ADMS user's permissions, exactly: configure nothing, write nothing, read its queue
    perms = requests.get(f"{stack.management}/api/permissions/{stack.vhost}/adms", auth=("guest", "guest"),
                         timeout=5).json()
    assert (perms["configure"], perms["write"], perms["read"]) == ("^$", "^$", r"^(adms\.outages)$")
    # and a message waiting in its queue (the stand-in is stopped so the test can consume it)
    stack.adms.stop()
    wait_for(lambda: not stack.consumed(), 20, "the stand-in's consumer gone")
    with ConfirmingPublisher(stack.bus_url, "test-correlator") as publisher:
        publisher.publish(*amqp_out.document_message(stack.endpoint, outage("OUT-FDR-0002-000001", 1, "created")))
        publisher.flush()
    # When the ADMS user consumes its queue with prefetch and manual acks  Then it gets the message
    conn, ch = stack.adms_channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume("adms.outages", lambda c, m, p, b: (got.append((p.message_id, b)), c.basic_ack(m.delivery_tag)))
    wait_for(lambda: conn.process_data_events(time_limit=0.2) or got, 10, "the outage consumed by the ADMS user")
    assert got[0][0] == "OUT-FDR-0002-000001/1"
    conn.close()
    # And every other operation is refused by the broker (403 ACCESS_REFUSED)
    refused = {
        "consume a gridbus route queue": lambda ch: ch.basic_consume(f"gridbus.route.{ROUTE_ID}", lambda *a: None),
        "read a dead-letter queue": lambda ch: ch.basic_get(f"gridbus.dlq.{ROUTE_ID}"),
        "read the unroutable queue": lambda ch: ch.basic_get("gridbus.unroutable"),
        "publish to its own exchange": lambda ch: ch.basic_publish("adms.outages", "outages", b"{}"),
        "publish to the default exchange": lambda ch: ch.basic_publish("", "adms.outages", b"{}"),
        "publish to the bus's ingress": lambda ch: ch.basic_publish("gridbus.ingress", f"route.{ROUTE_ID}", b"{}"),
        "declare a queue": lambda ch: ch.queue_declare("adms.mine", durable=True),
        "declare an exchange": lambda ch: ch.exchange_declare("adms.mine", "direct"),
        "bind its queue elsewhere": lambda ch: ch.queue_bind("adms.outages", "gridbus.events", "#"),
        "delete its queue": lambda ch: ch.queue_delete("adms.outages"),
    }
    for what, attempt in refused.items():
        conn, ch = stack.adms_channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            attempt(ch)
            ch.basic_qos(prefetch_count=1)  # a round trip: an asynchronous refusal arrives before it answers
        assert caught.value.reply_code == 403, f"{what}: {caught.value}"
        assert "ACCESS_REFUSED" in caught.value.reply_text, what
        conn.close()
    # and `gridbus broker users sync` re-applies the same grant, `list` shows it
    synced = run_cli(stack.env, "broker", "users", "sync")
    assert synced.returncode == 0 and "read adms.outages" in synced.stdout, synced.stdout + synced.stderr
    listed = json.loads(run_cli(stack.env, "broker", "users", "list", "--json").stdout)
    assert {"system": "adms", "write": "^$", "routing_keys": "-", "read": r"^(adms\.outages)$"} in listed


def test_the_stand_ins_consumer_rejects_what_it_cannot_use_and_keeps_going(stack):
    # When the ADMS's queue gets a non-JSON body, a body over its limit, an outage without an
    # mRID, JSON nested deeper than any parser should follow, and a JSON list
    conn, ch = stack.guest_channel()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    hostile = [b"{not json", b'{"Outage": {"mRID": "' + b"X" * (1024 * 1024) + b'"}}',
               json.dumps({"verb": "created", "messageId": "m-1", "Outage": {"kind": "feeder"}}).encode(),
               b"[" * 100_000 + b"]" * 100_000, b"[1, 2, 3]", b"\xff\xfe\x00garbage"]
    for body in hostile:
        ch.basic_publish("adms.outages", "outages", body, props)
    # and then a good one
    ch.basic_publish("adms.outages", "outages", json.dumps(outage("OUT-FDR-0001-000001", 1, "created")), props)
    conn.close()
    # Then each bad one is counted as rejected, the good one is kept, and the consumer is still there
    wait_for(lambda: stack.stats()["outage_messages"] == 1, 20, "the good outage after the bad ones")
    stats = stack.stats()
    assert stats["rejected_messages"] == len(hostile) and stats["amqp"]["connected"] is True
    reasons = [r["reason"] for r in stack.get("/outages/_rejected").json()["rejections"]]
    assert reasons[0].startswith("not JSON") and reasons[1].startswith("too large")
    assert reasons[2] == "no Outage.mRID"
    assert stack.api.queue("adms.outages").get("messages", 0) == 0
    assert stack.adms.proc.popen.poll() is None


def test_the_stand_in_reconnects_when_the_broker_drops_its_connection(stack):
    # Given the stand-in's connection, closed by the broker (as a broker restart does)
    auth = ("guest", "guest")

    def connection_names():
        found = requests.get(f"{stack.management}/api/vhosts/{stack.vhost}/connections", auth=auth, timeout=5).json()
        return [c["name"] for c in found if (c.get("client_properties") or {}).get("connection_name")
                == "adms-stand-in"]
    names = wait_for(connection_names, 20, "the stand-in's connection in the management API")
    for name in names:
        requests.delete(f"{stack.management}/api/connections/{requests.utils.quote(name, safe='')}", auth=auth,
                        timeout=5)
    # When an outage is published after that
    wait_for(lambda: stack.stats()["amqp"]["connections"] >= 2 and stack.consumed(), 30, "the stand-in back")
    with ConfirmingPublisher(stack.bus_url, "test-correlator") as publisher:
        publisher.publish(*amqp_out.document_message(stack.endpoint, outage("OUT-FDR-0004-000001", 1, "created")))
        publisher.flush()
    # Then the stand-in, reconnected, has it
    wait_for(lambda: stack.stats()["outage_messages"] == 1, 20, "the outage after the reconnect")


def test_the_routes_plan_is_in_sync_after_apply_and_a_bad_option_fails_validation_with_file_and_line(stack, tmp_path):
    # Given the applied routes  Then the plan (which now compares the ADMS's exchange and queue too) is in sync
    plan = run_cli(stack.env, "routes", "plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # When a route names a gridbus exchange as the ADMS's
    bad = write_route(tmp_path / "bad", "{system: adms, connector: amqp, exchange: gridbus.events, "
                                        "routing_key: outages}")
    validated = run_cli(stack.env, "routes", "validate", str(bad))
    # Then validation fails naming the file, line and reason
    assert validated.returncode == 1
    assert f"{bad}:8: exchange: exchange 'gridbus.events' is not the receiving system's" in validated.stdout + \
        validated.stderr
    assert os.path.exists(bad)


def test_a_raw_event_route_run_by_the_worker_can_deliver_over_amqp(bus_env, tmp_path, rabbitmq_proc):
    # Given a route taking raw HES alarms over AMQP and delivering the ADMS's raw events to its
    # own queue over AMQP (instead of REST), a worker and the ingress
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "raw.yaml").write_text(textwrap.dedent("""\
        use_case: 4
        routes:
          - id: raw-events-to-adms-mq
            source: {system: hes-a, connector: amqp-in, routing_key: hes-a.alarms, batch_window_ms: 100}
            method: push
            message: {noun: EndDeviceEvents}
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: adms, connector: amqp, exchange: adms.events, routing_key: events, queue: adms.events}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [Proc("worker", gridbus("worker", "-c", "2"), env, logs).start(),
             Proc("ingress", gridbus("ingress"), env, logs).start()]
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    api = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost)
    try:
        def ready():
            try:
                return api.queue("gridbus.in.raw-events-to-adms-mq").get("consumers", 0) > 0 and \
                    api.queue("gridbus.route.raw-events-to-adms-mq").get("consumers", 0) > 0
            except BrokerError:
                return False
        wait_for(ready, 60, f"worker and ingress (worker log: {procs[0].log()[-1500:]})")
        # When the HES publishes two alarms
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbitmq_proc.port, vhost))
        ch = conn.channel()
        ch.confirm_delivery()
        for n in range(2):
            ch.basic_publish("gridbus.hes-ingress", "hes-a.alarms", json.dumps(
                {"alarm_id": f"raw-{n}", "meter": f"UPM0001000{n}", "code": 101,
                 "occurred_at": "2026-11-01T10:15:02Z"}), pika.BasicProperties(delivery_mode=2))
        # Then the ADMS's queue (declared by the worker at start, as `routes apply` would) gets the
        # batch as one persistent EndDeviceEvents message with the route message's id
        def taken():
            method, props, payload = ch.basic_get("adms.events", auto_ack=True)
            return (props, payload) if method else None
        properties, body = wait_for(taken, 60, f"the raw events in adms.events (worker log: "
                                               f"{procs[0].log()[-1500:]})", every_s=0.5)
        conn.close()
        doc = json.loads(body)
        assert doc["Header"]["Noun"] == "EndDeviceEvents"
        assert len(doc["Payload"]["EndDeviceEvents"]["EndDeviceEvent"]) == 2
        assert properties.delivery_mode == 2 and properties.message_id == doc["Header"]["MessageID"]
        assert properties.content_type == "application/json"
        assert properties.headers["gridbus-noun"] == "EndDeviceEvents" and "traceparent" in properties.headers
    finally:
        for p in procs:
            p.stop()
