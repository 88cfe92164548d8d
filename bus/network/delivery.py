"""``gridbus network deliver``: consumer-path updates to the billing systems, in order per consumer.

One ``BatchConsumer`` per partition queue of each billing route (delivery_topology.py), each on a
thread of its own.  The partition queues have single active consumer: with two delivery
processes each partition is taken by one of them, the other stands by and takes over when the
first dies (its unacked batch comes back to the queue, ahead of later messages).  So a partition
is one ordered stream, handled one batch at a time:

- updates not newer than what the route already delivered for their consumer are dropped
  (a republished outbox update, or a batch redelivered after billing took it);
- a transient failure (5xx, 429, no answer) is retried **in place** with backoff: the batch is
  not acked and the partition waits, so nothing overtakes it (a broker retry would put it
  behind later updates of the same consumers);
- a permanent refusal naming consumers (422, 409) dead-letters those consumers' updates of the
  batch, with the reason, and sends the rest again; one naming nobody (400) dead-letters the batch;
- a consumer with a dead letter is *parked* on that route: its later updates are held in the
  delivery state, not sent, while other consumers flow.  Replaying the dead letter (``gridbus dlq
  replay``: it comes back on the route's replays queue) or ``gridbus network release`` sends it
  and the held ones in version order, and the consumer flows again;
- a batch goes out as rounds of one version per consumer (``rounds``), each as POSTs of at most
  the route's ``batch_max`` updates, each POST recorded in the delivery state after billing's 200;
  then the batch is acked.

A message carries one update, or several of the same slot (``{"updates": [...]}``, written by the
publisher in outbox order: publish.messages_of); each is split into its updates here, and a
dead-lettered or held update is kept as a message of its own.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from bus import naming, registry
from bus.deadletters import headers as dl
from bus.errors import BrokerError, PermanentDeliveryError, TransientDeliveryError
from bus.messaging import Backoff, BatchConsumer, ConfirmingPublisher, Delivery
from bus.network import delivery_topology as topo
from bus.network.delivery_routes import BillingRoute
from bus.network.delivery_state import DeliveryState
from bus.network.publish import H_UPDATES, MESSAGE_TYPE, body_of
from bus.transform import TransformContext

log = logging.getLogger("gridbus.network.deliver")
H_RELEASE = "gridbus-network-release"  # on a release message: the consumer to release
HOLD_S = 600.0  # retrying in place longer than this starts over from the queue (RabbitMQ's
                # consumer timeout, 30 min by default, would otherwise close the channel)


class Stopping(TransientDeliveryError):
    """The process is stopping while a batch waits for its destination: it stays unacked."""


@dataclass
class Update:
    path: dict
    raw: bytes = b""  # the body of a message of this update alone (made when needed)
    headers: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)

    @classmethod
    def of(cls, d: Delivery) -> "Update":
        """The update a delivery of one update carries; ValueError if it is not one."""
        return cls(decode(d.body), d.body, d.headers, d.properties)

    @classmethod
    def all_of(cls, d: Delivery) -> tuple[list["Update"], list[tuple[bytes, str]]]:
        """(updates, undecodable (body, why)) of a delivery of one update or of several."""
        try:
            doc = json.loads(d.body)
        except ValueError as exc:
            return [], [(d.body, str(exc))]
        if not (isinstance(doc, dict) and "updates" in doc and "consumer" not in doc):
            try:
                return [cls(checked(doc), d.body, d.headers, d.properties)], []
            except ValueError as exc:
                return [], [(d.body, str(exc))]
        if not isinstance(doc["updates"], list):
            return [], [(d.body, "updates must be a list")]
        headers = {k: v for k, v in d.headers.items() if k != H_UPDATES}
        properties = {**d.properties, "type": MESSAGE_TYPE}
        out, bad = [], []
        for path in doc["updates"]:
            try:
                checked(path)
            except ValueError as exc:
                bad.append((body_of(path) if isinstance(path, dict) else json.dumps(path).encode(), str(exc)))
                continue
            c, v = path["consumer"], path["version"]
            out.append(cls(path, b"", {**headers, "gridbus-consumer": c, "gridbus-version": v},
                           {**properties, "message_id": f"{c}@{v}"}))
        return out, bad

    @property
    def body(self) -> bytes:
        if not self.raw:
            self.raw = body_of(self.path)
        return self.raw

    @property
    def consumer(self) -> str:
        return self.path["consumer"]

    @property
    def version(self) -> int:
        return self.path["version"]


def decode(body: bytes) -> dict:
    """The consumer path a message carries; ValueError if it is not one."""
    return checked(json.loads(body))


def checked(path) -> dict:
    if not isinstance(path, dict) or not isinstance(path.get("consumer"), str) \
            or type(path.get("version")) is not int:
        raise ValueError("not a consumer path (consumer and version are required)")
    return path


def newer_only(updates: list[Update], delivered: dict[str, int]) -> tuple[list[Update], list[Update]]:
    """(to send, dropped): per consumer only versions above what was delivered and above the ones
    before it in the batch; the order of the batch is kept."""
    last = dict(delivered)
    keep, dropped = [], []
    for u in updates:
        if u.version <= last.get(u.consumer, -1):
            dropped.append(u)
        else:
            last[u.consumer] = u.version
            keep.append(u)
    return keep, dropped


def chunks(updates: list[Update], size: int) -> list[list[Update]]:
    return [updates[i:i + size] for i in range(0, len(updates), max(1, size))]


def rounds(updates: list[Update]) -> list[list[Update]]:
    """The batch as POSTs of at most one version per consumer: round k holds each consumer's k-th
    update.  Billing holds the last version of a POST, so a POST sent again after a crash (its
    delivery not yet recorded) must not start with an older version of the same consumer: that
    would be a 409.  Each round is recorded before the next is sent."""
    out: list[list[Update]] = []
    seen: dict[str, int] = {}
    for u in updates:
        k = seen.get(u.consumer, 0)
        seen[u.consumer] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(u)
    return out


@dataclass
class PartitionDelivery:
    """The ``handle`` of one partition's BatchConsumer."""

    route: BillingRoute
    partition: int
    broker_url: str
    state: DeliveryState
    stop: threading.Event
    sender: object = None
    transformer: object = None
    counts: dict = field(default_factory=lambda: {"sent": 0, "dropped": 0, "dead_lettered": 0, "retries": 0,
                                                  "parked": 0})

    def __post_init__(self) -> None:
        self.sender = self.sender or registry.connector(self.route.destination["connector"])
        self.transformer = self.transformer or registry.transformer(self.route.transform)
        self._dead_letters = ConfirmingPublisher(self.broker_url, name=f"gridbus-deliver-{self.route.id}-dl")

    def handle(self, batch: list[Delivery]) -> None:
        updates: list[Update] = []
        for d in batch:
            ups, bad = Update.all_of(d)
            updates += ups
            for body, why in bad:
                self._dead_letter([Update({}, body, d.headers, d.properties)], "DecodeError",
                                  f"undecodable update: {why}")
        delivered = self.state.delivered(self.route.id, {u.consumer for u in updates})
        updates, dropped = newer_only(updates, delivered)
        self.counts["dropped"] += len(dropped)
        for round_ in rounds(updates):
            parked = self.state.hold_if_parked(self.route.id, round_)
            if parked:
                self.counts["parked"] += sum(u.consumer in parked for u in round_)
                round_ = [u for u in round_ if u.consumer not in parked]
            for post in chunks(round_, self.route.batch_max):
                self._deliver(post)
        self._dead_letters.flush()

    def _deliver(self, updates: list[Update]) -> set[str]:
        """One POST (one version per consumer), retried in place; the consumers refused are
        dead-lettered, parked, and returned."""
        held_since = time.monotonic()
        backoff = Backoff(first_s=self.route.first_delay_s, cap_s=self.route.max_delay_s)
        refused_consumers: set[str] = set()
        while updates:
            try:
                self._send(updates)
                break
            except TransientDeliveryError as exc:
                if time.monotonic() - held_since > HOLD_S:
                    raise
                delay = exc.retry_after_s if exc.retry_after_s is not None else backoff.next_delay()
                delay = min(delay, self.route.max_delay_s)
                self.counts["retries"] += 1
                log.warning("%s/%d: %s; batch of %d held, again in %.1f s", self.route.id, self.partition, exc,
                            len(updates), delay)
                if self.stop.wait(delay):
                    raise Stopping(f"{self.route.id}: stopping with a batch not delivered") from exc
            except PermanentDeliveryError as exc:
                named = set(getattr(exc, "consumers", None) or ()) & {u.consumer for u in updates}
                refused = [u for u in updates if not named or u.consumer in named]
                reason = str(exc)
                self._dead_letter(refused, exc.__class__.__name__, reason, exc.status)
                self._dead_letters.flush()  # in the queue before its consumer is parked
                for u in refused:
                    self.state.park(self.route.id, u.consumer, u.version, reason)
                refused_consumers |= {u.consumer for u in refused}
                updates = [u for u in updates if named and u.consumer not in named]
        return refused_consumers

    # -- replays and releases -------------------------------------------------------------
    def release(self, batch: list[Delivery]) -> None:
        """``handle`` of the route's replays queue: a dead letter replayed (``gridbus dlq replay``)
        or a release (``gridbus network release``): deliver it, then the consumer's parked
        updates in version order, then let the consumer flow."""
        first: dict[str, list[Update]] = {}
        for d in batch:
            consumer = d.headers.get(H_RELEASE)
            if isinstance(consumer, str):
                first.setdefault(consumer, [])
                continue
            ups, bad = Update.all_of(d)
            for body, why in bad:
                self._dead_letter([Update({}, body, d.headers, d.properties)], "DecodeError",
                                  f"undecodable update: {why}")
            for u in ups:
                first.setdefault(u.consumer, []).append(u)
        for consumer, replayed in first.items():
            self._release(consumer, replayed)
        self._dead_letters.flush()

    def _release(self, consumer: str, replayed: list[Update]) -> None:
        while True:
            parked = [Update(decode(b), b, h, p) for _, b, h, p in self.state.parked_updates(self.route.id, consumer)]
            up_to = max((u.version for u in parked), default=-1)
            todo = sorted(replayed + parked, key=lambda u: u.version)
            replayed = []
            todo, _ = newer_only(todo, self.state.delivered(self.route.id, [consumer]))
            for u in todo:
                if self._deliver([u]):  # refused again: dead-lettered, the consumer stays parked
                    self.state.unpark(self.route.id, consumer, u.version, stay=True)
                    return
            if self.state.unpark(self.route.id, consumer, up_to):
                log.info("%s: consumer %s released (%d update(s) sent)", self.route.id, consumer, len(todo))
                return

    def _send(self, updates: list[Update]) -> None:
        first = updates[0]
        message_id = f"{self.route.id}-{first.consumer}-{first.version}-{len(updates)}"
        context = TransformContext(route_id=self.route.id, source_system="gridbus", message_id=message_id,
                                   correlation_id=message_id)
        outbound = self.transformer([u.path for u in updates], context)
        self.sender.send(outbound, self.route.destination, message_id)
        versions: dict[str, int] = {}
        for u in updates:
            versions[u.consumer] = max(u.version, versions.get(u.consumer, -1))
        self.state.record(self.route.id, versions)
        self.counts["sent"] += len(updates)

    def _dead_letter(self, deliveries: list[Update], error_class: str, reason: str,
                     status: int | None = None) -> None:
        """Each update to the route's dead-letter queue, original body and headers kept."""
        why = dl.reason_headers(self.route.id, self.route.system, error_class, reason[:2000], attempts=1,
                                grouped_by=reason)
        for d in deliveries:
            headers = {**d.headers, **why}
            properties = {k: v for k, v in d.properties.items() if k != "delivery_mode"}
            self._dead_letters.publish("", naming.dead_letter_queue_name(self.route.id), d.body,
                                       {**properties, "delivery_mode": 2}, headers)
        self.counts["dead_lettered"] += len(deliveries)
        log.error("%s/%d: %d update(s) dead-lettered: %s", self.route.id, self.partition, len(deliveries), reason)

    def close(self) -> None:
        self._dead_letters.close()


