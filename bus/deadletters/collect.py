"""Move dead letters from the routes' dead-letter queues into the store: insert, commit, then ack.

A crash between commit and ack redelivers the message; its dl_id is already
stored, so it is skipped, not doubled.  Messages the broker dead-lettered itself
(a quorum queue's delivery limit: the poison backstop) carry no gridbus reason
headers; their reason is read from ``x-death``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

import amqp

from bus import naming
from bus.amqp_client import broker_errors, connect
from bus.deadletters import headers as dl
from bus.deadletters.store import DeadLetterStore, to_json
from bus.envelope import H_ROUTE

log = logging.getLogger("gridbus.dead-letters")
BATCH = 500


def _first_death(headers: dict) -> dict:
    deaths = headers.get("x-death") or []
    return deaths[0] if deaths else {}


def _epoch(value) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def row_of(message: amqp.Message, queue: str) -> dict:
    headers = dict(message.headers or {})
    props = {k: v for k, v in message.properties.items() if k != "application_headers"}
    message_id = props.get("message_id") or headers.get("id") or ""
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
        error_class = "DeliveryLimitExceeded" if why == "delivery_limit" else f"BrokerDeadLettered"
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
        "correlation_id": props.get("correlation_id"), "route": route, "destination": destination or "",
        "fingerprint": fingerprint, "error_class": error_class, "reason": reason,
        "traceback": headers.get(dl.DL_TRACEBACK, ""), "attempts": attempts,
        "first_failure": first, "last_failure": last, "worker_host": headers.get(dl.DL_WORKER_HOST, ""),
        "collected_at": time.time(), "body": bytes(message.body),
        "properties": json.dumps(to_json(props)), "headers": json.dumps(to_json(headers)),
    }


def collect(broker_url: str, queues: list[str], store: DeadLetterStore,
            stop: threading.Event | None = None, idle_s: float = 0.3) -> int:
    """Drain ``queues`` into the store.  Returns when they are empty (``stop`` is None)
    or when ``stop`` is set (the keeper's long-running mode)."""
    conn = connect(broker_url, "gridbus-dead-letter-collector")
    moved = 0
    try:
        with broker_errors("collecting dead letters"):
            ch = conn.channel()
            ch.auto_decode = False  # keep the body as the bytes on the wire, never a decoded str
            ch.basic_qos(0, BATCH * 2, False)
            pending: list[tuple[amqp.Message, str]] = []

            def flush() -> None:
                nonlocal moved
                if not pending:
                    return
                with store.transaction():
                    store.add(row_of(m, q) for m, q in pending)
                # acked only once the rows are committed: a crash here redelivers, never loses
                ch.basic_ack(pending[-1][0].delivery_tag, multiple=True)
                moved += len(pending)
                pending.clear()

            for queue in queues:
                ch.basic_consume(queue, callback=lambda m, q=queue: pending.append((m, q)))
            last = time.monotonic()
            while True:
                try:
                    conn.drain_events(timeout=0.1)
                    last = time.monotonic()
                except TimeoutError:
                    flush()
                    if stop is None and time.monotonic() - last > idle_s:
                        break
                    if stop is not None and stop.is_set():
                        break
                if len(pending) >= BATCH:
                    flush()
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
    """The keeper: collect continuously, reconnecting after broker outages."""
    while not stop.is_set():
        try:
            moved = collect(broker_url, queues, store, stop)
            if moved:
                log.info("collected %d dead letters", moved)
        except Exception as exc:
            log.warning("dead-letter collector: %s; retrying in 2s", exc)
            stop.wait(2)
