"""Put a stored request on its route, and a reply on its way to a callback address.

Used by the gateway (on intake) and by `gridbus commands approve` (after the
second user's approval): both publish the same message, so an approved
command travels exactly as an unapproved small one does.
"""
from __future__ import annotations

from bus import naming, task_message
from bus.envelope import Envelope, new_traceparent
from bus.errors import BrokerError
from bus.messaging import ConfirmingPublisher
from bus.requests.store import Request, RequestStore
from bus.routes.model import Route

NOUNS = {"meter-readings": "MeterReadings", "billing-determinants": "BillingDeterminants",
         "commands": "EndDeviceControls"}
VERBS = {"meter-readings": "get", "billing-determinants": "get", "commands": "create"}


def request_message(route: Route, request: Request, traceparent: str | None = None) -> tuple:
    """(exchange, routing key, body, properties, headers) of ``request`` on ``route``."""
    extra = {naming.H_REQUEST_KIND: request.kind}
    if request.expires is not None:
        extra[naming.H_EXPIRES_AT] = request.expires
    envelope = Envelope(route_id=route.id, source=request.system, verb=VERBS[request.kind],
                        noun=NOUNS[request.kind], message_id=request.id,
                        correlation_id=request.correlation_id, reply_to=naming.REPLIES_QUEUE,
                        traceparent=traceparent or new_traceparent(), extra=extra)
    body, props, headers = task_message.build(envelope, request.document)
    return naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers


def publish_request(publisher: ConfirmingPublisher, route: Route, request: Request, store: RequestStore,
                    who: str, traceparent: str | None = None, **columns) -> Request:
    """Publish ``request`` on ``route`` (confirmed) and mark it sent (unless the store wrote it
    as sent already: ``RequestStore.create(sent_on=...)``)."""
    message = request_message(route, request, traceparent)
    # marked sent first: the reply may come back before this thread runs again
    sent = request if request.state == "sent" else store.transition(
        request.id, "sent", who, {"requested"}, f"published on route {route.id}", **columns)
    try:
        publisher.publish(*message)
        publisher.flush(timeout_s=10)
    except BrokerError as exc:
        store.transition(request.id, "failed", "gridbus", {"sent"}, f"not published: {exc}")
        raise
    return sent


def callback_message(routes: list[Route], request: Request, reply: dict) -> tuple | None:
    """(exchange, routing key, body, properties, headers) handing the reply of an asynchronous
    request to the callback route; None if there is no callback route or address."""
    callback = next((r for r in routes if r.source.connector == "replies"), None)
    if callback is None or not request.reply_address:
        return None
    envelope = Envelope(route_id=callback.id, source="gridbus", verb="reply", noun=NOUNS.get(request.kind, "Reply"),
                        message_id=f"{request.id}.callback", correlation_id=request.correlation_id)
    body, props, headers = task_message.build(envelope, {"address": request.reply_address,
                                                          "request_id": request.id, "reply": reply})
    return naming.INGRESS_EXCHANGE, naming.route_routing_key(callback.id), body, props, headers


def publish_callback(publisher: ConfirmingPublisher, routes: list[Route], request: Request, reply: dict) -> bool:
    """Hand the reply of an asynchronous request to the callback route; False if there is none."""
    message = callback_message(routes, request, reply)
    if message is None:
        return False
    publisher.publish(*message)
    publisher.flush(timeout_s=10)
    return True
