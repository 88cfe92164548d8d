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
from bus.amqp_client import pika_connect, pika_errors, until_stopped
from bus.deadletters import headers as dl
from bus.deadletters.store import DeadLetterStore, dumps
from bus.envelope import H_ROUTE

log = logging.getLogger("gridbus.dead-letters")
BATCH = 2000  # rows per transaction: a commit (fsync) per 2,000 dead letters, not per one


def _first_death(headers: dict) -> dict:
    deaths = headers.get("x-death") or []
    return deaths[0] if deaths else {}


def _epoch(value) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


_PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
               "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id")


def row_of(props, body: bytes, queue: str) -> dict:
    """A store row for one dead letter as delivered by pika (``props``: BasicProperties)."""
    headers = dict(props.headers or {})
    properties = {k: getattr(props, k) for k in _PROPERTIES if getattr(props, k) is not None}
    message_id = properties.get("message_id") or headers.get("id") or ""
    route = headers.get(dl.DL_ROUTE) or headers.get(H_ROUTE) or queue.removeprefix(naming.dead_letter_queue_name(""))
    if dl.DL_FINGERPRINT in headers:
        error_class, reason = headers.get(dl.DL_ERROR_CLASS), headers.get(dl.DL_REASON)
        fingerprint = headers[dl.DL_FINGERPRINT]
        first, last = headers.get(dl.DL_FIRST_FAILURE), headers.get(dl.DL_LAST_FAILURE)
        attempts, destination = headers.get(dl.DL_ATTEMPTS), headers.get(dl.DL_DESTINATION)
        key = f"{message_id}|{destination}|{last}"
    else:  # dead-lettered by the broker itself
        death = _first_death(headers)
        why = death.get("reason") or headers.get("x-first-death-reason") or "unknown"
        count = headers.get("x-delivery-count") or death.get("count")
        error_class = "DeliveryLimitExceeded" if why == "delivery_limit" else "BrokerDeadLettered"
        reason = (f"delivered {count or 'too many'} times without an outcome (each time its worker "
                  f"died): quorum-queue delivery limit" if why == "delivery_limit"
                  else f"dead-lettered by the broker: {why}")
        fingerprint = dl.fingerprint(route, error_class, why)
        first = last = _epoch(death.get("time")) or time.time()
        attempts, destination = count, headers.get(dl.PENDING_DESTINATIONS)
        destination = ",".join(destination) if isinstance(destination, list) else (destination or "")
        key = f"{message_id}|x-death|{death.get('time')}|{why}"
    return {
        "dl_id": hashlib.sha1(key.encode()).hexdigest()[:16], "message_id": message_id,
        "correlation_id": properties.get("correlation_id"), "route": route, "destination": destination or "",
        "fingerprint": fingerprint, "error_class": error_class, "reason": reason,
        "traceback": headers.get(dl.DL_TRACEBACK, ""), "attempts": attempts,
        "first_failure": first, "last_failure": last, "worker_host": headers.get(dl.DL_WORKER_HOST, ""),
        "collected_at": time.time(), "body": body,
        "properties": dumps(properties), "headers": dumps(headers),
    }


def collect(broker_url: str, queues: list[str], store: DeadLetterStore,
            stop: threading.Event | None = None, idle_s: float = 1.0) -> int:
    """Drain ``queues`` into the store.  Returns when they are empty (``stop`` is None)
    or when ``stop`` is set (the keeper's long-running mode)."""
    if not queues:
        return 0
    conn = pika_connect(broker_url, "gridbus-dead-letter-collector")
    moved = 0
    try:
        with pika_errors("collecting dead letters"):
            ch = conn.channel()
            ch.basic_qos(prefetch_count=BATCH * 2)
            pending: list[tuple[int, dict]] = []

            def flush() -> None:
                nonlocal moved
                if not pending:
                    return
                with store.transaction():
                    store.add(row for _tag, row in pending)
                # acked only once the rows are committed: a crash here redelivers, never loses
                ch.basic_ack(pending[-1][0], multiple=True)
                moved += len(pending)
                pending.clear()

            def on_message(queue):
                def handle(channel, method, props, body):
                    pending.append((method.delivery_tag, row_of(props, body, queue)))
                    if len(pending) >= BATCH:
                        flush()
                return handle

            # a one-off drain takes what is there now; later arrivals wait for the next run
            waiting = sum(ch.queue_declare(q, passive=True).method.message_count for q in queues)
            if stop is None and waiting == 0:
                return 0
            for queue in queues:
                ch.basic_consume(queue, on_message(queue))
            last_count, idle_since = -1, time.monotonic()
            while True:
                conn.process_data_events(time_limit=0.1)
                seen = moved + len(pending)
                if stop is None and seen >= waiting:
                    break
                if seen != last_count:
                    last_count, idle_since = seen, time.monotonic()
                else:
                    flush()
                    if stop is None and time.monotonic() - idle_since > idle_s:
                        break
                if stop is not None and stop.is_set():  # also while dead letters keep arriving
                    break
            flush()
    finally:
        try:
            conn.close()
        except Exception:
            pass
    return moved


def dead_letter_queues(route_ids: list[str]) -> list[str]:
    return [naming.dead_letter_queue_name(r) for r in route_ids]


def keep(broker_url: str, queues: list[str], store: DeadLetterStore, stop: threading.Event) -> None:
    """The keeper: collect continuously, reconnecting after broker outages, until ``stop``.

    Run it on the thread that opened ``store``: its sqlite3 connection works on that thread only."""
    if not queues:  # nothing to consume: wait (``collect`` would return at once, again and again)
        stop.wait()
        return

    def collected() -> None:
        moved = collect(broker_url, queues, store, stop)
        if moved:
            log.info("collected %d dead letters", moved)

    until_stopped("dead-letter collector", collected, stop)
