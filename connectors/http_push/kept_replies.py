"""What the gateway does with a reply from ``gridbus.replies``: keep it, against its request.

Every reply is kept (stored and committed, then acked), whether or not anyone
still waits for it: a request whose sync wait timed out gets its late reply by
``GET /v1/requests/{id}``.  Replies are matched by correlation id = request id
only, so a reply can never reach another request.  The consuming, the waking
of a waiting request and the hand-over to the callback route happen on the
gateway's event loop (``request_loop``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import orjson

from bus import naming
from bus.requests import replies
from bus.requests.store import Request, RequestStore

log = logging.getLogger("gridbus.gateway.replies")


def state_of(kind: str, reply: dict, hinted: str | None) -> str:
    if hinted:
        return hinted
    if kind != "commands":
        return "replied"
    errors = (reply.get("Reply") or {}).get("Error") or []
    if any(isinstance(e, dict) and e.get("code") == "OUTCOME_UNKNOWN" for e in errors):
        return "unknown"  # some meter's HES could not say: neither executed nor failed
    return "failed" if replies.result_in(reply) == replies.FAILED else "executed"


def parsed(request_id: str | None, body: bytes) -> dict | None:
    """The reply in ``body``; None (logged) for one that is not a JSON object, which is then
    dropped: no request could be answered with it."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        log.error("reply to %s is not a JSON object; dropped", request_id)
        return None
    return reply


def hinted_state(headers: dict | None) -> str | None:
    """The state the replying worker named (``expired``), if any."""
    hinted = (headers or {}).get(naming.H_REPLY_STATE)
    return hinted.decode() if isinstance(hinted, bytes) else hinted


def answered(request: Request, reply: dict, hinted: str | None) -> Request:
    """``request`` as ``keep_reply`` stores it with ``reply``: what its waiting caller is
    answered before the commit (a read; see ``request_loop``)."""
    return replace(request, reply=reply, state=state_of(request.kind, reply, hinted),
                   result=replies.result_in(reply), updated=time.time())


def keep_reply(store: RequestStore, request_id: str | None, reply: dict | None, hinted: str | None,
               kind: str | None = None) -> tuple[Request | None, dict | None]:
    """(the request as stored with its reply, the reply); (None, None) for a reply that was not a
    JSON object (``parsed``) or answers no request this gateway holds (logged, then dropped).
    ``kind``: the request's, when the caller knows it (a request waiting here), saves reading
    it first."""
    if reply is None:
        return None, None
    if kind is None:
        request = store.get(request_id) if request_id else None
        if request is None:
            log.warning("reply for a request this gateway does not hold: %s", request_id)
            return None, None
        kind = request.kind
    state = state_of(kind, reply, hinted)
    if state == "unknown":
        reply = without_result(reply)
    return store.record_reply(request_id, reply, state), reply


def without_result(reply: dict) -> dict:
    """A reply whose outcome is not known (some meter's HES could not say whether it executed
    the command): kept with its errors but no Result, and marked pending, so that no caller
    and no system on the way takes FAILED for the answer while the meter may be cut."""
    body = reply.get("Reply") if isinstance(reply.get("Reply"), dict) else {}
    return {**reply, "Reply": {k: v for k, v in body.items() if k != "Result"}, "pending": True}