def consumer_of(route: BillingRoute, partition: int, broker_url: str, state: DeliveryState,
                stop: threading.Event) -> tuple[BatchConsumer, PartitionDelivery]:
    handler = PartitionDelivery(route, partition, broker_url, state, stop)
    consumer = BatchConsumer(broker_url, [topo.partition_queue_name(route.id, partition)], handler.handle,
                             name=f"gridbus-deliver-{route.id}-{partition}", batch_max=route.batch_max,
                             window_s=route.window_ms / 1000, prefetch=route.batch_max * 2)
    return consumer, handler


def serve(routes: list[BillingRoute], broker_url: str, stop: threading.Event,
          state: DeliveryState | None = None) -> None:
    """Declare the routes' topology, then deliver every partition of every route until ``stop``."""
    state = state or DeliveryState()
    while not stop.is_set():
        try:
            topo.declare(broker_url, [(r.id, r.partitions) for r in routes])
            break
        except BrokerError as exc:
            log.warning("declaring the delivery topology: %s", exc)
            stop.wait(2.0)
    threads, handlers = [], []
    for route in routes:
        consumers = [consumer_of(route, p, broker_url, state, stop) for p in range(route.partitions)]
        releaser = PartitionDelivery(route, -1, broker_url, state, stop)
        consumers.append((BatchConsumer(broker_url, [topo.replays_queue_name(route.id)], releaser.release,
                                        name=f"gridbus-deliver-{route.id}-replays", batch_max=100), releaser))
        for consumer, handler in consumers:
            handlers.append(handler)
            t = threading.Thread(target=consumer.serve, args=(stop,), name=consumer.name, daemon=True)
            t.start()
            threads.append(t)
    log.info("delivering %d partition(s) of %s", len(threads), ", ".join(r.id for r in routes))
    for t in threads:
        t.join()
    for h in handlers:
        h.close()
