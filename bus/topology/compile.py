"""Routes → broker topology.  Pure: no broker needed, so it is unit-tested alone.

Shared objects:
  gridbus.ingress (topic, AE gridbus.unroutable)  connectors publish here, key route.<id>
  gridbus.events  (topic, AE gridbus.unroutable)  canonical events <Noun>.<verb>.<source>
  gridbus.unroutable (fanout) → gridbus.unroutable (quorum): nothing unroutable vanishes
  gridbus.reconciliation (quorum): chunk outcomes back to the file-drop ingress
  gridbus.file-reports (quorum, newest 100,000): FileReconciliation events
  gridbus.trace (fanout) → gridbus.trace (quorum, bounded, reject-publish): trace events
  celery_delayed_0..27 + celery_delayed_delivery: Celery's native delayed delivery,
    the broker-held backoff shared by every route (a delay of up to 2^28 s in
    28 TTL levels; a message waits in the broker, never in a worker)
Per route <id>:
  gridbus.route.<id> (quorum; DLX, at-least-once, delivery limit) bound with #.route.<id>
  gridbus.dlx.<id> (fanout) → gridbus.dlq.<id> (quorum)
Per route <id> of method ordered (bus/network/delivery_topology.py names and adds them):
  gridbus.network.updates (direct) → gridbus.ordered.<id>.<p> (quorum, single active consumer)
  gridbus.ordered.<id>.replays (quorum, single active consumer) bound with #.route.<id>
Per route <id> of method correlate (bus/outages/names.py): its route queue as above, and
  gridbus.outages (direct) → gridbus.outages.<id>.<p> (quorum, single active consumer), key <id>.<p>
  gridbus.dlq.<id> (quorum)
Per destination whose connector has ``destination_topology(endpoint, topology)``: what it adds
  (``amqp``: the receiving system's exchange, its quorum queue and their binding; names it chose)
With GRIDBUS_QUORUM_REPLICAS set, every quorum queue above but Celery's delay levels starts on
that many nodes (``x-quorum-initial-group-size``; bus/topology/replicas.py).
"""
from __future__ import annotations

from dataclasses import replace

from kombu.transport.native_delayed_delivery import (CELERY_DELAYED_DELIVERY_EXCHANGE,
                                                      MAX_LEVEL, level_name)

from bus import naming, registry
from bus.network import delivery_topology
from bus.outages import names as outage_names
from bus.routes.model import Route, RouteTable
from bus.topology.model import ExchangeSpec, QueueSpec, Topology
from bus.topology.replicas import quorum_replicas, with_replicas

_QUORUM = {"x-queue-type": "quorum"}
TRACE_QUEUE_MAX_BATCHES = 200_000  # each message holds up to 500 events


def ingress_exchange() -> ExchangeSpec:
    return ExchangeSpec.of(naming.INGRESS_EXCHANGE, "topic",
                           {"alternate-exchange": naming.UNROUTABLE_EXCHANGE})


def events_exchange() -> ExchangeSpec:
    return ExchangeSpec.of(naming.EVENTS_EXCHANGE, "topic",
                           {"alternate-exchange": naming.UNROUTABLE_EXCHANGE})


class _FromSetting:
    def __repr__(self) -> str:
        return "GRIDBUS_QUORUM_REPLICAS"


FROM_SETTING = _FromSetting()  # the default: read the setting, so every caller declares alike


def _replicas(replicas) -> int | None:
    return quorum_replicas() if replicas is FROM_SETTING else replicas


def route_queue(route: Route, replicas: int | None | _FromSetting = FROM_SETTING) -> QueueSpec:
    # a correlate route's queue has one router at a time: the watermark's ticks enter it behind the
    # events, and only one reader keeps them behind (bus/outages/router.py)
    sac = {"x-single-active-consumer": True} if route.is_correlated else {}
    return QueueSpec.of(route.queue_name, with_replicas(route.queue_name, {
        **_QUORUM, **sac,
        "x-dead-letter-exchange": naming.dead_letter_exchange_name(route.id),
        # at-least-once dead-lettering: the broker keeps the message until the DLQ confirms it
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        # poison backstop: a message that kills its worker N times is dead-lettered
        "x-delivery-limit": route.queue.delivery_limit,
    }, _replicas(replicas)))


def dead_letter_queue(route_id: str) -> QueueSpec:
    return QueueSpec.of(naming.dead_letter_queue_name(route_id), dict(_QUORUM))


