"""Build the AMQP message a route queue carries: an envelope in Celery's protocol 2.

The route queue is consumed by a Celery worker, so the body is Celery's
``[args, kwargs, embed]`` with the payload as the only argument, and the
headers hold Celery's task fields next to the gridbus envelope.  gridbus builds
these messages itself (rather than through ``apply_async``) so that the AMQP
properties keep the IEC 61968-100 meaning: ``correlation_id`` is the business
correlation, not a Celery result id.
"""
from __future__ import annotations

import json
import socket
import time
from typing import Any

import orjson

from bus import naming
from bus.envelope import Envelope

PUBLISHED_AT = "gridbus-published-at"  # the worker's 'consumed' trace event says how long it waited
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"gridbus@{socket.gethostname()}"


def celery_headers(envelope: Envelope) -> dict[str, Any]:
    # only what Celery's worker reads (``task`` and ``id`` are required, the rest it takes with
    # defaults): every header is encoded by the publisher and decoded by the consumer on every
    # message, and eta/expires/shadow/group/timelimit/argsrepr would only ever say "none"
    return {
        "lang": "py", "task": naming.task_name(envelope.route_id), "id": envelope.message_id,
        "retries": envelope.attempt - 1,
        "root_id": envelope.extra.get("gridbus-root-id", envelope.message_id),
        "origin": _ORIGIN, "ignore_result": True,
    }


def encode_body(payload: Any) -> bytes:
    # orjson on every message (a request, a file chunk); the standard library only for what
    # orjson refuses (an integer beyond 64 bits), so any payload that was JSON still travels
    try:
        return orjson.dumps([[payload], {}, _EMBED], option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps([[payload], {}, _EMBED], separators=(",", ":"), ensure_ascii=False).encode()


def decode_body(body: bytes) -> Any:
    """The payload of a route message (the event-loop worker, the dlq tools)."""
    try:
        args, _kwargs, _embed = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN or a huge integer, as Celery's own encoder may write them
        args, _kwargs, _embed = json.loads(body)
    return args[0]


def build(envelope: Envelope, payload: Any) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(body, properties, headers) of the message for ``envelope``."""
    headers = {**celery_headers(envelope), **envelope.headers(), PUBLISHED_AT: time.time()}
    properties = {**envelope.properties(), "content_type": "application/json",
                  "content_encoding": "utf-8", "priority": 0}
    return encode_body(payload), properties, headers
