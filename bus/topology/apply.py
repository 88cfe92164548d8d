"""Declare a topology on the broker: only what the plan says is missing."""
from __future__ import annotations

from bus.messaging import amqp_errors, connect
from bus.topology.model import Topology
from bus.topology.plan import Plan


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
    """Declare every object (idempotent on RabbitMQ); what worker and ingress do at start."""
    everything = Plan(missing_exchanges=sorted(topology.exchanges), missing_queues=sorted(topology.queues),
                      missing_bindings=sorted(topology.bindings, key=lambda b: (b.source, b.destination,
                                                                                 b.routing_key)))
    return apply(topology, everything, broker_url)
