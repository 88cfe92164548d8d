"""Routes compile to topology by pure functions; names derive from the route id."""
from __future__ import annotations

import random
from pathlib import Path

from bus import naming
from bus.envelope import Envelope, file_chunk_message_id
from bus.routes import RetryPolicy, load_routes
from bus.topology import compile_topology
from bus.worker.app import celery_queues, celery_routes
from tests.support import ROUTE_ENV as ENV

ROUTES = Path(__file__).parents[2] / "routes"


def test_each_route_gets_a_quorum_queue_with_dead_lettering_and_a_delivery_limit():
    # Given the shipped routes  When compiled
    table = load_routes([ROUTES], env=ENV)
    topology = compile_topology(table)
    for route in table.of_kind("all"):  # the worker's routes (ordered ones: test_ordered_routes.py)
        # Then the route queue is a quorum queue dead-lettering at least once to its own DLX
        args = topology.queues[naming.route_queue_name(route.id)].args
        assert args["x-queue-type"] == "quorum"
        assert args["x-dead-letter-exchange"] == naming.dead_letter_exchange_name(route.id)
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-delivery-limit"] == route.queue.delivery_limit
        # and its DLX feeds its DLQ
        assert naming.dead_letter_queue_name(route.id) in topology.queues
        assert any(b.source == naming.dead_letter_exchange_name(route.id) for b in topology.bindings)
        # and delayed retries (Celery's delay levels) come back to the same queue
        key = naming.route_binding_key(route.id)
        assert any(b.source == "celery_delayed_delivery" and b.routing_key == key for b in topology.bindings)


def test_unroutable_messages_are_kept_by_an_alternate_exchange():
    topology = compile_topology(load_routes([ROUTES], env=ENV))
    assert topology.exchanges[naming.INGRESS_EXCHANGE].args["alternate-exchange"] == naming.UNROUTABLE_EXCHANGE
    assert naming.UNROUTABLE_QUEUE in topology.queues


def test_celery_queues_and_task_routes_come_from_the_same_table():
    table = load_routes([ROUTES], env=ENV)
    topology = compile_topology(table)
    queues = {q.name: q for q in celery_queues(table.of_kind("all"))}  # as the worker builds them
    for route in table.of_kind("all"):
        # the worker declares exactly what `routes apply` declares (else PRECONDITION_FAILED)
        assert queues[route.queue_name].queue_arguments == topology.queues[route.queue_name].args
        assert queues[route.queue_name].exchange.arguments == topology.exchanges[naming.INGRESS_EXCHANGE].args
        assert celery_routes(table.of_kind("all"))[route.task_name] == {"queue": route.queue_name}


def test_exponential_backoff_grows_and_stops_at_the_maximum():
    policy = RetryPolicy(attempts=8, first_delay_s=2, max_delay_s=60, jitter=0)
    assert [policy.delay_s(a) for a in range(2, 9)] == [2, 4, 8, 16, 32, 60, 60]


def test_jitter_stays_within_its_share():
    policy = RetryPolicy(first_delay_s=100, max_delay_s=1000, jitter=0.2)
    delays = {policy.delay_s(2, random.Random(seed)) for seed in range(200)}
    assert min(delays) >= 80 and max(delays) <= 120 and len(delays) > 10


def test_file_chunk_ids_are_deterministic():
    assert file_chunk_message_id("ab" * 32, 3) == file_chunk_message_id("ab" * 32, 3)
    assert file_chunk_message_id("ab" * 32, 3) != file_chunk_message_id("ab" * 32, 4)


def test_envelope_maps_the_iec_header_onto_properties_and_headers():
    # Given an envelope
    env = Envelope(route_id="r1", source="hes-a", verb="created", noun="MeterReadings",
                   correlation_id="c-1", meters=("UPM1",))
    props, headers = env.properties(), env.headers()
    # Then AMQP properties carry what AMQP has a slot for
    assert props["type"] == "created.MeterReadings" and props["app_id"] == "hes-a"
    assert props["correlation_id"] == "c-1" and props["delivery_mode"] == 2
    # and headers the rest, enough to rebuild the envelope on the worker side
    again = Envelope.from_headers(env.message_id, headers)
    assert (again.route_id, again.source, again.correlation, again.attempt, again.meters) == \
        ("r1", "hes-a", "c-1", 1, ("UPM1",))
    assert headers["traceparent"].startswith("00-") and headers["gridbus-schema-version"] == "1"
    # and the next attempt keeps the trace id, with a new span
    following = env.next_attempt()
    assert following.attempt == 2
    assert following.traceparent.split("-")[1] == env.traceparent.split("-")[1]


def test_topic_patterns_match_like_amqp():
    from connectors.pubsub import select_events, topic_matches
    assert topic_matches("EndDeviceEvents.created.*", "EndDeviceEvents.created.hes-a")
    assert not topic_matches("EndDeviceEvents.created.*", "EndDeviceEvents.created.hes-a.x")
    assert topic_matches("EndDeviceEvents.#", "EndDeviceEvents.created.hes-a")
    assert not topic_matches("MeterReadings.#", "EndDeviceEvents.created.hes-a")
    doc = {"noun": "EndDeviceEvents", "EndDeviceEvent": [{"eventClass": ["health"]}, {"eventClass": ["fraud"]}]}
    assert select_events(doc, ["fraud"])["EndDeviceEvent"] == [{"eventClass": ["fraud"]}]
    assert select_events(doc, ["outage"]) is None
    assert select_events(doc, []) is doc


def test_route_kinds_split_the_table_into_requests_and_deliveries():
    # Given the shipped routes
    table = load_routes([ROUTES], env=ENV)
    # When split by kind
    requests, deliveries = table.of_kind("requests"), table.of_kind("deliveries")
    # Then every route is in exactly one part, the callback route with the requests, and the ordered
    # and correlate routes in none: `gridbus network deliver` and `gridbus outages run` run them,
    # not the worker
    ordered, correlated = table.ordered_routes(), table.correlated_routes()
    assert len(ordered) and all(r.method == "ordered" for r in ordered)
    assert len(correlated) and all(r.method == "correlate" for r in correlated)
    assert sorted(r.id for r in (*requests, *deliveries, *ordered, *correlated)) == sorted(r.id for r in table)
    assert all(r.method == "request-response" or r.source.connector == "replies" for r in requests)
    assert any(r.source.connector == "replies" for r in requests)
    assert not any(r.method == "request-response" for r in deliveries)
    assert [r.id for r in table.of_kind("all")] == [r.id for r in table if r.method not in ("ordered", "correlate")]
