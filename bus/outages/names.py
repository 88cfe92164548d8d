"""Broker names and topology of a correlate route's partitions.

    events ──route queue──► router ──gridbus.outages (direct), key <route>.<p>──► gridbus.outages.<route>.<p>
                                                                                 (quorum, single active consumer)

The router (any ``gridbus outages`` process) resolves each event's meter to its feeder and
publishes it to partition ``partition_of(feeder, n)``: everything of one feeder lands in one
queue, in the order the router published it.  Single active consumer lets one process at a time
own a partition (the others stand by and take over when it dies).  The partition queue is also
where that partition's watermark ticks and its verification replies arrive, so the owner reads
every input of its engine from one ordered queue.

The partition is computed here rather than by a consistent-hash exchange: the engine, the
router and ``gridbus outages list`` must all agree on which partition a feeder is in (mRIDs are
numbered per feeder, and a partition's engine refuses feeders not its own), and a hash ring
inside the broker would be a second function to keep in step.  No plugin is needed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bus import naming

if TYPE_CHECKING:
    from bus.topology.model import Topology

EXCHANGE = f"{naming.PREFIX}.outages"
PARTITION_QUEUE_ARGS = {"x-queue-type": "quorum", "x-single-active-consumer": True}


def partition_queue(route_id: str, partition: int) -> str:
    return f"{naming.PREFIX}.outages.{route_id}.{partition}"


def partition_key(route_id: str, partition: int) -> str:
    return f"{route_id}.{partition}"


def add_route(topology: "Topology", route_id: str, partitions: int) -> None:
    """The partition exchange and the route's partition queues, each bound by its key."""
    from bus.topology.model import ExchangeSpec, QueueSpec

    topology.add_exchange(ExchangeSpec.of(EXCHANGE, "direct"))
    for p in range(partitions):
        queue = topology.add_queue(QueueSpec.of(partition_queue(route_id, p), PARTITION_QUEUE_ARGS))
        topology.bind(EXCHANGE, queue.name, partition_key(route_id, p))
