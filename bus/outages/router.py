"""The router of a correlate route: canonical events from the route queue to the partition of
their feeder.

The route queue has **single active consumer**: one router at a time, the routers of the other
``gridbus outages run`` processes stand by.  The watermark's ticks enter the route queue behind
the events, and one reader keeps them behind: with competing routers, a tick forwarded by one
could reach a partition before the events another was still routing, and a backlog drained by two
processes closed restorations before their first breaths (the benchmark's two-process run: 281
nested outages instead of 13).  For a batch of route messages it decodes each canonical
EndDeviceEvents document, takes its outage events (``rows_of``), finds each meter's feeder
as of the event's time (one prefetch of the network store per batch), and publishes **one message
per partition** with the batch's events of that partition (``src`` says which route message each
run of rows came from, for the trace), with confirms; then the batch is acked.  A meter the network does not know goes to the partition of
no feeder (``partition_of("")``), whose engine counts it as unknown.  A message that is not a
route message goes to the route's dead letters with the reason.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import orjson

from bus import naming
from bus.deadletters import headers as dl
from bus.errors import DecodeError
from bus.messaging import ConfirmingPublisher, Delivery
from bus.outages import names
from bus.outages.events import rows_of
from bus.outages.partition import EVENTS, TICK, tick_message
from bus.outages.rules import partition_of
from bus.outages.topology import Topology
from bus.routes.model import Route
from bus.worker import undecodable

log = logging.getLogger("gridbus.outages.router")
H_TICK = "gridbus-outages-tick"  # on a watermark tick in the route queue (``tick_in_route_queue``)


def tick_in_route_queue(route_id: str, watermark: float) -> tuple:
    """(exchange, routing key, body, properties, headers) of a tick on the route queue.  Ticks
    enter where the events enter and reach the partitions through the router, after the events
    queued before them: the watermark never passes an event that is still waiting to be routed
    (a backlog after a restart would otherwise fire every hold at once).  It expires after 10 s,
    so ticks do not pile up while no process routes."""
    return (naming.INGRESS_EXCHANGE, naming.route_routing_key(route_id), orjson.dumps({"t": TICK, "w": watermark}),
            {"delivery_mode": 2, "expiration": "10000", "content_type": "application/json"}, {H_TICK: 1})


def tick_of(d: Delivery) -> float:
    try:
        w = orjson.loads(d.body)["w"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"a tick without a watermark ({exc.__class__.__name__})") from exc
    if type(w) not in (int, float) or not 0 <= w < 1e11:
        raise ValueError(f"a tick with an unusable watermark {str(w)[:40]}")
    return float(w)


def canonical_of(d: Delivery) -> tuple[str, dict]:
    """(message id, canonical document) of a route message; ValueError if it is none."""
    try:
        try:  # the bus's own task messages: orjson alone (it refuses nesting deeper than 1,024)
            body = orjson.loads(d.body)
            doc = body[0][0] if type(body) is list and len(body) == 3 and type(body[0]) is list \
                and len(body[0]) == 1 else None
            if doc is None:
                raise ValueError("not [[payload], {}, embed]")
        except (orjson.JSONDecodeError, ValueError, TypeError):
            body = undecodable.loads(d.body)  # the reason, as the worker's decoder says it
            doc = body[0][0]
    except (DecodeError, ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        raise ValueError(f"not a route message ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    reason = undecodable.undecodable(doc)
    if reason is not None:
        raise ValueError(reason)
    if not isinstance(doc, dict):
        raise ValueError("the payload is not a canonical document")
    headers = d.headers
    mid = headers.get("id") or d.properties.get("message_id") or ""
    return (mid.decode() if isinstance(mid, bytes) else str(mid)), doc


class Router:
    def __init__(self, route: Route, topology: Topology, publisher: ConfirmingPublisher):
        self.route, self.topology, self.publisher = route, topology, publisher
        self.n = route.correlate.partitions
        self.lookback_s = route.correlate.breath_lookback_s
        self.counts: dict[str, int] = defaultdict(int)

    def handle(self, batch: list[Delivery]) -> None:
        docs, bad, ticks = [], [], []
        for d in batch:
            try:
                if d.headers.get(H_TICK):
                    ticks.append(tick_of(d))
                else:
                    docs.append(canonical_of(d))
            except ValueError as exc:
                bad.append((d, str(exc)))
        events = [(mid, row) for mid, doc in docs for row in rows_of(doc)]  # [meter, code, at, ...]
        times = [r[2] for _, r in events if 0 <= r[2] < 1e11]
        if times:
            self.topology.prefetch({r[0] for _, r in events}, min(times), max(times))
        parts: dict[tuple[str, int], list] = defaultdict(list)
        locate = self.topology.locate
        # a first breath also goes to the partitions of the feeders its meter was under lately: a DT
        # switched onto another feeder to restore it breathes there, while its outage is on the old one
        breaths = [r for _, r in events if r[1] != 101 and 0 <= r[2] < 1e11]
        before = self.topology.feeders_over({r[0] for r in breaths}, min(r[2] for r in breaths) - self.lookback_s,
                                            max(r[2] for r in breaths)) if breaths and self.n > 1 else {}
        for mid, row in events:
            place = locate(row[0], row[2]) if 0 <= row[2] < 1e11 else None
            p = partition_of(place.feeder if place is not None else "", self.n)
            parts[(mid, p)].append(row)
            if row[1] != 101 and row[0] in before:
                for q in {partition_of(f, self.n) for f in before[row[0]]} - {p}:
                    parts[(mid, q)].append(row)
        by_partition: dict[int, tuple[list, list]] = {}
        for (mid, p), rows in parts.items():  # in the batch's order: a dict keeps insertion order
            src, all_rows = by_partition.setdefault(p, ([], []))
            src.append([mid, len(rows)])
            all_rows.extend(rows)
        for p, (src, rows) in by_partition.items():
            body = orjson.dumps({"t": EVENTS, "src": src, "ev": rows})
            self.publisher.publish(names.EXCHANGE, names.partition_key(self.route.id, p), body,
                                   {"delivery_mode": 2, "message_id": f"{src[0][0]}/{p}/{len(src)}",
                                    "content_type": "application/json"}, {})
        if ticks:  # after the batch's events: a partition sees the events before the tick that follows them
            for p in range(self.n):
                self.publisher.publish(*tick_message(self.route.id, p, max(ticks)))
        for d, why in bad:
            headers = {**d.headers, **dl.reason_headers(self.route.id, "outages", "BadMessage", why[:2000],
                                                         attempts=1, grouped_by=why[:80])}
            properties = {k: v for k, v in d.properties.items() if k != "delivery_mode"}
            self.publisher.publish("", naming.dead_letter_queue_name(self.route.id), d.body,
                                   {**properties, "delivery_mode": 2}, headers)
            log.error("%s: dead-lettered a message that is no route message: %s", self.route.id, why)
        self.publisher.flush()
        self.counts["messages"] += len(batch)
        self.counts["events"] += len(events)
        self.counts["dead_lettered"] += len(bad)
