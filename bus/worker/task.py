"""The Celery task body shared by every route, and what it does with each outcome.

Outcomes (the exception branch decides, see bus.errors):
  delivered               → reconciliation record; ack
  MessageError,
  PermanentDeliveryError  → dead-letter queue of the route with the reason; ack
  TransientDeliveryError,
  BrokerError, other      → a copy with attempt+1 waits in the broker's delay
                            levels, then comes back to the route queue; ack.
                            After the route's last attempt: dead-letter.
A worker killed at any point before the ack leaves the message in the queue
(acks_late + reject_on_worker_lost); the quorum queue's delivery limit
dead-letters a message that keeps killing its worker.
"""
from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from typing import Any

from kombu.transport.native_delayed_delivery import calculate_routing_key, level_name

from bus import naming, task_message
from bus.envelope import Envelope, H_CHUNK, H_CHUNKS, H_FILE, H_FILE_CHECKSUM
from bus.errors import MessageError, PermanentDeliveryError
from bus.publisher import ConfirmingPublisher
from bus.routes.model import Route
from bus.settings import Settings
from bus.worker.pipeline import Outcome, process

log = logging.getLogger("gridbus.worker")
_publisher: ConfirmingPublisher | None = None
_HOST = socket.gethostname()


def reset_publisher() -> None:
    global _publisher
    _publisher = None


def publisher() -> ConfirmingPublisher:
    global _publisher
    if _publisher is None:
        _publisher = ConfirmingPublisher(Settings.load().broker_url, "gridbus-worker")
    return _publisher


def _publish(exchange: str, key: str, body: bytes, properties: dict, headers: dict) -> None:
    pub = publisher()
    try:
        pub.publish(exchange, key, body, properties, headers)
        pub.flush()
    except Exception:
        # a broken connection is rebuilt on the next message; this one stays unacked
        pub.close()
        reset_publisher()
        raise


def _headers_of(request) -> dict[str, Any]:
    """Celery hands custom message headers to the task as request attributes."""
    headers = dict(getattr(request, "headers", None) or {})
    for key, value in vars(request).items():
        if key.startswith("gridbus-") or key == "traceparent":
            headers.setdefault(key, value)
    return headers


def register(app, route: Route) -> None:
    @app.task(name=route.task_name, bind=True, acks_late=True, ignore_result=True)
    def run(self, payload):
        headers = _headers_of(self.request)
        envelope = Envelope.from_headers(self.request.id, headers, self.request.reply_to)
        handle(route, envelope, payload)


def handle(route: Route, envelope: Envelope, payload: Any) -> None:
    try:
        outcome = process(route, envelope, payload)
    except (MessageError, PermanentDeliveryError) as exc:
        dead_letter(route, envelope, payload, exc)
        return
    except Exception as exc:  # transient by default: a later attempt may succeed
        if envelope.attempt >= route.retry.attempts:
            dead_letter(route, envelope, payload, exc, retries_exhausted=True)
        else:
            schedule_retry(route, envelope, payload, exc)
        return
    reconcile(envelope, outcome, "delivered")


def schedule_retry(route: Route, envelope: Envelope, payload: Any, exc: Exception) -> None:
    following = envelope.next_attempt()
    delay = route.retry.delay_s(following.attempt)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        delay = max(delay, int(retry_after + 0.999))
    body, props, headers = task_message.build(following, payload)
    headers["gridbus-last-error"] = f"{exc.__class__.__name__}: {exc}"[:500]
    log.warning("route %s message %s attempt %d failed (%s); retry in %ss",
                route.id, envelope.message_id, envelope.attempt, exc, delay)
    _publish(level_name(27), calculate_routing_key(delay, naming.route_routing_key(route.id)),
             body, props, headers)


def dead_letter(route: Route, envelope: Envelope, payload: Any, exc: Exception,
                retries_exhausted: bool = False) -> None:
    body, props, headers = task_message.build(envelope, payload)
    now = time.time()
    headers.update({
        "gridbus-dead-letter-reason": ("retries exhausted: " if retries_exhausted else "") +
                                      f"{exc.__class__.__name__}: {exc}"[:1000],
        "gridbus-error-class": exc.__class__.__name__,
        "gridbus-destination": getattr(exc, "destination", None) or "",
        "gridbus-traceback": "".join(traceback.format_exception(exc))[-4000:],
        "gridbus-failed-at": now,
        "gridbus-worker-host": _HOST,
    })
    log.error("route %s message %s dead-lettered: %s", route.id, envelope.message_id, exc)
    _publish(naming.dead_letter_exchange_name(route.id), "", body, props, headers)
    reconcile(envelope, None, "dead-lettered", reason=str(exc))


def reconcile(envelope: Envelope, outcome: Outcome | None, result: str, reason: str = "") -> None:
    """Tell the file-drop ingress what became of one chunk of a file."""
    checksum = envelope.extra.get(H_FILE_CHECKSUM)
    if not checksum:
        return
    record = {
        "route": envelope.route_id, "checksum": checksum, "file": envelope.extra.get(H_FILE),
        "chunk": envelope.extra.get(H_CHUNK), "chunks": envelope.extra.get(H_CHUNKS),
        "message_id": envelope.message_id, "result": result, "reason": reason,
        "rows_in": outcome.context.rows_in if outcome else None,
        "rejected": [r.as_dict() for r in outcome.context.rejections] if outcome else [],
        "readings": outcome.readings if outcome else 0, "events": outcome.events if outcome else 0,
    }
    _publish("", naming.RECONCILIATION_QUEUE, json.dumps(record).encode(),
             {"content_type": "application/json", "delivery_mode": 2,
              "message_id": f"{envelope.message_id}.{result}"}, {})
