"""Move dead letters from the routes' dead-letter queues into the store: insert, commit, then ack.

A crash between commit and ack redelivers the message; its dl_id is already
stored, so it is skipped, not doubled.  Messages the broker dead-lettered itself
(a quorum queue's delivery limit: the poison backstop) carry no gridbus reason
headers; their reason is read from ``x-death``.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time

from bus import naming
from bus.deadletters import headers as dl
from bus.deadletters.store import TEXT_CHARS, DeadLetterStore, as_count, as_instant, as_text, dumps
from bus.envelope import H_ROUTE
from bus.messaging import BatchConsumer, Delivery, until_stopped

log = logging.getLogger("gridbus.dead-letters")
BATCH = 2000  # rows per transaction: a commit (fsync) per 2,000 dead letters, not per one
# pika reads header tables recursively, about two Python frames a level: a dead letter with a
# table nested 600 levels deep (4 KB) failed in pika's decoder at the default limit of 1,000,
# the connection closed, and the same message came back first after each reconnect.  One
# frame (128 KiB, what pika negotiates) holds at most about 22,000 levels of 6 bytes.
DECODE_RECURSION = 50_000


def _first_death(headers: dict) -> dict:
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    return first if isinstance(first, dict) else {}


def _route(headers: dict, queue: str) -> str:
    """The route a header names, if it names one; else the route whose queue it came from."""
    for value in (headers.get(dl.DL_ROUTE), headers.get(H_ROUTE)):
        if type(value) is str and naming.ROUTE_ID_PATTERN.match(value):
            return value
    return queue.removeprefix(naming.dead_letter_queue_name(""))


def row_of(delivery: Delivery) -> dict:
    """A store row for one dead letter as delivered.

    Headers are whatever the publisher sent: each is read as what its column takes
    (``store.as_text``, ``as_count``, ``as_instant``), never trusted to be one."""
    headers, properties = delivery.headers, delivery.properties
    body, queue = delivery.body, delivery.queue
    message_id = as_text(properties.get("message_id") or headers.get("id"))
    route = _route(headers, queue)
    now = time.time()
    if dl.DL_FINGERPRINT in headers:
        error_class = as_text(headers.get(dl.DL_ERROR_CLASS))
        reason = as_text(headers.get(dl.DL_REASON), TEXT_CHARS)
        fingerprint = as_text(headers[dl.DL_FINGERPRINT]) or dl.fingerprint(route, error_class, reason)
        first, last = headers.get(dl.DL_FIRST_FAILURE), headers.get(dl.DL_LAST_FAILURE)
        attempts, destination = headers.get(dl.DL_ATTEMPTS), as_text(headers.get(dl.DL_DESTINATION))
        key = f"{message_id}|{destination}|{as_text(last)}"
    else:  # dead-lettered by the broker itself
        death = _first_death(headers)
        why = as_text(death.get("reason") or headers.get("x-first-death-reason")) or "unknown"
        count = as_count(headers.get("x-delivery-count") or death.get("count"))
        error_class = "DeliveryLimitExceeded" if why == "delivery_limit" else "BrokerDeadLettered"
        reason = (f"delivered {count or 'too many'} times without an outcome (each time its worker "
                  f"died): quorum-queue delivery limit" if why == "delivery_limit"
                  else f"dead-lettered by the broker: {why}")
        fingerprint = dl.fingerprint(route, error_class, why)
        first = last = as_instant(death.get("time"), now)
        attempts, destination = count, headers.get(dl.PENDING_DESTINATIONS)
        destination = (",".join(map(as_text, destination)) if isinstance(destination, list)
                       else as_text(destination))
        key = f"{message_id}|x-death|{as_text(death.get('time'))}|{why}"
    return {  # each value made into what its column takes by ``DeadLetterStore.add`` (``storable``)
        "dl_id": hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:16], "message_id": message_id,
        "correlation_id": properties.get("correlation_id"), "route": route, "destination": destination,
        "fingerprint": fingerprint, "error_class": error_class, "reason": reason,
        "traceback": headers.get(dl.DL_TRACEBACK, ""), "attempts": attempts,
        "first_failure": as_instant(first, now), "last_failure": as_instant(last, now),
        "worker_host": headers.get(dl.DL_WORKER_HOST, ""), "collected_at": now, "body": body,
        "properties": dumps(properties), "headers": dumps(headers),
    }


def _row(delivery: Delivery) -> dict:
    """``row_of``, or, should reading it fail after all, a row that says so: a message the
    collector cannot read must still leave the queue, or it comes back first for ever."""
    queue, body = delivery.queue, delivery.body
    try:
        return row_of(delivery)
    except Exception as exc:  # noqa: BLE001 - the one message is kept with the reason
        log.error("dead letter on %s kept as unreadable: %s: %s", queue, exc.__class__.__name__, exc)
        now = time.time()
        reason = f"the dead-letter collector could not read its headers: {exc.__class__.__name__}: {exc}"
        return {
            "dl_id": hashlib.sha1(body + repr(now).encode()).hexdigest()[:16], "message_id": None,
            "correlation_id": None, "route": _route({}, queue), "destination": "",
            "fingerprint": dl.fingerprint(queue, "UnreadableDeadLetter", reason),
            "error_class": "UnreadableDeadLetter", "reason": reason, "traceback": "", "attempts": None,
            "first_failure": now, "last_failure": now, "worker_host": "", "collected_at": now, "body": body,
            "properties": "{}", "headers": "{}"}


def _consumer(broker_url: str, queues: list[str], store: DeadLetterStore) -> BatchConsumer:
    def add(batch: list[Delivery]) -> None:
        rows = [_row(d) for d in batch]
        with store.transaction():
            store.add(rows)
        # the consumer acks only once this returns: rows committed, so a crash redelivers, never loses

    return BatchConsumer(broker_url, queues, add, name="gridbus-dead-letter-collector", batch_max=BATCH,
                         window_s=0.1, decode_recursion=DECODE_RECURSION)


def collect(broker_url: str, queues: list[str], store: DeadLetterStore,
            stop: threading.Event | None = None, idle_s: float = 1.0) -> int:
    """Drain ``queues`` into the store.  Returns when they are empty (``stop`` is None)
    or when ``stop`` is set (the keeper's long-running mode)."""
    if not queues:
        return 0
    consumer = _consumer(broker_url, queues, store)
    return consumer.drain(idle_s) if stop is None else consumer.consume(stop)


def keep(broker_url: str, queues: list[str], store: DeadLetterStore, stop: threading.Event) -> None:
    """The keeper: collect continuously, reconnecting after broker outages, until ``stop``.

    Run it on the thread that opened ``store``: its sqlite3 connection works on that thread only."""
    if not queues:  # nothing to consume: wait (``collect`` would return at once, again and again)
        stop.wait()
        return
    consumer = _consumer(broker_url, queues, store)

    def collected() -> None:
        moved = consumer.consume(stop)
        if moved:
            log.info("collected %d dead letters", moved)

    until_stopped("dead-letter collector", collected, stop, backoff=consumer.backoff)
