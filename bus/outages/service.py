"""``gridbus outages run``: the router, the partitions and the ticker of the correlate routes.

One process runs, on threads of its own, each with its own connection:

* a router per correlate route (``router.py``), competing with the other processes' routers;
* a ``PartitionCorrelator`` per partition it serves (all, or ``--partitions``).  The partition
  queues have single active consumer: of the processes serving a partition, one consumes and the
  others stand by; when it dies the broker hands the queue (and its unacked batch) to the next;
* a ticker (with the router), which publishes the watermark (the clock minus ``skew_s``) every
  ``tick_s`` on the route queue.  The router hands a tick on to every partition after the events
  queued before it, so the watermark never passes an event still waiting to be routed, and a
  partition's log holds its ticks where they were.  Every routing process ticks (the watermark
  only goes forward, and consecutive ticks are merged); at least one process must route.
"""
from __future__ import annotations

import logging
import threading
import time

from bus.errors import BrokerError
from bus.messaging import BatchConsumer, ConfirmingPublisher
from bus.outages import names
from bus.outages.partition import PartitionCorrelator
from bus.outages.router import Router, tick_in_route_queue
from bus.outages.store import OutageStore, open_outage_store
from bus.outages.topology import StoreTopology
from bus.routes.model import Route, RouteTable
from bus.topology.apply import ensure as ensure_topology
from bus.topology.compile import compile_topology

log = logging.getLogger("gridbus.outages")


def _network():
    from bus.network.store import open_store
    return open_store()


def declare(broker_url: str, table: RouteTable) -> None:
    """The correlate routes' queues, exchanges and bindings, and those of their verify routes (idempotent)."""
    ensure_topology(compile_topology(table), broker_url)


def serve(table: RouteTable, broker_url: str, stop: threading.Event, partitions: list[int] | None = None,
          route_events: bool = True, store: OutageStore | None = None, network=None) -> None:
    routes = list(table.correlated_routes())
    store = store or open_outage_store()
    network = network or _network()
    while not stop.is_set():
        try:
            declare(broker_url, RouteTable(tuple(routes) + tuple(
                table.get(r.correlate.verify_route) for r in routes if r.correlate.verify_route)))
            break
        except BrokerError as exc:
            log.warning("declaring the outage topology: %s", exc)
            stop.wait(2.0)
    threads = []

    def start(target, name):
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        threads.append(t)

    served: list[tuple[Route, int]] = []
    for route in routes:
        c = route.correlate
        if route_events:
            router = Router(route, StoreTopology(network), ConfirmingPublisher(broker_url, f"gridbus-outages-router-{route.id}"))
            consumer = BatchConsumer(broker_url, [route.queue_name], router.handle,
                                     name=f"gridbus-outages-router-{route.id}", batch_max=200, window_s=c.window_ms / 1000)
            start(lambda consumer=consumer, router=router: consumer.serve(stop, router.publisher.close), consumer.name)
        verify_route = table.get(c.verify_route) if c.verify_route else None
        for p in (partitions if partitions is not None else range(c.partitions)):
            if not 0 <= p < c.partitions:
                continue
            correlator = PartitionCorrelator(route, p, store, lambda: StoreTopology(network),
                                             ConfirmingPublisher(broker_url, f"gridbus-outages-{route.id}-{p}"),
                                             verify_route)
            consumer = BatchConsumer(broker_url, [names.partition_queue(route.id, p)], correlator.handle,
                                     name=f"gridbus-outages-{route.id}-{p}", batch_max=c.batch_max,
                                     window_s=c.window_ms / 1000, prefetch=c.batch_max * 2)
            start(lambda consumer=consumer, correlator=correlator: _serve_partition(consumer, correlator, stop),
                  consumer.name)
            served.append((route, p))
    if route_events and routes:
        start(lambda: _tick(routes, broker_url, stop), "gridbus-outages-ticker")
    log.info("outages: routing %s; partitions %s", "on" if route_events else "off",
             ", ".join(f"{r.id}/{p}" for r, p in served) or "none")
    for t in threads:
        t.join()


def _serve_partition(consumer: BatchConsumer, correlator: PartitionCorrelator, stop: threading.Event) -> None:
    def after_failure() -> None:
        correlator.engine = None  # whatever happened, the next batch starts from the store
        correlator.publisher.close()

    consumer.serve(stop, after_failure)
    correlator.checkpoint()  # a clean stop leaves no log to replay


def _tick(routes: list[Route], broker_url: str, stop: threading.Event) -> None:
    tick_s = min(r.correlate.tick_s for r in routes)
    publisher = ConfirmingPublisher(broker_url, "gridbus-outages-ticker")
    try:
        while not stop.wait(tick_s):
            try:
                now = time.time()
                for route in routes:
                    publisher.publish(*tick_in_route_queue(route.id, now - route.correlate.skew_s))
                publisher.flush(timeout_s=10)
            except BrokerError as exc:
                log.warning("outages ticker: %s (ticks resume when the broker is back)", exc)
                publisher.close()
                stop.wait(1.0)
    finally:
        publisher.close()
