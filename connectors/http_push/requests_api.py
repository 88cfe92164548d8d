"""The gateway's request endpoints: billing determinants, on-demand reads, commands.

    POST /v1/requests/<path>   answered with the reply (sync), 202 + request id (async or
                               pending approval), 504 + request id (sync wait timed out)
    GET  /v1/requests/<id>     state, reply and audit trail of a request (the asking system's own)

Command safety lives here, before anything is published: only the route's
source system may command (403 for an HES or GIS key), disconnects are rate
limited per system, a command over ``approval_above`` meters waits for a second
user (`gridbus commands approve`), every command expires, and a command id is
answered, not executed, the second time.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from marshmallow import ValidationError as SchemaError

from bus.envelope import child_traceparent, new_message_id
from bus.errors import BrokerError
from bus.requests import replies
from bus.requests.dispatch import NOUNS, publish_request
from bus.requests.store import Request, RequestStore
from bus.routes.model import Route
from connectors.http_push.ratelimit import RateLimiter
from connectors.http_push.request_schemas import BODIES, RequestDocumentSchema

log = logging.getLogger("gridbus.gateway")
_DOCUMENT = RequestDocumentSchema()


class Slot:
    """One waiting request: set when its reply is stored, with the stored request."""

    __slots__ = ("event", "request")

    def __init__(self):
        self.event = threading.Event()
        self.request: Request | None = None


class Waiters:
    """Requests a gateway thread waits on; the reply consumer wakes them."""

    def __init__(self):
        self._slots: dict[str, Slot] = {}
        self._lock = threading.Lock()

    def register(self, request_id: str) -> Slot:
        with self._lock:
            return self._slots.setdefault(request_id, Slot())

    def done(self, request_id: str, request: Request | None = None) -> None:
        with self._lock:
            slot = self._slots.get(request_id)
        if slot:
            slot.request = request
            slot.event.set()

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._slots.pop(request_id, None)


class Answer:
    def __init__(self, status: int, body: dict, headers: list | None = None):
        self.status, self.body, self.headers = status, body, headers or []


class RequestApi:
    def __init__(self, routes: list[Route], store: RequestStore, publisher, waiters: Waiters,
                 max_waiting_per_system: int = 16):
        self.routes = {r.source.options["path"].strip("/"): r for r in routes}
        self.store = store
        self.publisher = publisher  # callable: this thread's confirming publisher
        self.waiters = waiters
        # a system may hold only so many gateway threads waiting for replies: billing's waits
        # must never take every thread, or the MDMS's onward requests (which billing's replies
        # need) could not get in, and every request would time out together
        self.max_waiting = max_waiting_per_system
        self._waiting: dict[str, int] = {}
        self._waiting_lock = threading.Lock()
        # disconnects per system and minute, counted in meters: one token bucket per route
        self.disconnects = {r.id: RateLimiter(r.source.options["disconnects_per_minute"] / 60.0,
                                              burst=r.source.options["disconnects_per_minute"])
                            for r in routes if r.source.options["kind"] == "commands"}

    # -- POST ------------------------------------------------------------------------
    def post(self, route: Route, system: str, user: str | None, document: Any, traceparent: str | None) -> Answer:
        kind, options = route.source.options["kind"], route.source.options
        noun = NOUNS[kind]
        if system != route.source.system:
            return _failed(403, noun, "FORBIDDEN", f"{system} may not send {kind} requests on route {route.id} "
                                                   f"(only {route.source.system} may)")
        try:
            doc = _DOCUMENT.load(document if isinstance(document, dict) else {})
            body = BODIES[kind]().load(doc["Request"])
        except SchemaError as exc:
            return _failed(400, noun, "INVALID_REQUEST", f"{exc.messages}")
        header = doc["Header"]
        meters = body.get("meters") or []
        if len(meters) > options["max_meters"]:
            return _failed(413, noun, "TOO_MANY_METERS", f"{len(meters)} meters; this route takes at most "
                                                         f"{options['max_meters']}")
        client_key = body.get("commandId") if kind == "commands" else header.get("MessageID")
        if client_key:
            seen = self.store.by_client_key(system, client_key)
            if seen:  # a retried request: answered from the record, never executed twice
                return self._status_answer(seen, 200 if seen.reply else 202, duplicate=True)
        expires = None
        state = "requested"
        if kind == "commands":
            expires = (body["expiresAt"].timestamp() if body.get("expiresAt")
                       else time.time() + options["default_expiry_s"])
            if expires <= time.time():
                return _failed(400, noun, "EXPIRED", "expiresAt is in the past: a command is never executed late")
            if body["action"] == "disconnect":
                wait = self.disconnects[route.id].take(system, cost=len(meters))
                if wait:
                    return _failed(429, noun, "DISCONNECT_RATE", f"{system} is over its rate of "
                                   f"{options['disconnects_per_minute']} disconnects a minute",
                                   [("Retry-After", str(max(1, round(wait + 0.5))))])
            if len(meters) > options["approval_above"] and not self.store.approved_command(client_key):
                state = "pending-approval"
        waits = state == "requested" and not (header.get("AsyncReplyFlag") and header.get("ReplyAddress"))
        if waits and not self._enter(system):
            return _failed(503, noun, "BUSY", f"{system} already has {self.max_waiting} requests waiting for "
                           "replies at this gateway; retry shortly or ask asynchronously", [("Retry-After", "1")])
        try:
            # the request document travels with the fields we checked, unchanged otherwise
            request = self.store.create(
                id=new_message_id(), system=system, requested_by=user or system, kind=kind, route=route.id,
                client_key=client_key, action=body.get("action"), meters=len(meters), state=state,
                expires=expires, reply_address=header.get("ReplyAddress") if header.get("AsyncReplyFlag") else None,
                correlation_id=header.get("CorrelationID"), document=_forwarded(document, expires),
                sent_on=route.id if state == "requested" else None)
            if request is None:  # the same client key raced in on another thread
                return self._status_answer(self.store.by_client_key(system, client_key), 202, duplicate=True)
            if state == "pending-approval":
                return self._status_answer(request, 202, note=f"{len(meters)} meters is more than "
                                           f"{options['approval_above']}: waits for a second user's approval "
                                           f"(gridbus commands approve {request.id})")
            return self._send(route, request, traceparent, noun, options)
        finally:
            if waits:
                self._leave(system)

    def _send(self, route: Route, request: Request, traceparent: str | None, noun: str, options: dict) -> Answer:
        slot = self.waiters.register(request.id)
        try:
            try:
                publish_request(self.publisher(), route, request, self.store, request.requested_by,
                                child_traceparent(traceparent) if traceparent else None)
            except BrokerError as exc:  # publish_request marked it failed
                log.error("request %s not published: %s", request.id, exc)
                return _failed(503, noun, "BROKER_UNAVAILABLE", "the bus cannot take it now; retry",
                               [("Retry-After", "5")])
            if request.reply_address:
                return self._status_answer(self.store.get(request.id), 202)
            return self._wait(request.id, options["timeout_s"], slot, noun)
        finally:
            self.waiters.forget(request.id)

    def _enter(self, system: str) -> bool:
        with self._waiting_lock:
            if self._waiting.get(system, 0) >= self.max_waiting:
                return False
            self._waiting[system] = self._waiting.get(system, 0) + 1
            return True

    def _leave(self, system: str) -> None:
        with self._waiting_lock:
            self._waiting[system] -= 1

    def _wait(self, request_id: str, timeout_s: float, slot: "Slot", noun: str) -> Answer:
        deadline = time.monotonic() + timeout_s
        while True:
            # woken by this process's reply consumer, which hands over the stored request; polling
            # the store also finds a reply that another gateway process consumed
            if slot.event.wait(min(0.25, max(0.0, deadline - time.monotonic()))) and slot.request is not None:
                return self._status_answer(slot.request, 200)
            request = self.store.get(request_id)
            if request and request.reply is not None:
                return self._status_answer(request, 200)
            if time.monotonic() >= deadline:
                answer = replies.failed(noun, request_id, "TIMEOUT", f"no reply within {timeout_s:g}s; the "
                                        f"reply is kept: GET /v1/requests/{request_id}")
                answer["request_id"] = request_id
                answer["state"] = "sent"
                return Answer(504, answer)

    @staticmethod
    def _status_answer(request: Request, status: int, duplicate: bool = False, note: str | None = None) -> Answer:
        # before the reply: an acknowledgement (OK = taken), or FAILED for a request that ended without one
        ended = request.state in ("rejected", "expired", "cancelled", "failed")
        body = dict(request.reply) if request.reply else replies.reply(
            NOUNS.get(request.kind), request.correlation_id or request.id, "FAILED" if ended else "OK",
            [replies.error(request.state.upper(), f"the request was {request.state}")] if ended else ())
        body.update({"request_id": request.id, "state": request.state})
        if duplicate:
            body["duplicate"] = True
        if note:
            body["note"] = note
        return Answer(status, body)

    # -- GET -------------------------------------------------------------------------
    def get(self, request_id: str, system: str) -> Answer:
        request = self.store.get(request_id)
        if request is None or request.system != system:  # another system's request does not exist for you
            return _failed(404, None, "NOT_FOUND", f"no request {request_id}")
        body = {**request.summary(), "reply": request.reply, "audit": self.store.audit_of(request_id)}
        return Answer(200, body)


def _forwarded(document: dict, expires: float | None) -> dict:
    """What travels: the sender's document with the expiry the gateway settled on, and without
    AsyncReplyFlag/ReplyAddress: answering the requester is the gateway's job, so the systems
    on the way answer synchronously."""
    header = {k: v for k, v in (document.get("Header") or {}).items() if k not in ("AsyncReplyFlag", "ReplyAddress")}
    out = {**document, "Header": header}
    if expires is not None:
        out["Request"] = {**document["Request"], "expiresAt": dt.datetime.fromtimestamp(
            expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return out


def _failed(status: int, noun: str | None, code: str, reason: str, headers: list | None = None) -> Answer:
    return Answer(status, replies.failed(noun, None, code, reason), headers)