def _delayed_delivery(topology: Topology) -> None:
    """Mirror of kombu's declare_native_delayed_delivery_exchanges_and_queues (quorum)."""
    key = "1.#"
    for level in range(MAX_LEVEL, -1, -1):
        name = level_name(level)
        topology.add_exchange(ExchangeSpec.of(name, "topic"))
        topology.add_queue(QueueSpec.of(name, {
            **_QUORUM, "x-overflow": "reject-publish", "x-message-ttl": 2 ** level * 1000,
            "x-dead-letter-exchange": level_name(level - 1) if level else CELERY_DELAYED_DELIVERY_EXCHANGE,
            "x-dead-letter-strategy": "at-least-once"}))
        topology.bind(name, name, key)
        key = "*." + key
    key = "0.#"
    for level in range(MAX_LEVEL, 0, -1):
        topology.bind(level_name(level), level_name(level - 1), key, "exchange")
        key = "*." + key
    topology.add_exchange(ExchangeSpec.of(CELERY_DELAYED_DELIVERY_EXCHANGE, "topic"))
    topology.bind(level_name(0), CELERY_DELAYED_DELIVERY_EXCHANGE, key, "exchange")


def replicate(topology: Topology, replicas: int | None | _FromSetting = FROM_SETTING) -> Topology:
    """Every quorum queue of ``topology`` (whoever added it: routes, connectors, partitions) with
    the initial group size of GRIDBUS_QUORUM_REPLICAS, when set; in place, and returned."""
    replicas = _replicas(replicas)
    for name, spec in list(topology.queues.items()):
        args = with_replicas(name, spec.args, replicas)
        if args != spec.args:
            topology.queues[name] = replace(spec, arguments=QueueSpec.of(name, args).arguments)
    return topology


def compile_topology(routes: RouteTable, replicas: int | None | _FromSetting = FROM_SETTING) -> Topology:
    """The topology of ``routes``; ``replicas`` (default: the setting GRIDBUS_QUORUM_REPLICAS)
    is every quorum queue's initial group size, None for the broker's default (every node)."""
    topology = Topology()
    topology.add_exchange(ExchangeSpec.of(naming.UNROUTABLE_EXCHANGE, "fanout"))
    topology.add_queue(QueueSpec.of(naming.UNROUTABLE_QUEUE, dict(_QUORUM)))
    topology.bind(naming.UNROUTABLE_EXCHANGE, naming.UNROUTABLE_QUEUE, "")
    topology.add_exchange(ingress_exchange())
    topology.add_exchange(events_exchange())
    topology.add_queue(QueueSpec.of(naming.RECONCILIATION_QUEUE, dict(_QUORUM)))
    # reports are also written beside each archived file; the queue keeps the latest
    # ones for tools without growing forever
    topology.add_queue(QueueSpec.of(naming.FILE_REPORTS_QUEUE, {
        **_QUORUM, "x-max-length": 100_000, "x-overflow": "drop-head"}))
    topology.bind(naming.EVENTS_EXCHANGE, naming.FILE_REPORTS_QUEUE, naming.FILE_REPORTS_KEY)
    # trace events wait here while the recorder is away; bounded, and a full queue
    # refuses (the emitters count what was refused) instead of slowing anyone down
    topology.add_exchange(ExchangeSpec.of(naming.TRACE_EXCHANGE, "fanout"))
    topology.add_queue(QueueSpec.of(naming.TRACE_QUEUE, {
        **_QUORUM, "x-max-length": TRACE_QUEUE_MAX_BATCHES, "x-overflow": "reject-publish"}))
    topology.bind(naming.TRACE_EXCHANGE, naming.TRACE_QUEUE, "")
    _delayed_delivery(topology)
    for route in routes:
        # a destination connector may declare the receiving system's objects (amqp: its exchange and queue)
        for destination in route.destinations:
            declare = getattr(registry.connector(destination.connector), "destination_topology", None)
            if declare:
                declare(destination, topology)
        if route.is_ordered:  # run by `gridbus network deliver`, not by Celery
            delivery_topology.add_route(topology, route.id, route.ordered.partitions)
            continue
        if route.is_correlated:  # its events wait in the route queue; `gridbus outages` partitions them
            outage_names.add_route(topology, route.id, route.correlate.partitions)
        queue = topology.add_queue(route_queue(route))
        key = naming.route_binding_key(route.id)
        topology.bind(naming.INGRESS_EXCHANGE, queue.name, key)
        topology.bind(CELERY_DELAYED_DELIVERY_EXCHANGE, naming.INGRESS_EXCHANGE, key, "exchange")
        dlx = topology.add_exchange(ExchangeSpec.of(naming.dead_letter_exchange_name(route.id), "fanout"))
        dlq = topology.add_queue(dead_letter_queue(route.id))
        topology.bind(dlx.name, dlq.name, "")
        # a source connector may need broker objects of its own (AMQP ingress queues)
        contribute = getattr(registry.connector(route.source.connector), "topology", None)
        if contribute:
            contribute(route, topology)
    return replicate(topology, replicas)
