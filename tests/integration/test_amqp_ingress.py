"""AMQP ingress: a plain pika client publishes raw JSON alarms; the ingress batches them onto the route."""
from __future__ import annotations

import json
import textwrap

import pika
import pytest

from bus.broker_admin import BrokerAdmin
from tests.support import Mdms, Proc, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker


def test_raw_alarms_over_amqp_arrive_in_batches_and_bad_ones_are_dead_lettered(bus_env, tmp_path, rabbitmq_proc):
    # Given a route taking HES-A alarms over AMQP, a worker and the ingress
    logs = tmp_path / "logs"
    logs.mkdir()
    mdms = Mdms(bus_env, logs)
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "mq.yaml").write_text(textwrap.dedent(f"""\
        use_case: 2
        routes:
          - id: hes-a-alarms-mq
            source: {{system: hes-a, connector: amqp-in, routing_key: hes-a.alarms, batch_max: 500, batch_window_ms: 200}}
            method: push
            message: {{noun: EndDeviceEvents}}
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "{mdms.url}/messages"}}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    procs = [Proc("worker", gridbus("worker", "-c", "2"), env, logs).start(),
             Proc("ingress", gridbus("ingress"), env, logs).start()]
    try:
        vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        api = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost)

        def bridging():  # the ingress consumes its queue: exchange, queue and binding all exist
            try:
                return api.queue("gridbus.in.hes-a-alarms-mq").get("consumers", 0) > 0
            except Exception:
                return False
        wait_for(bridging, 60, "the ingress to consume its inbound queue")
        # When a plain AMQP client (not gridbus code) publishes 2,000 alarms one by one, and one non-JSON
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbitmq_proc.port, vhost))
        ch = conn.channel()
        ch.confirm_delivery()
        for n in range(2000):
            alarm = {"alarm_id": f"mq-{n}", "meter": f"UPM{n:08d}", "code": 101,
                     "occurred_at": "2026-11-01T10:15:02+05:30"}
            ch.basic_publish("gridbus.hes-ingress", "hes-a.alarms", json.dumps(alarm),
                             pika.BasicProperties(delivery_mode=2, content_type="application/json"))
        ch.basic_publish("gridbus.hes-ingress", "hes-a.alarms", b"{not json",
                         pika.BasicProperties(delivery_mode=2, message_id="broken-1"))
        conn.close()
        # Then every alarm reaches the MDMS, in batches rather than one task per alarm
        wait_for(lambda: mdms.stats()["events"] == 2000, 60, "2,000 events at the MDMS")
        # (20 alarms a post or more: a loaded 2-core CI machine publishes slower than the 200 ms window
        # fills, and once made 44 posts; one task per alarm would be 2,000)
        assert mdms.stats()["posts"] <= 100
        # and the non-JSON message is a dead letter with its reason
        listed = json.loads(run_cli(env, "dlq", "list", "--group", "--json").stdout)
        assert [(g["count"], g["error_class"]) for g in listed] == [(1, "DecodeError")]
    finally:
        for p in procs:
            p.stop()
        mdms.stop()


def test_each_system_has_a_broker_user_that_may_publish_only_its_own_routing_keys(bus_env, tmp_path, rabbitmq_proc):
    # Given AMQP routes for HES-A and HES-B, declared on the broker
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "mq.yaml").write_text(textwrap.dedent("""\
        use_case: 2
        routes:
          - id: hes-a-alarms-mq
            source: {system: hes-a, connector: amqp-in, routing_key: hes-a.alarms}
            method: push
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}
          - id: hes-b-alarms-mq
            source: {system: hes-b, connector: amqp-in, routing_key: hes-b.alarms}
            method: push
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    run_cli(env, "routes", "apply")
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    # When HES-A gets its broker user
    password = run_cli(env, "broker", "users", "add", "hes-a").stdout.strip()
    listed = run_cli(env, "broker", "users", "list").stdout
    assert "hes-a" in listed and password not in listed

    def channel():
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", rabbitmq_proc.port, vhost, pika.PlainCredentials("hes-a", password)))
        ch = conn.channel()
        ch.confirm_delivery()
        return conn, ch

    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    alarm = json.dumps({"alarm_id": "a1", "meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02Z"})
    api = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost)
    # Then a plain pika publish with its own routing key is confirmed and lands in its route's inbound queue
    conn, ch = channel()
    ch.basic_publish("gridbus.hes-ingress", "hes-a.alarms", alarm, props)
    conn.close()
    wait_for(lambda: api.queue("gridbus.in.hes-a-alarms-mq").get("messages", 0) == 1, 20, "the raw alarm queued")
    # and the broker refuses HES-B's routing key, the route exchange itself, and reading a queue
    for attempt in (lambda c: c.basic_publish("gridbus.hes-ingress", "hes-b.alarms", alarm, props),
                    lambda c: c.basic_publish("gridbus.ingress", "route.hes-a-alarms-mq", alarm, props),
                    lambda c: c.basic_get("gridbus.in.hes-a-alarms-mq")):
        conn, ch = channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            attempt(ch)
        assert refused.value.reply_code == 403, refused.value
        conn.close()
    # and nothing of those reached HES-B's queue
    assert api.queue("gridbus.in.hes-b-alarms-mq").get("messages", 0) == 0
    # and a system with no AMQP route gets no user, with a clear error
    refused_cli = run_cli(env, "broker", "users", "add", "gis")
    assert refused_cli.returncode == 1 and "no route takes AMQP messages from 'gis'" in refused_cli.stderr
