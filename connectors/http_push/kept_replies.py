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

import orjson

from bus import naming
from bus.requests.store import Request, RequestStore

log = logging.getLogger("gridbus.gateway.replies")


def state_of(kind: str, reply: dict, hinted: str | None) -> str:
    if hinted:
        return hinted
    if kind != "commands":
        return "replied"
    return "failed" if (reply.get("Reply") or {}).get("Result") == "FAILED" else "executed"


def keep_reply(store: RequestStore, request_id: str | None, headers: dict | None,
               body: bytes, kind: str | None = None) -> tuple[Request | None, dict | None]:
    """(the request as stored with its reply, the reply); (None, None) for a reply that is not
    JSON or answers no request this gateway holds (logged, then dropped).  ``kind``: the
    request's, when the caller knows it (a request waiting here), saves reading it first."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        log.error("reply to %s is not JSON; dropped", request_id)
        return None, None
    if kind is None:
        request = store.get(request_id) if request_id else None
        if request is None:
            log.warning("reply for a request this gateway does not hold: %s", request_id)
            return None, None
        kind = request.kind
    hinted = (headers or {}).get(naming.H_REPLY_STATE)
    if isinstance(hinted, bytes):
        hinted = hinted.decode()
    return store.record_reply(request_id, reply, state_of(kind, reply, hinted)), reply
