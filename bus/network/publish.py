"""The outbox publisher: consumer-path updates from the network store to the broker, in order.

Each round reads ``store.pending_updates(limit)`` (in the order written: every consumer's
versions in order), publishes each update persistent and ``mandatory`` to
``gridbus.network.updates`` with its consumer's slot as routing key, waits until the broker
confirmed all of them, then ``mark_published``.  A crash between confirm and mark publishes
those updates again (at-least-once): the delivery process drops versions it already delivered
and billing answers 200 to an equal one.

One publisher at a time: leadership is an *exclusive* queue declared on the publishing
connection itself.  A second publisher's declare is refused (RESOURCE_LOCKED) and it waits; when
the leader's connection dies, the broker deletes the queue and another takes over.  Leadership and
publishing share one connection, so a publisher that lost its lease cannot go on publishing.
Two publishers interleaving would put a consumer's v1 after its v2 in a queue.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from bus.errors import BrokerError
from bus.messaging import ConfirmingPublisher, amqp_errors
from bus.network.delivery_topology import PUBLISHER_LEADER_QUEUE, UPDATES_EXCHANGE, slot_key, slot_of
from bus.network.store import NetworkStore, PathUpdate

log = logging.getLogger("gridbus.network.publish")
CONTENT_TYPE = "application/json"
MESSAGE_TYPE = "changed.ConsumerPath"


def message_of(update: PathUpdate) -> tuple[str, bytes, dict, dict]:
    """(routing key, body, properties, headers) of one outbox update."""
    body = json.dumps(update.body, separators=(",", ":"), sort_keys=True).encode("utf-8")
    properties = {"delivery_mode": 2, "content_type": CONTENT_TYPE, "type": MESSAGE_TYPE,
                  "message_id": f"{update.consumer}@{update.version}", "app_id": "gridbus-network"}
    headers = {"gridbus-consumer": update.consumer, "gridbus-version": update.version,
               "gridbus-outbox-id": update.id}
    return slot_key(slot_of(update.consumer)), body, properties, headers


class LeadingPublisher(ConfirmingPublisher):
    """A confirming publisher whose connection holds the leader queue, or fails to open."""

    def _open(self) -> None:
        super()._open()
        try:
            with amqp_errors("taking the network publisher's lease"):
                self._channel.queue_declare(PUBLISHER_LEADER_QUEUE, exclusive=True, auto_delete=True)
        except BrokerError:
            self.close()
            raise


@dataclass
class OutboxPublisher:
    store: NetworkStore
    broker_url: str
    batch: int = 2000
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        self._publisher = LeadingPublisher(self.broker_url, name="gridbus-network-publisher", window=512)

    def publish_once(self) -> int:
        """Publish what is pending now, in rounds of ``batch``; returns how many were published.
        Raises ``BrokerError`` (another publisher leads, the broker is away, a message unroutable)."""
        published = 0
        while True:
            updates = self.store.pending_updates(self.batch)
            if not updates:
                return published
            try:
                for update in updates:
                    key, body, properties, headers = message_of(update)
                    self._publisher.publish(UPDATES_EXCHANGE, key, body, properties, headers)
                self._publisher.flush()
            except BrokerError:
                self._publisher.close()  # a fresh connection (and lease) next time
                raise
            self.store.mark_published([u.id for u in updates])
            published += len(updates)

    def serve(self, stop: threading.Event) -> None:
        """Poll every ``poll_s`` until ``stop``; broker trouble or a lost lease waits and tries again."""
        waited_since: float | None = None
        try:
            while not stop.is_set():
                try:
                    n = self.publish_once()
                    if n:
                        log.info("published %d consumer-path updates", n)
                    if waited_since is not None:
                        log.info("publishing (after %.0f s without)", time.monotonic() - waited_since)
                        waited_since = None
                except BrokerError as exc:
                    if waited_since is None:
                        log.warning("not publishing: %s", exc)
                        waited_since = time.monotonic()
                    stop.wait(max(self.poll_s, 1.0))
                    continue
                stop.wait(self.poll_s)
        finally:
            self._publisher.close()
