"""Declare a topology on the broker: only what the plan says is missing; or, for a user that
may not declare it, check that it exists (``ensure``)."""
from __future__ import annotations

import logging

from bus import naming
from bus.errors import BrokerAccessRefused, BrokerNotFound, ConfigError
from bus.messaging import amqp_errors, connect
from bus.topology.model import Topology
from bus.topology.plan import Plan

log = logging.getLogger("gridbus.topology")


def apply(topology: Topology, plan: Plan, broker_url: str) -> int:
    """Declare the missing objects of ``plan``; returns how many were declared.

    Queues whose arguments differ are left alone: RabbitMQ cannot change them in
    place and deleting a queue would lose its messages; the plan tells the operator.
    """
    conn = connect(broker_url, "gridbus-routes-apply")
    declared = 0
    try:
        with amqp_errors("declaring topology"):
            ch = conn.channel()
            for name in plan.missing_exchanges:
                spec = topology.exchanges[name]
                ch.exchange_declare(spec.name, spec.type, durable=spec.durable, auto_delete=False,
                                    arguments=spec.args)
                declared += 1
            for name in plan.missing_queues:
                spec = topology.queues[name]
                ch.queue_declare(spec.name, durable=spec.durable, auto_delete=False, arguments=spec.args)
                declared += 1
            for b in sorted(plan.missing_bindings, key=lambda b: (b.source, b.destination, b.routing_key)):
                if b.destination_type == "exchange":
                    ch.exchange_bind(destination=b.destination, source=b.source, routing_key=b.routing_key)
                else:
                    ch.queue_bind(b.destination, b.source, b.routing_key)
                declared += 1
    finally:
        with amqp_errors("closing"):
            conn.close()
    return declared


def declare_all(topology: Topology, broker_url: str) -> int:
    """Declare every object (idempotent on RabbitMQ); what ``routes apply`` and ``dev up`` do,
    and (through ``ensure``) the processes at start."""
    everything = Plan(missing_exchanges=sorted(topology.exchanges), missing_queues=sorted(topology.queues),
                      missing_bindings=sorted(topology.bindings, key=lambda b: (b.source, b.destination,
                                                                                 b.routing_key)))
    return apply(topology, everything, broker_url)


def missing(topology: Topology, broker_url: str) -> list[str]:
    """The exchanges and queues of ``topology`` the broker does not have, found with passive
    declares (they need no permission: any user may ask whether a name exists).  Bindings
    cannot be asked about over AMQP; `gridbus routes plan` compares them."""
    conn = connect(broker_url, "gridbus-topology-check")
    absent: list[str] = []
    try:
        ch = None
        # the bus's own queues first: they say most about what is missing (Celery's delay set last)
        for kind, name in sorted([("queue", n) for n in topology.queues] + [("exchange", n) for n in topology.exchanges],
                                 key=lambda o: (not o[1].startswith(naming.PREFIX + "."), o[0] != "queue", o[1])):
            try:
                with amqp_errors(f"checking {kind} {name}"):
                    ch = ch if ch is not None and ch.is_open else conn.channel()
                    if kind == "exchange":
                        ch.exchange_declare(name, topology.exchanges[name].type, passive=True)
                    else:
                        ch.queue_declare(name, passive=True)
            except BrokerNotFound:  # the broker closed the channel; the next check opens another
                absent.append(f"{kind} {name}")
                ch = None
    finally:
        with amqp_errors("closing"):
            conn.close()
    return absent


def ensure(topology: Topology, broker_url: str) -> None:
    """What a process does at start: declare ``topology`` (idempotent), or, as a service user
    that may not declare (no configure permission: only the administrator's `gridbus routes
    apply` does), check that every exchange and queue of it exists, and refuse to start,
    naming what is missing, when one does not."""
    try:
        declare_all(topology, broker_url)
        return
    except BrokerAccessRefused as exc:
        refused = exc
    absent = missing(topology, broker_url)
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        raise ConfigError(f"the broker lacks {len(absent)} object(s) of the topology: {shown}; and this broker user may not declare them "
                          f"({refused}); the administrator declares the topology: gridbus routes apply") \
            from refused
    log.info("this broker user may not declare the topology; its %d exchanges and %d queues exist",
             len(topology.exchanges), len(topology.queues))
