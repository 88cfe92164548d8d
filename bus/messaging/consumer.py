"""The batch consumer: deliveries in batches to a function, acked only once it returned.

    consumer = BatchConsumer(broker_url, ["gridbus.trace"], store_events, name="gridbus-recorder",
                             batch_max=200, window_s=0.2)
    consumer.serve(stop)     # long-running: reconnects with backoff until ``stop`` is set
    consumer.drain()         # once: what the queues hold now, then return

A batch goes to ``handle`` when it holds ``batch_max`` deliveries or its first
delivery has waited ``window_s``.  When ``handle`` returns, the whole batch is
acked with one ``basic_ack(multiple=True)``; when it raises, nothing of the
batch is acked, the connection is closed (so the broker redelivers all of it,
marked redelivered) and the error goes up to ``serve``, which logs it and
reconnects.  ``between`` runs after every read of the socket, batch or not:
the place for periodic work on the consumer's thread (reports, pruning).

The client is pika: it reads a stream of deliveries faster than py-amqp
(docs/messaging.md has the measurement).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from bus.messaging.connect import pika_connect
from bus.messaging.errors import pika_errors
from bus.messaging.reconnect import Backoff, until_stopped

log = logging.getLogger("gridbus.amqp")
POLL_S = 0.2  # the longest a stop waits to be noticed
_PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
               "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the broker delivered it."""

    queue: str
    body: bytes
    redelivered: bool
    routing_key: str
    tag: int
    _props: Any  # pika's BasicProperties, read through ``headers`` and ``properties``

    @property
    def headers(self) -> dict:
        return dict(self._props.headers or {})

    @property
    def properties(self) -> dict[str, Any]:
        """The AMQP properties that were set (``message_id``, ``content_type``, ...), headers apart."""
        return {k: v for k in _PROPERTIES if (v := getattr(self._props, k)) is not None}


Handle = Callable[[list[Delivery]], None]


@contextlib.contextmanager
def _recursion_limit(limit: int | None) -> Iterator[None]:
    before = sys.getrecursionlimit()
    if limit is None or limit <= before:
        yield
        return
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


class BatchConsumer:
    """Consume ``queues`` on one channel and hand ``handle`` batches of deliveries.

    ``prefetch`` defaults to two batches, so the next batch arrives while one is handled.
    ``decode_recursion``: the recursion limit while pika decodes deliveries (it reads
    nested header tables recursively); ``handle`` always runs with the usual limit."""

    def __init__(self, broker_url: str, queues: Sequence[str], handle: Handle, *, name: str,
                 batch_max: int = 200, window_s: float = 0.2, prefetch: int | None = None,
                 between: Callable[[], None] | None = None, decode_recursion: int | None = None,
                 backoff: Backoff | None = None):
        if not queues:
            raise ValueError("a batch consumer needs at least one queue")
        if batch_max < 1 or window_s <= 0:
            raise ValueError("batch_max must be at least 1 and window_s above 0")
        self.broker_url, self.queues, self.handle, self.name = broker_url, list(queues), handle, name
        self.batch_max, self.window_s = batch_max, window_s
        self.prefetch = prefetch or batch_max * 2
        self.between, self.decode_recursion = between, decode_recursion
        self.backoff = backoff or Backoff()

    # -- the three ways to run it ---------------------------------------------------------
    def serve(self, stop: threading.Event, after_failure: Callable[[], None] | None = None) -> None:
        """Consume until ``stop``, reconnecting with backoff after a broker outage or a batch
        that ``handle`` did not take."""
        until_stopped(self.name, lambda: self.consume(stop), stop, after_failure, self.backoff)

    def consume(self, stop: threading.Event) -> int:
        """One connection, until ``stop`` (the batch in hand is finished and acked first).
        Returns how many deliveries were handled; raises ``BrokerError`` or what ``handle`` raised."""
        return self._run(stop=stop)

    def drain(self, idle_s: float = 1.0, timeout_s: float | None = None) -> int:
        """Take what the queues hold now, then return how many were handled.  Messages that
        arrive meanwhile wait for the next drain; it also ends after ``idle_s`` without a
        delivery (others consumed them) or after ``timeout_s``."""
        return self._run(stop=None, idle_s=idle_s, timeout_s=timeout_s)

    # -- one connection -------------------------------------------------------------------
    def _run(self, stop: threading.Event | None, idle_s: float = 1.0, timeout_s: float | None = None) -> int:
        conn = pika_connect(self.broker_url, self.name)
        pending: list[Delivery] = []
        first_at = [0.0]
        handled = 0
        try:
            with pika_errors(f"{self.name}: opening a channel"):
                channel = conn.channel()
                channel.basic_qos(prefetch_count=self.prefetch)
                waiting = None
                if stop is None:  # a drain takes what is there now
                    waiting = sum(channel.queue_declare(q, passive=True).method.message_count for q in self.queues)
                    if waiting == 0:
                        return 0
                for queue in self.queues:
                    channel.basic_consume(queue, self._on_message(queue, pending, first_at))
            started = last_seen = time.monotonic()
            while True:
                now = time.monotonic()
                limit = POLL_S if not pending else max(0.0, min(POLL_S, first_at[0] + self.window_s - now))
                before = len(pending)
                with pika_errors(f"{self.name}: consuming {', '.join(self.queues)}"), \
                        _recursion_limit(self.decode_recursion):
                    conn.process_data_events(time_limit=limit)
                now = time.monotonic()
                if len(pending) != before:
                    last_seen = now
                while len(pending) >= self.batch_max:
                    handled += self._hand_over(channel, pending, self.batch_max, first_at)
                if pending and now - first_at[0] >= self.window_s:
                    handled += self._hand_over(channel, pending, len(pending), first_at)
                if self.between is not None:
                    self.between()
                if stop is None:
                    if (handled + len(pending) >= waiting or now - last_seen > idle_s
                            or (timeout_s is not None and now - started > timeout_s)):
                        break
                elif stop.is_set():  # also while messages keep arriving
                    break
            if pending:
                handled += self._hand_over(channel, pending, len(pending), first_at)
        finally:
            try:
                conn.close()  # what was delivered and not acked goes back to its queue
            except Exception:  # noqa: BLE001 - closing a dead connection must not hide the real error
                pass
        return handled

    def _on_message(self, queue: str, pending: list[Delivery], first_at: list[float]):
        def on_message(channel, method, props, body) -> None:
            if not pending:
                first_at[0] = time.monotonic()
            pending.append(Delivery(queue, body, method.redelivered, method.routing_key, method.delivery_tag, props))
        return on_message

    def _hand_over(self, channel, pending: list[Delivery], count: int, first_at: list[float]) -> int:
        batch = pending[:count]
        try:
            self.handle(batch)
        except Exception:
            log.error("%s: a batch of %d from %s was not taken; none of it is acked, the broker "
                      "delivers it again", self.name, len(batch), ", ".join(self.queues), exc_info=True)
            raise
        with pika_errors(f"{self.name}: acking a batch"):
            channel.basic_ack(batch[-1].tag, multiple=True)
        del pending[:count]
        first_at[0] = time.monotonic()  # what remains is the start of the next batch
        return len(batch)
