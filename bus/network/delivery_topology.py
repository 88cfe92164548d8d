"""Broker names and topology of the network updates' way to billing, in order per consumer.

    outbox ──publish──► gridbus.network.updates (direct) ──slot.N──► gridbus.ordered.<route>.<p>
                                                                     (quorum, single active consumer)

The publisher routes each update by its consumer's *slot* (``slot_of``: a stable hash into
``SLOTS``); each billing route binds its ``partitions`` queues to the slots ``s`` with
``s % partitions == p``.  So every update of a consumer goes to the same partition queue of
every route, a queue keeps publish order, and single active consumer lets one delivery process
at a time take a partition while the others stand by.  No broker plugin is needed (the
consistent-hash exchange is not enabled on the test node nor in the dev stack).
Changing a route's partition count moves consumers between queues: drain the route first.
"""
from __future__ import annotations

import zlib

from bus import naming
from bus.messaging import amqp_errors, connect

UPDATES_EXCHANGE = f"{naming.PREFIX}.network.updates"
PUBLISHER_LEADER_QUEUE = f"{naming.PREFIX}.network.publisher"  # exclusive: held by the one active publisher
SLOTS = 64
MAX_PARTITIONS = SLOTS


def slot_of(consumer: str) -> int:
    """The consumer's slot: the same on every host and every run (crc32, not ``hash``)."""
    return zlib.crc32(consumer.encode("utf-8")) % SLOTS


def slot_key(slot: int) -> str:
    return f"slot.{slot}"


def partition_of(consumer: str, partitions: int) -> int:
    return slot_of(consumer) % partitions


def partition_queue_name(route_id: str, partition: int) -> str:
    return f"{naming.PREFIX}.ordered.{route_id}.{partition}"


def replays_queue_name(route_id: str) -> str:
    """Where ``gridbus dlq replay`` of the route's dead letters (published to the ingress exchange
    with the route's key) and ``gridbus network release`` land."""
    return f"{naming.PREFIX}.ordered.{route_id}.replays"


def partition_slots(partition: int, partitions: int) -> list[int]:
    return [s for s in range(SLOTS) if s % partitions == partition]


PARTITION_QUEUE_ARGS = {"x-queue-type": "quorum", "x-single-active-consumer": True}
DEAD_LETTER_QUEUE_ARGS = {"x-queue-type": "quorum"}


def declare(broker_url: str, routes: list[tuple[str, int]]) -> None:
    """Declare the exchange, and for each ``(route_id, partitions)`` its partition queues, their
    bindings and its dead-letter queue (idempotent)."""
    conn = connect(broker_url, "gridbus-network-topology")
    try:
        with amqp_errors("declaring the network delivery topology"):
            ch = conn.channel()
            ch.exchange_declare(UPDATES_EXCHANGE, "direct", durable=True, auto_delete=False)
            ch.exchange_declare(naming.INGRESS_EXCHANGE, "topic", durable=True, auto_delete=False,
                                arguments={"alternate-exchange": naming.UNROUTABLE_EXCHANGE})
            for route_id, partitions in routes:
                ch.queue_declare(naming.dead_letter_queue_name(route_id), durable=True, auto_delete=False,
                                 arguments=DEAD_LETTER_QUEUE_ARGS)
                replays = replays_queue_name(route_id)
                ch.queue_declare(replays, durable=True, auto_delete=False, arguments=PARTITION_QUEUE_ARGS)
                ch.queue_bind(replays, naming.INGRESS_EXCHANGE, naming.route_binding_key(route_id))
                for p in range(partitions):
                    queue = partition_queue_name(route_id, p)
                    ch.queue_declare(queue, durable=True, auto_delete=False, arguments=PARTITION_QUEUE_ARGS)
                    for s in partition_slots(p, partitions):
                        ch.queue_bind(queue, UPDATES_EXCHANGE, slot_key(s))
    finally:
        with amqp_errors("closing"):
            conn.close()
