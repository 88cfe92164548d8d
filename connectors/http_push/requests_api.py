"""The gateway's request endpoints: billing determinants, on-demand reads, commands.

    POST /v1/requests/<path>   answered with the reply (sync), 202 + request id (async or
                               pending approval), 504 + request id (sync wait timed out)
    GET  /v1/requests/<id>     state, reply and audit trail of a request (the asking system's own)

Command safety lives here, before anything is published: only the route's
source system may command (403 for an HES or GIS key), disconnects are rate
limited per system, a command over ``approval_above`` meters waits for a second
user (`gridbus commands approve`), every command expires, and a command id is
answered, not executed, the second time.

This module decides and stores (``RequestApi.take``); publishing a request
and waiting for its reply happen on the gateway's event loop
(``connectors.http_push.request_loop``).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from typing import Any

from marshmallow import ValidationError as SchemaError

from bus.envelope import new_message_id
from bus.requests import replies
from bus.requests.dispatch import NOUNS
from bus.requests.store import Request, RequestStore
from bus.routes.model import Route
from connectors.http_push.app import count_refusal
from connectors.http_push.ratelimit import RateLimiter
from connectors.http_push.request_schemas import BODIES, RequestDocumentSchema

log = logging.getLogger("gridbus.gateway")
_DOCUMENT = RequestDocumentSchema()
_BODIES = {kind: schema() for kind, schema in BODIES.items()}  # made once: a schema is reusable


class Answer:
    def __init__(self, status: int, body: dict, headers: list | None = None):
        self.status, self.body, self.headers = status, body, headers or []


class Taken:
    """A stored request to publish: whether its caller waits, and for how long."""

    __slots__ = ("request", "noun", "timeout_s", "waits")

    def __init__(self, request: Request, noun: str, timeout_s: float, waits: bool):
        self.request, self.noun, self.timeout_s, self.waits = request, noun, timeout_s, waits


class Following:
    """A repeat of a request still in flight whose caller waits: answered with the original's
    outcome when it comes (``RequestLoop``), never with an acknowledgement that looks like one."""

    __slots__ = ("request", "noun", "timeout_s", "waits")

    def __init__(self, request: Request, noun: str, timeout_s: float):
        self.request, self.noun, self.timeout_s, self.waits = request, noun, timeout_s, True


# a command that ended with only these errors was never taken by a meter's HES: its id may be
# sent again (transient is not final); HES_UNTRUSTED: its certificate did not verify, so nothing
# was sent, and a resend after the certificate is fixed must run
NOT_TAKEN = {"HES_UNAVAILABLE", "HES_UNTRUSTED", "DESTINATION_UNAVAILABLE", "BROKER_UNAVAILABLE"}
PENDING = {"requested", "sent", "unknown"}  # taken, no outcome yet


class RequestApi:
    def __init__(self, routes: list[Route], store: RequestStore, max_waiting_per_system: int = 256):
        self.store = store
        # a system may have only so many requests waiting for replies at once: one system's
        # flood must not hold the replies of everybody else's (the waits cost no thread, but
        # memory and a share of the HES's capacity)
        self.max_waiting = max_waiting_per_system
        self._waiting: dict[str, int] = {}
        self._waiting_lock = threading.Lock()
        # disconnects per system and minute, counted in meters: one token bucket per route
        # route id → the systems it delivers to: an approved command counts as approved only
        # on the onward hop of one of those systems
        self.forwards_to = {r.id: {d.system for d in r.destinations} for r in routes}
        self.disconnects = {r.id: RateLimiter(r.source.options["disconnects_per_minute"] / 60.0,
                                              burst=r.source.options["disconnects_per_minute"])
                            for r in routes if r.source.options["kind"] == "commands"}

    # -- POST ------------------------------------------------------------------------
    def take(self, route: Route, system: str, user: str | None, document: Any,
             correlation: str | None = None) -> "Answer | Taken | Following":
        """Check and store a request: an ``Answer`` when it is settled here (refused, a
        duplicate, pending approval), else the stored request to publish (``Taken``).

        A refusal is a trace event (counted in the recorder's metrics); a refused command is
        also kept, audited, in state ``refused``: an HES key asking for a disconnect, or a
        billing system over its disconnect rate, is what a security officer looks for."""
        answer = self._checked(route, system, user, document, correlation)
        if isinstance(answer, Answer) and answer.status >= 400:
            self._refused(route, system, user, document, answer)
        return answer

    def _refused(self, route: Route, system: str, user: str | None, document: Any, answer: Answer) -> None:
        code = ((answer.body.get("Reply") or {}).get("Error") or [{}])[0].get("code", str(answer.status))
        count_refusal(route.id, system, answer.status, code)
        if route.source.options["kind"] != "commands" or answer.status == 503:
            return  # a read refused, or a command shed under load (retry later): nothing to audit
        body = (document.get("Request") if isinstance(document, dict) else None) or {}
        meters = body.get("meters") if isinstance(body, dict) else None
        action = body.get("action") if isinstance(body, dict) and isinstance(body.get("action"), str) else None
        try:
            # no client key: the same command id must still work once the system may send it
            request = self.store.create(
                id=new_message_id(), system=system, requested_by=user or system, kind="commands", route=route.id,
                client_key=None, action=action, meters=len(meters) if isinstance(meters, list) else 0,
                state="refused", expires=None, reply_address=None, correlation_id=None,
                document=document if isinstance(document, dict) else {"received": document})
            self.store.attach_reply(request.id, answer.body)
        except Exception as exc:  # noqa: BLE001 - the refusal stands; the log keeps what the store could not
            log.error("command refused (%s from %s, user %s, route %s: %s) but not audited: %s",
                      action or "?", system, user or "-", route.id, code, exc)
            return
        answer.body["request_id"] = request.id
        log.warning("command refused and audited as %s: %s from %s (user %s) on route %s: %s", request.id,
                    action or "?", system, user or "-", route.id, code)

    def _checked(self, route: Route, system: str, user: str | None, document: Any,
                 correlation: str | None = None) -> "Answer | Taken | Following":
        kind, options = route.source.options["kind"], route.source.options
        noun = NOUNS[kind]
        if system != route.source.system:
            return refusal(403, noun, "FORBIDDEN", f"{system} may not send {kind} requests on route {route.id} "
                                                   f"(only {route.source.system} may)")
        try:
            doc = _DOCUMENT.load(document if isinstance(document, dict) else {})
            body = _BODIES[kind].load(doc["Request"])
        except SchemaError as exc:
            return refusal(400, noun, "INVALID_REQUEST", f"{exc.messages}")
        header = doc["Header"]
        meters = body.get("meters") or []
        if len(meters) > options["max_meters"]:
            return refusal(413, noun, "TOO_MANY_METERS", f"{len(meters)} meters; this route takes at most "
                                                         f"{options['max_meters']}")
        client_key = body.get("commandId") if kind == "commands" else header.get("MessageID")
        if client_key:
            seen = self.store.by_client_key(system, route.id, client_key)
            if seen is not None and _not_taken(seen):
                # it never reached a meter (its HES or the bus did not take it): the id runs again
                self.store.release_key(seen.id, user or system, "sent again with the same id; it had not been "
                                                                "taken by any HES")
                seen = None
            if seen is not None:  # a retried request: answered from the record, never executed twice
                return self._repeat(seen, route, noun, document, header)
        expires = None
        state = "requested"
        if kind == "commands":
            expires = (body["expiresAt"].timestamp() if body.get("expiresAt")
                       else time.time() + options["default_expiry_s"])
            if expires <= time.time():
                return refusal(400, noun, "EXPIRED", "expiresAt is in the past: a command is never executed late")
            implausible = _implausible(body, options)
            if implausible:
                return refusal(400, noun, "IMPLAUSIBLE_VALUE", implausible)
            if body["action"] == "disconnect" and len(meters) > options["disconnects_per_minute"]:
                # the rate bucket never holds this many: waiting would never help
                per = options["disconnects_per_minute"]
                return refusal(413, noun, "OVER_DISCONNECT_RATE", f"{len(meters)} meters in one disconnect is more "
                               f"than this route lets through ({per} a minute): split it into requests of at most "
                               f"{per} meters, a minute apart")
            if body["action"] == "disconnect":
                wait = self.disconnects[route.id].take(system, cost=len(meters))
                if wait:
                    return refusal(429, noun, "DISCONNECT_RATE", f"{system} is over its rate of "
                                   f"{options['disconnects_per_minute']} disconnects a minute",
                                   [("Retry-After", str(max(1, round(wait + 0.5))))])
            if len(meters) > options["approval_above"] and not self._approved_upstream(system, client_key, document):
                state = "pending-approval"
        waits = state == "requested" and not (header.get("AsyncReplyFlag") and header.get("ReplyAddress"))
        if waits and not self._enter(system):
            return refusal(503, noun, "BUSY", f"{system} already has {self.max_waiting} requests waiting for "
                           "replies at this gateway; retry shortly or ask asynchronously", [("Retry-After", "1")])
        try:
            # the request document travels with the fields we checked, unchanged otherwise
            request = self.store.create(
                id=new_message_id(), system=system, requested_by=user or system, kind=kind, route=route.id,
                client_key=client_key, action=body.get("action"), meters=len(meters), state=state,
                expires=expires, reply_address=header.get("ReplyAddress") if header.get("AsyncReplyFlag") else None,
                correlation_id=header.get("CorrelationID") or correlation, document=_forwarded(document, expires),
                sent_on=route.id if state == "requested" else None)
        except BaseException:
            if waits:
                self._leave(system)
            raise
        if request is None or state == "pending-approval":
            if waits:
                self._leave(system)
            if request is None:  # the same client key raced in from another request
                return self.status_answer(self.store.by_client_key(system, route.id, client_key), 202,
                                          duplicate=True)
            return self.status_answer(request, 202, note=f"{len(meters)} meters is more than "
                                      f"{options['approval_above']}: waits for a second user's approval "
                                      f"(gridbus commands approve {request.id})")
        return Taken(request, noun, options["timeout_s"], waits)

    def _approved_upstream(self, system: str, command_id: str, document: dict) -> Request | None:
        """The approved command this one forwards, if any: same id, same content, approved on a
        route that delivers to ``system`` (the MDMS passing billing's approved disconnect on to
        the HES).  Another system reusing an approved id, or the same id with other meters, is
        a new command and waits for its own approval."""
        return next((a for a in self.store.approved_commands(command_id)
                     if system in self.forwards_to.get(a.route, ()) and a.system != system
                     and _request_part(a.document) == _request_part(document)), None)

    def _repeat(self, seen: Request, route: Route, noun: str, document: dict,
                header: dict) -> "Answer | Following":
        """A request whose id (MessageID, commandId) this system used before on this route."""
        if _request_part(seen.document) != _request_part(document):
            what = "commandId" if seen.kind == "commands" else "MessageID"
            return refusal(409, noun, "ID_CONFLICT", f"{what} {seen.client_key!r} was used by request {seen.id} "
                           f"({seen.state}) for a different request; an id names one request: use a new one")
        if seen.reply is not None or seen.state not in PENDING:
            return self.status_answer(seen, 200 if seen.reply else 202, duplicate=True)
        if header.get("AsyncReplyFlag") and header.get("ReplyAddress"):
            return self.status_answer(seen, 202, duplicate=True)
        if not self._enter(seen.system):
            return refusal(503, noun, "BUSY", f"{seen.system} already has {self.max_waiting} requests waiting for "
                           "replies at this gateway; retry shortly", [("Retry-After", "1")])
        return Following(seen, noun, route.source.options["timeout_s"])

    def done(self, taken: "Taken | Following") -> None:
        """The request's caller has its answer: it no longer counts as waiting."""
        if taken.waits:
            self._leave(taken.request.system)

    def _enter(self, system: str) -> bool:
        with self._waiting_lock:
            if self._waiting.get(system, 0) >= self.max_waiting:
                return False
            self._waiting[system] = self._waiting.get(system, 0) + 1
            return True

    def _leave(self, system: str) -> None:
        with self._waiting_lock:
            self._waiting[system] -= 1

    def timed_out(self, taken: "Taken | Following", duplicate: bool = False) -> Answer:
        """504: no reply yet.  Not a FAILED reply: the request may still be answered (and a
        command executed), so the answer says pending and where the outcome will be."""
        request = taken.request
        answer = pending(taken.noun, request, "TIMEOUT", f"no reply within {taken.timeout_s:g}s; the outcome "
                         f"will be kept: GET /v1/requests/{request.id}")
        answer["state"] = "sent" if request.state == "requested" else request.state
        if duplicate:
            answer["duplicate"] = True
        return Answer(504, answer)

    @staticmethod
    def status_answer(request: Request, status: int, duplicate: bool = False, note: str | None = None) -> Answer:
        # before the reply: pending (no Result: an acknowledgement is never a reply), or
        # FAILED for a request that ended without one
        ended = request.state in ("rejected", "expired", "cancelled", "failed")
        if request.reply:
            body = dict(request.reply)
        elif ended:
            body = replies.reply(NOUNS.get(request.kind), request.correlation_id or request.id, "FAILED",
                                 [replies.error(request.state.upper(), f"the request was {request.state}")])
        else:
            body = pending(NOUNS.get(request.kind), request, "PENDING",
                           f"taken; no outcome yet ({request.state}): GET /v1/requests/{request.id}")
        body.update({"request_id": request.id, "state": request.state})
        if duplicate:
            body["duplicate"] = True
        if note:
            body["note"] = note
        return Answer(status, body)

    # -- GET -------------------------------------------------------------------------
    def find(self, system: str, query: dict[str, str]) -> Answer:
        """``GET /v1/requests?messageId=…`` or ``?commandId=…``: the asking system's requests
        that carried that id (one per route it was sent on), newest first: a caller that lost
        its connection (a gateway crash, a timeout) finds its outcome without a request id."""
        given = {k: v for k, v in query.items() if k in ("messageId", "commandId") and v}
        if len(given) != 1:
            return refusal(400, None, "INVALID_QUERY", "give one of messageId or commandId")
        (name, value), = given.items()
        found = [r for r in self.store.by_client_key_any_route(system, value)
                 if (r.kind == "commands") == (name == "commandId")]
        return Answer(200, {"requests": [{**r.summary(), "reply": r.reply} for r in found], "count": len(found)})

    def get(self, request_id: str, system: str) -> Answer:
        request = self.store.get(request_id)
        if request is None or request.system != system:  # another system's request does not exist for you
            return refusal(404, None, "NOT_FOUND", f"no request {request_id}")
        body = {**request.summary(), "reply": request.reply, "audit": self.store.trail(request)}
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


def _implausible(body: dict, options: dict) -> str | None:
    """Why a command's numbers cannot be meant (the limit named), or None."""
    params = body.get("params") or {}
    if body["action"] == "credit-update":
        amount = params.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) \
                or abs(amount) > options["max_credit_amount"]:
            return (f"params.amount {amount!r}: a credit update is a finite number of at most "
                    f"{options['max_credit_amount']:g} either way (route option max_credit_amount)")
    if body["action"] == "load-limit":
        limit = params.get("limit_kw")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) \
                or limit > options["max_load_limit_kw"]:
            return (f"params.limit_kw {limit!r}: a load limit is at most {options['max_load_limit_kw']:g} kW "
                    f"(route option max_load_limit_kw)")
    return None


