"""The Celery task body shared by every route, and what it does with each outcome.

Outcomes (the exception branch decides, see bus.errors):
  delivered               → reconciliation record; ack
  MessageError,
  PermanentDeliveryError  → dead-letter queue of the route with the reason; ack
  TransientDeliveryError,
  BrokerError, other      → a copy with attempt+1 waits in the broker's delay
                            levels, then comes back to the route queue; ack.
                            After the route's last attempt: dead-letter.
Each destination has its own outcome: a retry or a dead letter names only the
destinations still owed the message (``gridbus-pending-destinations``).
A worker killed at any point before the ack leaves the message in the queue
(acks_late + reject_on_worker_lost); the quorum queue's delivery limit
dead-letters a message that keeps killing its worker.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from typing import Any

import orjson
from celery.exceptions import Reject
from kombu.transport.native_delayed_delivery import calculate_routing_key, level_name

from bus import hooks, naming, task_message
from bus.deadletters import headers as dl
from bus.envelope import Envelope, H_CHUNK, H_CHUNKS, H_FILE, H_FILE_CHECKSUM
from bus.errors import BrokerError, MessageError, PermanentDeliveryError
from bus.messaging import ConfirmingPublisher
from bus.requests import replies
from bus.routes.model import Route
from bus.settings import Settings
from bus.worker.pipeline import Outcome, process
from bus.worker.undecodable import undecodable

log = logging.getLogger("gridbus.worker")
# one publisher per thread: request-response routes run in a thread pool (a request
# waits on its destination), and a py-amqp channel is not shared between threads
_local = threading.local()
_HOST = socket.gethostname()


def reset_publisher() -> None:
    _local.publisher = None


def publisher() -> ConfirmingPublisher:
    if getattr(_local, "publisher", None) is None:
        _local.publisher = ConfirmingPublisher(Settings.load().broker_url, "gridbus-worker")
    return _local.publisher


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
        try:
            envelope = Envelope.from_headers(self.request.id, headers, self.request.reply_to)
        except (KeyError, ValueError, TypeError) as exc:  # a body under a task name, but no envelope
            reason = undecodable(payload) or f"not a route message: no envelope ({exc.__class__.__name__}: {exc})"
            body = payload["body"].encode() if undecodable(payload) else task_message.encode_body(payload)
            dead_letter_raw(naming.route_routing_key(route.id), {**headers, "gridbus-route": route.id},
                            {"message_id": self.request.id}, body, reason)
            return
        if (self.request.delivery_info or {}).get("redelivered"):
            envelope.extra[naming.H_REDELIVERED] = True
        try:
            handle(route, envelope, payload)
        except BrokerError as exc:
            # the outcome (retry or dead letter) could not be confirmed: the message must not be
            # acked; back to its queue, where the delivery limit bounds how often this repeats
            log.error("route %s message %s: %s; returned to the queue", route.id, envelope.message_id, exc)
            raise Reject(str(exc), requeue=True) from exc


def trace_fields(envelope: Envelope) -> dict:
    """What every trace event of this message carries (the bus's half of tracing)."""
    return {"message_id": envelope.message_id, "correlation_id": envelope.correlation,
            "causation_id": envelope.extra.get(dl.REPLAYED_FROM) or envelope.extra.get("gridbus-caused-by"),
            "traceparent": envelope.traceparent,
            "route": envelope.route_id, "attempt": envelope.attempt, "noun": envelope.noun}


def trace_outcome(route: Route, envelope: Envelope, outcome: Outcome, fields: dict) -> None:
    context = outcome.context
    hooks.emit("transformed", **fields, at=outcome.transformed_at, chain=list(route.transform),
               duration_s=outcome.transform_s,
               rows_in=context.rows_in, readings=outcome.readings, events=outcome.events,
               rejected=len(context.rejections), meters=sorted(context.meters))
    for receipt in outcome.receipts:
        hooks.emit("delivered", **fields, at=receipt.at, destination=receipt.destination,
                   status=receipt.status, duration_s=receipt.duration_s)


def _is_permanent(exc: Exception) -> bool:
    return isinstance(exc, (MessageError, PermanentDeliveryError))


def reply_message(envelope: Envelope, reply: dict, state: str | None = None) -> tuple[str, bytes, dict, dict]:
    """(queue, body, properties, headers) of the answer to a request: to its ``reply_to``
    queue, correlated by the request's id (the thread and the event-loop workers send the same)."""
    props = {"correlation_id": envelope.message_id, "message_id": f"{envelope.message_id}.reply",
             "content_type": "application/json", "delivery_mode": 2, "app_id": envelope.route_id}
    headers = {naming.H_REPLY_STATE: state} if state else {}
    return envelope.reply_to, orjson.dumps(reply, option=orjson.OPT_NON_STR_KEYS), props, headers


def _reply(envelope: Envelope, reply: dict, state: str | None = None) -> None:
    queue, body, props, headers = reply_message(envelope, reply, state)
    _publish("", queue, body, props, headers)


def _failed_reply(envelope: Envelope, payload: Any, code: str, reason: str, state: str | None = None) -> None:
    if envelope.reply_to:
        request = payload.get("Request") if isinstance(payload, dict) else None
        meters = request.get("meters") if isinstance(request, dict) else None
        _reply(envelope, replies.failed(envelope.noun, envelope.correlation, code, reason,
                                        meters if isinstance(meters, list) else ()), state)


def handle(route: Route, envelope: Envelope, payload: Any) -> None:
    reason = undecodable(payload)
    if reason is not None:  # bytes no route can take: dead-lettered as they came, with why
        log.error("route %s message %s cannot be read (%s); dead-lettered", route.id, envelope.message_id, reason)
        _body, props, headers = task_message.build(envelope, None)
        dead_letter_raw(naming.route_routing_key(route.id), headers, props, payload["body"].encode(), reason)
        return
    if envelope.reply_to and route.method == "request-response":
        return handle_request(route, envelope, payload)
    _handle(route, envelope, payload)


def expired(route: Route, envelope: Envelope, payload: Any) -> bool:
    """A command past its expiry is never executed: the requester is told so (True) instead.

    Only a first try can say "never executed": a retry or a redelivered message may follow
    a try that reached the destination, so it asks again (a destination answers a command id
    it has seen with its outcome, and refuses an expired one it has not)."""
    expires = envelope.extra.get(naming.H_EXPIRES_AT)
    if expires is None or time.time() < float(expires):
        return False
    if envelope.attempt > 1 or envelope.extra.get(naming.H_REDELIVERED):
        return False
    log.warning("route %s request %s expired before it was executed", route.id, envelope.message_id)
    _failed_reply(envelope, payload, "EXPIRED", "past its expiry before it could be sent; never executed",
                  "expired")
    return True


def handle_request(route: Route, envelope: Envelope, payload: Any) -> None:
    """A request: its answer (or why there is none) goes back to the requester; a command
    past its expiry is never executed."""
    if expired(route, envelope, payload):
        return
    fields = consumed(route, envelope)
    systems = envelope.extra.get(dl.PENDING_DESTINATIONS)
    try:
        outcome, error = process(route, envelope, payload, systems), None
    except Exception as exc:
        outcome, error = None, exc
    finish_request(route, envelope, payload, outcome, error, fields)


def finish_request(route: Route, envelope: Envelope, payload: Any, outcome: Outcome | None,
                   error: Exception | None, fields: dict) -> None:
    """After the destinations were asked (or the request failed before): retry, dead letter and
    the answer to the requester, whichever apply."""
    systems = envelope.extra.get(dl.PENDING_DESTINATIONS)
    if error is not None:
        _settle_error(route, envelope, payload, error, systems)
        # the request itself is bad: dead-lettered, and the requester told why
        _failed_reply(envelope, payload, "INVALID_REQUEST", "the request cannot be processed; see the dead letter")
        return
    retrying = _settle(route, envelope, payload, outcome, fields, systems)
    if outcome.reply is not None:
        _reply(envelope, outcome.reply)
    elif outcome.failures and not retrying:
        reason = "; ".join(str(e) for _, e in outcome.failures)[:500]
        if _is_command(envelope) and any(getattr(e, "maybe_sent", True) and not _is_permanent(e)
                                          for _, e in outcome.failures):
            # the destination may have acted on it: what became of it is not known, and saying
            # "failed" about a command that ran is the wrong answer the 2020 lesson forbids
            _failed_reply(envelope, payload, "OUTCOME_UNKNOWN", f"no answer from the destination, which may "
                          f"have executed it: {reason}", "unknown")
        else:
            code = ("DESTINATION_UNAVAILABLE" if all(not _is_permanent(e) for _, e in outcome.failures)
                    else "DESTINATION_FAILED")
            _failed_reply(envelope, payload, code, reason)


def consumed(route: Route, envelope: Envelope) -> dict:
    """Trace that a worker took the message; the trace fields of its later events."""
    fields = trace_fields(envelope)
    published = envelope.extra.get(task_message.PUBLISHED_AT)
    hooks.emit("consumed", **fields, worker=f"{_HOST}:{os.getpid()}", queue=route.queue_name,
               waited_s=max(0.0, time.time() - published) if published else None)
    return fields


def _handle(route: Route, envelope: Envelope, payload: Any) -> None:
    fields = consumed(route, envelope)
    systems = envelope.extra.get(dl.PENDING_DESTINATIONS)
    try:
        outcome = process(route, envelope, payload, systems)
    except Exception as exc:
        _settle_error(route, envelope, payload, exc, systems)
        return
    _settle(route, envelope, payload, outcome, fields, systems)


def _settle_error(route: Route, envelope: Envelope, payload: Any, exc: Exception, systems) -> None:
    """The message failed before any destination had an outcome."""
    if isinstance(exc, MessageError):  # the message itself is bad: no destination can take it
        dead_letter(route, envelope, payload, exc, systems)
        reconcile(envelope, None, "dead-lettered", reason=str(exc))
        return
    # a bug or a route option a transformer refuses: retrying will not fix it, and Celery
    # would ack the message on the way out; dead-lettered with the traceback, replayable after the fix
    log.error("route %s message %s: unexpected failure", route.id, envelope.message_id,
              exc_info=(type(exc), exc, exc.__traceback__))
    dead_letter(route, envelope, payload, exc, systems)
    reconcile(envelope, None, "dead-lettered", reason=f"{exc.__class__.__name__}: {exc}")


def _settle(route: Route, envelope: Envelope, payload: Any, outcome: Outcome, fields: dict, systems) -> bool:
    """Each destination's outcome: dead letter, retry or done; True if a retry was scheduled."""
    trace_outcome(route, envelope, outcome, fields)
    permanent = [(d, e) for d, e in outcome.failures if _is_permanent(e)]
    transient = [(d, e) for d, e in outcome.failures if not _is_permanent(e)]
    for destination, exc in permanent:
        dead_letter(route, envelope, payload, exc, [destination.system])
    if transient:
        exc = transient[0][1]
        owed = [d.system for d, _ in transient]
        if envelope.attempt >= route.retry.attempts and not _asks_until_expiry(envelope):
            dead_letter(route, envelope, payload, exc, owed, retries_exhausted=True)
        else:
            schedule_retry(route, envelope, payload, exc, owed)
            return True  # the reconciliation record waits for the final outcome
    result = "dead-lettered" if outcome.failures else "delivered"
    reason = "; ".join(str(e) for _, e in outcome.failures)
    reconcile(envelope, outcome, result, reason)
    return False


# how long past its expiry a command is still asked about: a destination that took it just
# before its expiry answers within its own timeout
ASK_PAST_EXPIRY_S = 120.0


def _is_command(envelope: Envelope) -> bool:
    return envelope.extra.get(naming.H_REQUEST_KIND) == "commands" and bool(envelope.reply_to)


def _asks_until_expiry(envelope: Envelope) -> bool:
    """A command is retried past the route's attempts until shortly after its expiry: transient
    is not final, and a command whose first try may have run must be asked until it is known."""
    expires = envelope.extra.get(naming.H_EXPIRES_AT)
    return (_is_command(envelope) and expires is not None
            and time.time() < float(expires) + ASK_PAST_EXPIRY_S)


def _retry_headers(envelope: Envelope, exc: Exception, owed: list[str]) -> dict:
    return {dl.FIRST_FAILURE: envelope.extra.get(dl.FIRST_FAILURE) or time.time(),
            dl.PENDING_DESTINATIONS: owed,
            "gridbus-last-error": f"{exc.__class__.__name__}: {exc}"[:500]}


def schedule_retry(route: Route, envelope: Envelope, payload: Any, exc: Exception, owed: list[str]) -> None:
    following = envelope.next_attempt()
    following.extra.update(_retry_headers(envelope, exc, owed))
    delay = route.retry.delay_s(following.attempt)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        delay = max(delay, int(retry_after + 0.999))
    body, props, headers = task_message.build(following, payload)
    log.warning("route %s message %s attempt %d failed for %s (%s); retry in %ss",
                route.id, envelope.message_id, envelope.attempt, ",".join(owed), exc, delay)
    _publish(level_name(27), calculate_routing_key(delay, naming.route_routing_key(route.id)),
             body, props, headers)
    hooks.emit("retried", **{**trace_fields(envelope), "attempt": following.attempt}, delay_s=delay,
               reason=str(exc), destinations=owed)


def dead_letter(route: Route, envelope: Envelope, payload: Any, exc: Exception,
                owed: list[str] | None, retries_exhausted: bool = False) -> None:
    """Publish the message as it failed, plus why, to the route's dead-letter exchange."""
    body, props, headers = task_message.build(envelope, payload)
    if owed:
        headers[dl.PENDING_DESTINATIONS] = owed
    message = str(exc)
    headers.update(dl.reason_headers(
        route.id, getattr(exc, "destination", None) or ",".join(owed or []), exc.__class__.__name__,
        (f"retries exhausted after {envelope.attempt} attempts: " if retries_exhausted else "") + message[:1000],
        attempts=envelope.attempt, grouped_by=message, first_failure=envelope.extra.get(dl.FIRST_FAILURE),
        traceback="".join(traceback.format_exception(exc))[-4000:]))
    log.error("route %s message %s dead-lettered: %s", route.id, envelope.message_id, exc)
    _publish(naming.dead_letter_exchange_name(route.id), "", body, props, headers)
    hooks.emit("dead-lettered", **trace_fields(envelope), reason=headers[dl.DL_REASON], destinations=owed,
               fingerprint=headers[dl.DL_FINGERPRINT])


def dead_letter_raw(routing_key: str | None, headers: dict, properties: dict, body: bytes, reason: str) -> None:
    """Publish bytes that are not a readable route message to their route's dead-letter
    exchange, as they came, with the reason (the route from the headers, else the routing key)."""
    route_id = headers.get("gridbus-route")
    if isinstance(route_id, bytes):
        route_id = route_id.decode("utf-8", "replace")
    if not route_id and routing_key and routing_key.startswith(naming.route_routing_key("")):
        route_id = routing_key[len(naming.route_routing_key("")):]
    if not route_id:
        raise MessageError(f"a message with no route cannot be dead-lettered: {reason}")
    headers = {k: v for k, v in headers.items() if isinstance(k, str)}
    headers.update(dl.reason_headers(route_id, "", "UndecodableMessage", reason,
                                     attempts=headers.get("gridbus-attempt", 1), grouped_by=reason.split(":")[0]))
    props = {k: v for k, v in properties.items()
             if k in ("message_id", "correlation_id", "content_type", "content_encoding", "app_id", "type",
                      "timestamp", "reply_to")}
    props["delivery_mode"] = 2
    _publish(naming.dead_letter_exchange_name(route_id), "", body, props, headers)
    hooks.emit("dead-lettered", message_id=props.get("message_id") or headers.get("id"), route=route_id,
               reason=reason, destinations=None, fingerprint=headers[dl.DL_FINGERPRINT], attempt=1)


def reconcile(envelope: Envelope, outcome: Outcome | None, result: str, reason: str = "") -> None:
    """Tell the file-drop ingress what became of one chunk of a file."""
    checksum = envelope.extra.get(H_FILE_CHECKSUM)
    if not checksum or envelope.extra.get(dl.REPLAYED_FROM):
        return  # replays are not part of the file's first reconciliation
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
