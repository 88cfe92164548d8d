"""`gridbus routes apply` is idempotent; `routes plan` sees what differs on the live broker,
the ordered routes' partition queues included."""
from __future__ import annotations

import json

import amqp
import pytest

from bus.network import delivery_topology as topo
from tests.support import ROOT, ROUTE_ENV, run_cli

pytestmark = pytest.mark.broker
ROUTES = str(ROOT / "routes")


@pytest.fixture
def env(bus_env):
    return {**bus_env, **{k: v for k, v in ROUTE_ENV.items() if k.endswith("_URL")},
            "GRIDBUS_METER_ASSIGNMENT": "/tmp/meter-assignment.csv", "GRIDBUS_ROUTES": ROUTES}


def test_apply_twice_changes_nothing_the_second_time(env):
    # Given an empty virtual host  When routes are applied
    first = run_cli(env, "routes", "apply")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("declared ")
    # Then a second apply has nothing to do and the plan is in sync
    second = run_cli(env, "routes", "apply")
    assert second.returncode == 0 and second.stdout.strip() == "nothing to change"
    plan = run_cli(env, "routes", "plan")
    assert plan.returncode == 0 and "nothing to change" in plan.stdout


def test_plan_on_an_empty_broker_lists_what_apply_would_declare_and_changes_nothing(env):
    plan = run_cli(env, "routes", "plan")
    assert plan.returncode == 2
    assert "+ queue gridbus.route.hes-a-csv-to-mdms-1" in plan.stdout
    assert "+ queue gridbus.dlq.hes-a-csv-to-mdms-1" in plan.stdout
    assert "+ exchange gridbus.ingress" in plan.stdout
    assert run_cli(env, "routes", "plan").stdout == plan.stdout  # nothing was declared


def test_plan_reports_a_hand_altered_queue_and_an_extra_one(env, rabbitmq_proc):
    # Given applied routes, then an operator re-creates a route queue by hand with another
    # delivery limit, and leaves behind a queue no route knows
    assert run_cli(env, "routes", "apply").returncode == 0
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    conn = amqp.Connection(host=f"127.0.0.1:{rabbitmq_proc.port}", virtual_host=vhost)
    conn.connect()
    ch = conn.channel()
    ch.queue_delete("gridbus.route.hes-b-csv-to-mdms-2")
    ch.queue_declare("gridbus.route.hes-b-csv-to-mdms-2", durable=True, auto_delete=False,
                     arguments={"x-queue-type": "quorum", "x-delivery-limit": 99})
    ch.queue_declare("gridbus.route.retired-route", durable=True, auto_delete=False,
                     arguments={"x-queue-type": "quorum"})
    conn.close()
    # When the plan is made
    plan = run_cli(env, "routes", "plan")
    # Then it reports the difference in arguments, the lost binding and the extra queue
    assert plan.returncode == 2
    assert "~ queue gridbus.route.hes-b-csv-to-mdms-2: " in plan.stdout
    assert "x-delivery-limit: live 99 != routes 5" in plan.stdout
    assert "+ binding gridbus.ingress -> queue gridbus.route.hes-b-csv-to-mdms-2" in plan.stdout
    assert "- queue gridbus.route.retired-route" in plan.stdout
    # and apply leaves the altered queue alone and says so
    applied = run_cli(env, "routes", "apply")
    assert "differs and was left alone" in applied.stderr


def test_plan_shows_the_ordered_routes_partition_queues_exchange_and_bindings(env):
    # Given an empty virtual host  When the plan of the shipped routes is made
    plan = run_cli(env, "routes", "plan", "--json")
    assert plan.returncode == 2, plan.stderr
    missing = json.loads(plan.stdout)["missing"]
    # Then the billing routes' objects are there by delivery_topology's names: the updates exchange,
    # each partition queue bound to its slots, the replays queue on the ingress exchange, the DLQ
    assert topo.UPDATES_EXCHANGE in missing["exchanges"]
    for route in ("network-to-billing-1", "network-to-billing-2"):
        for p in range(4):
            queue = topo.partition_queue_name(route, p)
            assert queue in missing["queues"]
            keys = {b["routing_key"] for b in missing["bindings"] if b["destination"] == queue}
            assert keys == {topo.slot_key(s) for s in topo.partition_slots(p, 4)}
        assert topo.replays_queue_name(route) in missing["queues"]
        assert f"gridbus.dlq.{route}" in missing["queues"]
        # and no Celery route queue for them
        assert f"gridbus.route.{route}" not in missing["queues"]


def test_what_the_delivery_process_declares_is_what_the_plan_wants(env):
    # Given the topology `gridbus network publish/deliver` declare at start, declared on an empty vhost
    topo.declare(env["GRIDBUS_BROKER_URL"], [("network-to-billing-1", 4), ("network-to-billing-2", 4)])
    # When the plan of the shipped routes is made
    plan = json.loads(run_cli(env, "routes", "plan", "--json").stdout)
    # Then none of those objects differs or is unknown to the routes (one source of names and arguments)
    assert plan["differing"] == {"exchanges": [], "queues": []}
    assert plan["broker_only"] == {"exchanges": [], "queues": [], "bindings": []}
    assert not any(".ordered." in q for q in plan["missing"]["queues"])
    # and after `routes apply` the broker matches the routes, ordered routes and all
    assert run_cli(env, "routes", "apply").returncode == 0
    assert run_cli(env, "routes", "plan").returncode == 0


def test_the_network_publishers_lease_is_no_difference(env, rabbitmq_proc):
    # Given applied routes and a running network publisher holding its lease (an exclusive queue)
    assert run_cli(env, "routes", "apply").returncode == 0
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    conn = amqp.Connection(host=f"127.0.0.1:{rabbitmq_proc.port}", virtual_host=vhost)
    conn.connect()
    try:
        conn.channel().queue_declare(topo.PUBLISHER_LEADER_QUEUE, exclusive=True, auto_delete=True)
        # When the plan is made  Then the broker still matches the routes (the lease goes with its
        # connection; it is no route's and nothing for apply to do)
        plan = run_cli(env, "routes", "plan")
        assert plan.returncode == 0, plan.stdout
    finally:
        conn.close()