def _request_part(document: Any) -> Any:
    """What makes two requests with one id the same request: the Request as sent, but the
    expiry (the gateway fills it in when the sender gives none)."""
    body = document.get("Request") if isinstance(document, dict) else None
    return {k: v for k, v in body.items() if k != "expiresAt"} if isinstance(body, dict) else body


def _not_taken(request: Request) -> bool:
    """A command that failed before any HES took it (its errors are all "not taken")."""
    if request.kind != "commands" or request.state != "failed":
        return False
    if request.reply is None:
        return True  # not published: it never left the gateway
    errors = (request.reply.get("Reply") or {}).get("Error") or []
    return bool(errors) and all(isinstance(e, dict) and e.get("code") in NOT_TAKEN for e in errors)


def pending(noun: str | None, request: Request, code: str, reason: str) -> dict:
    """The body of an answer that has no outcome yet: a Reply with no Result (so no system takes
    it for one), the reason as an informational error, the request id and ``pending``."""
    body = replies.reply(noun, request.correlation_id or request.id, replies.OK)
    body["Reply"] = {"Error": [{"code": code, "level": "INFORM", "reason": reason}]}
    body["request_id"] = request.id
    body["pending"] = True
    return body


def refusal(status: int, noun: str | None, code: str, reason: str, headers: list | None = None) -> Answer:
    return Answer(status, replies.failed(noun, None, code, reason), headers)
