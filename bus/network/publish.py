"""The outbox publisher: consumer-path updates from the network store to the broker, in order.

Each round reads ``store.pending_updates(limit)`` (in the order written: every consumer's
versions in order), groups the updates by their consumer's slot (``messages_of``: up to
``per_message`` updates of one slot per message, in the order written), publishes each message
persistent and ``mandatory`` to ``gridbus.network.updates`` with the slot as routing key, waits
until the broker confirmed all of them, then ``mark_published``.  One message per update cost the
broker and both ends about a millisecond each (a DT move of 10,000 consumers spent 15 s in the
publisher alone); a slot's updates all go to the same partition queue of every route, so a
message of them keeps each consumer's order.  A crash between confirm and mark publishes
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
import sqlite3
import threading
import time
from dataclasses import dataclass

import orjson

from bus.errors import BrokerError
from bus.messaging import ConfirmingPublisher, amqp_errors
from bus.network.delivery_topology import PUBLISHER_LEADER_QUEUE, UPDATES_EXCHANGE, slot_key, slot_of
from bus.network.store import NetworkStore, PathUpdate

log = logging.getLogger("gridbus.network.publish")
CONTENT_TYPE = "application/json"
MESSAGE_TYPE = "changed.ConsumerPath"
BATCH_TYPE = "changed.ConsumerPaths"
H_UPDATES = "gridbus-updates"  # on a message of several updates: how many
PER_MESSAGE = 100  # updates of one slot per message
WATCH_S = 0.02  # how often an idle publisher looks whether the store changed


def body_of(path: dict) -> bytes:
    return json.dumps(path, separators=(",", ":"), sort_keys=True).encode("utf-8")


def message_of(update: PathUpdate) -> tuple[str, bytes, dict, dict]:
    """(routing key, body, properties, headers) of one outbox update."""
    properties = {"delivery_mode": 2, "content_type": CONTENT_TYPE, "type": MESSAGE_TYPE,
                  "message_id": f"{update.consumer}@{update.version}", "app_id": "gridbus-network"}
    headers = {"gridbus-consumer": update.consumer, "gridbus-version": update.version,
               "gridbus-outbox-id": update.id}
    return slot_key(slot_of(update.consumer)), body_of(update.body), properties, headers


def messages_of(updates: list[PathUpdate], per_message: int = PER_MESSAGE) -> list[tuple[str, bytes, dict, dict]]:
    """(routing key, body, properties, headers) of messages of up to ``per_message`` updates of one
    slot each, in the order written within each slot.  A lone update is ``message_of``'s message;
    several are ``{"updates": [path, ...]}`` (the delivery process reads both)."""
    by_slot: dict[int, list[PathUpdate]] = {}
    for u in updates:
        by_slot.setdefault(slot_of(u.consumer), []).append(u)
    out = []
    for slot, ups in by_slot.items():
        for i in range(0, len(ups), per_message):
            part = ups[i:i + per_message]
            if len(part) == 1:
                out.append(message_of(part[0]))
                continue
            body = orjson.dumps({"updates": [u.body for u in part]}, option=orjson.OPT_SORT_KEYS)
            properties = {"delivery_mode": 2, "content_type": CONTENT_TYPE, "type": BATCH_TYPE,
                          "message_id": f"outbox-{part[0].id}+{len(part)}", "app_id": "gridbus-network"}
            out.append((slot_key(slot), body, properties, {H_UPDATES: len(part)}))
    return out


class LeadingPublisher(ConfirmingPublisher):
    """A confirming publisher whose connection holds the leader queue, or fails to open."""

    def lead(self) -> None:
        """Hold the lease (open the connection) now, whether or not anything is to be published:
        a standby knows it is one from its start, not only when the outbox has something."""
        if self._channel is None:
            self._open()

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
    per_message: int = PER_MESSAGE

    def __post_init__(self) -> None:
        self._publisher = LeadingPublisher(self.broker_url, name="gridbus-network-publisher", window=512)
        self._watch = _SqliteWatch.of(self.store)

    def publish_once(self) -> int:
        """Publish what is pending now, in rounds of ``batch``; returns how many were published.
        Raises ``BrokerError`` (another publisher leads, the broker is away, a message unroutable)."""
        published = 0
        try:
            self._publisher.lead()
        except BrokerError:
            self._publisher.close()
            raise
        while True:
            updates = self.store.pending_updates(self.batch)
            if not updates:
                return published
            try:
                for key, body, properties, headers in messages_of(updates, self.per_message):
                    self._publisher.publish(UPDATES_EXCHANGE, key, body, properties, headers)
                self._publisher.flush()
            except BrokerError:
                self._publisher.close()  # a fresh connection (and lease) next time
                raise
            self.store.mark_published([u.id for u in updates])
            published += len(updates)

    def serve(self, stop: threading.Event) -> None:
        """Publish until ``stop``: after each round it waits for the store to change (a SQLite
        store is watched every 20 ms; others, and at most ``poll_s`` in any case); broker trouble
        or a lost lease waits and tries again."""
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
                self._wait_for_changes(stop)
        finally:
            self._publisher.close()
            if self._watch is not None:
                self._watch.close()

    def _wait_for_changes(self, stop: threading.Event) -> None:
        """Until the store has a commit it had not (``PRAGMA data_version``), ``poll_s`` passed, or
        ``stop``.  A GIS document applied is published within ``WATCH_S`` instead of half a
        ``poll_s`` on average."""
        if self._watch is None:
            stop.wait(self.poll_s)
            return
        deadline = time.monotonic() + self.poll_s
        while not stop.is_set() and time.monotonic() < deadline:
            if self._watch.changed():
                return
            stop.wait(min(WATCH_S, max(0.0, deadline - time.monotonic())))


class _SqliteWatch:
    """Whether another connection committed to a SQLite store since the last look: ``PRAGMA
    data_version`` of a connection of our own (one page read, no table touched)."""

    def __init__(self, path: str):
        self._db = sqlite3.connect(path, timeout=5, check_same_thread=False)
        self._last = self._version()

    @classmethod
    def of(cls, store: NetworkStore) -> "_SqliteWatch | None":
        from bus.network.db import SqliteDb

        if not isinstance(getattr(store, "db", None), SqliteDb):
            return None  # PostgreSQL: polled every poll_s
        try:
            return cls(store.db.location)
        except sqlite3.Error:
            return None

    def _version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def changed(self) -> bool:
        try:
            now = self._version()
        except sqlite3.Error:
            return True  # look at the outbox: its own query says what is wrong
        changed, self._last = now != self._last, now
        return changed

    def close(self) -> None:
        self._db.close()
