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

``add_route`` is the one description of these objects: ``gridbus routes plan/apply`` (through
``compile_topology``, for the routes of method ``ordered``) and ``declare`` (what ``network
publish`` and ``deliver`` declare at start) both read it.
"""
from __future__ import annotations

import zlib

from typing import TYPE_CHECKING

from bus import naming

if TYPE_CHECKING:  # bus.topology imports this module (compile); the route schema reads MAX_PARTITIONS
    from bus.topology.model import Topology

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


def add_route(topology: "Topology", route_id: str, partitions: int) -> None:
    """An ordered route's broker objects: the updates exchange, its partition queues bound to their
    slots, its replays queue (bound on the ingress exchange with the route's key, where ``gridbus dlq
    replay`` publishes) and its dead-letter queue.  No route queue, no dead-letter exchange, no
    delay levels: nothing of Celery's."""
    from bus.topology.model import ExchangeSpec, QueueSpec

    topology.add_exchange(ExchangeSpec.of(UPDATES_EXCHANGE, "direct"))
    topology.add_queue(QueueSpec.of(naming.dead_letter_queue_name(route_id), DEAD_LETTER_QUEUE_ARGS))
    replays = topology.add_queue(QueueSpec.of(replays_queue_name(route_id), PARTITION_QUEUE_ARGS))
    topology.bind(naming.INGRESS_EXCHANGE, replays.name, naming.route_binding_key(route_id))
    for p in range(partitions):
        queue = topology.add_queue(QueueSpec.of(partition_queue_name(route_id, p), PARTITION_QUEUE_ARGS))
        for s in partition_slots(p, partitions):
            topology.bind(UPDATES_EXCHANGE, queue.name, slot_key(s))


def declare(broker_url: str, routes: list[tuple[str, int]]) -> None:
    """Declare the exchange, and for each ``(route_id, partitions)`` its partition queues, their
    bindings and its dead-letter queue (idempotent): ``add_route``'s objects and the ingress
    exchange they are bound on."""
    from bus.topology.apply import ensure
    from bus.topology.compile import ingress_exchange, replicate
    from bus.topology.model import Topology

    topology = Topology()
    topology.add_exchange(ingress_exchange())
    for route_id, partitions in routes:
        add_route(topology, route_id, partitions)
    ensure(replicate(topology), broker_url)  # as `routes apply` declares them (GRIDBUS_QUORUM_REPLICAS)
