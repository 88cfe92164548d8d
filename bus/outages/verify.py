"""The correlator's AMI pings: a ``verify`` decision as an on-demand read, and its reply as answers.

The engine (bus/outages/engine.py) emits, for each new DT or feeder outage::

    {"type": "verify", "requestId": "OUT-FDR-0002-000004/verify", "outage": "OUT-FDR-0002-000004",
     "equipment": "FDR-0002", "meters": ["UPM00012077", "UPM00012391", "UPM00013020"]}

and takes back ``engine.answer(request_id, {meter: alive})``.  In between, the process publishes
``verify_message(...)`` on its request-response route (source connector ``bus-request``, kind
``meter-readings``: the on-demand read path of use case 7), with ``reply_to`` a queue it consumes;
the request worker reads the meters from their HES (the route's ``hes-request`` destination)
and publishes the merged IEC 61968-100 reply to that queue, correlated by the request's id
(``bus.worker.task.reply_message``).  ``is_reply`` tells that reply from the other messages of
the queue, ``answers_of`` turns it into the engine's answers.

What a reply says about a meter (``answers_of``):

- **alive** (True): its HES returned a reading of it;
- **dead** (False): its HES said it does not answer (``METER_UNREACHABLE``, per meter): the HES
  reached out to the meter and got nothing, which is what a meter without power does;
- **unknown**: anything else: its HES could not be reached, refused, or did not answer within
  the route's timeout (``HES_UNAVAILABLE``, ``HES_UNREACHABLE``, ``TIMEOUT``, ``HES_ERROR``,
  ``HES_REFUSED``), the meter is not assigned to an HES the route reaches (``UNKNOWN_METER``,
  ``UNKNOWN_HES``), its HES said nothing about it (``NOT_CONFIRMED``), any other code, or the
  reply contradicts itself (a reading and an error for the same meter).  A failure of the bus
  or of an HES is no evidence about the meters behind it.

The answers are all or nothing: if any asked meter is unknown, or the reply as a whole is no
outcome (a ``FAILED`` reply with an error about the whole request, the request expired before
it ran, an acknowledgement without ``Result``, a body that cannot be read), ``answers_of``
gives ``None`` and the outage stays ``estimated``: the engine decides on the share of meters
alive among those answered, so answering with a subset could close a real outage as a false
alarm on one meter's word, or verify a false one.  The process may ask again, or leave it.

A read-level timeout only counts as "dead" when the HES itself says so per meter: the
``TIMEOUT`` the bus writes when the HES did not answer the whole request in ``timeout_s`` is
about the HES, not the meter, so the route's destination ``timeout_s`` has to be longer than
the HES's own wait for a meter.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from bus import naming, task_message
from bus.envelope import H_ROUTE, Envelope, new_traceparent
from bus.requests.dispatch import NOUNS, VERBS
from bus.routes.model import Route

log = logging.getLogger("gridbus.outages.verify")

SOURCE_CONNECTOR = "bus-request"
KIND = "meter-readings"
NOUN = NOUNS[KIND]
# what an HES says of a meter that does not answer (docs/request-formats.md); anything else the
# HES or the bus says of a meter is no evidence that it has no power
DEAD_CODES = frozenset({"METER_UNREACHABLE"})
# a reply to a ping of a few meters is a few kB; more is not a reply of this route
MAX_REPLY_BYTES = 1 << 20
MAX_METERS = 1000          # a verification asks a few meters (the engine's verify_meters, default 3)
MAX_ID_CHARS = 200         # AMQP short strings (message_id, correlation_id) hold 255 bytes
DEFAULT_EXPIRES_S = 20.0   # without expires_s and without the route's source timeout_s
H_OUTAGE = "gridbus-outage"  # on the request: the outage it verifies (for the dead letters, the trace)


def _prop(properties: Any, name: str) -> Any:
    """A property from a dict (``Delivery.properties``) or a client's properties object."""
    if isinstance(properties, Mapping):
        return properties.get(name)
    return getattr(properties, name, None)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def verify_message(route: Route, decision: Mapping[str, Any], reply_queue: str, *,
                   reading_types: Iterable[str] | None = None, expires_s: float | None = None,
                   now: float | None = None, traceparent: str | None = None) -> tuple[str, str, bytes, dict, dict]:
    """(exchange, routing key, body, properties, headers) of the on-demand read that verifies
    ``decision`` (the engine's ``verify`` decision) on ``route``, the reply going to ``reply_queue``.

    The message id and the correlation id are the decision's ``requestId``, so the same decision
    gives the same message id (a process that publishes it again after a restart sends the same
    request) and the reply's ``correlation_id`` is the ``requestId`` ``engine.answer`` takes.
    ``reading_types``: what the HES reads (None: its default, the four block-load energies).
    ``expires_s`` (default: the route's source ``timeout_s``): a request that reaches a worker
    later than that after ``now`` is not run; its reply is ``FAILED`` ``EXPIRED`` (``answers_of``:
    None).  Raises ValueError for a route or decision it cannot make a request of."""
    if route.method != "request-response" or route.source.connector != SOURCE_CONNECTOR:
        raise ValueError(f"route {route.id!r} is not a request-response route with a {SOURCE_CONNECTOR} source")
    if route.source.options.get("kind") != KIND:
        raise ValueError(f"route {route.id!r} asks for {route.source.options.get('kind')!r}, not {KIND}")
    if not isinstance(decision, Mapping) or decision.get("type") != "verify":
        raise ValueError("not a verify decision")
    request_id = decision.get("requestId")
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID_CHARS:
        raise ValueError(f"verify decision without a usable requestId: {request_id!r}"[:300])
    meters = decision.get("meters")
    if not isinstance(meters, list) or not meters or len(meters) > MAX_METERS \
            or not all(isinstance(m, str) and m for m in meters):
        raise ValueError(f"verify decision {request_id} without a list of meter ids")
    if not isinstance(reply_queue, str) or not reply_queue:
        raise ValueError("no reply queue")
    meters = list(dict.fromkeys(meters))
    if expires_s is None:
        expires_s = float(route.source.options.get("timeout_s") or DEFAULT_EXPIRES_S)
    if not (isinstance(expires_s, (int, float)) and math.isfinite(expires_s) and expires_s > 0):
        raise ValueError(f"expires_s must be a number > 0, not {expires_s!r}")
    now = time.time() if now is None else now
    request: dict[str, Any] = {"meters": meters}
    if reading_types is not None:
        request["readingTypes"] = list(reading_types)
    source = route.source.system
    document = {"Header": {"Verb": VERBS[KIND], "Noun": NOUN, "MessageID": request_id,
                           "CorrelationID": request_id, "Source": source},
                "Request": request}
    extra: dict[str, Any] = {naming.H_REQUEST_KIND: KIND, naming.H_EXPIRES_AT: now + expires_s}
    outage = decision.get("outage")
    if isinstance(outage, str) and outage and len(outage) <= MAX_ID_CHARS:
        extra[H_OUTAGE] = outage
    envelope = Envelope(route_id=route.id, source=source, verb=VERBS[KIND], noun=NOUN, message_id=request_id,
                        correlation_id=request_id, reply_to=reply_queue, timestamp=now,
                        traceparent=traceparent or new_traceparent(), meters=tuple(meters), extra=extra)
    body, props, headers = task_message.build(envelope, document)
    return naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers


def is_reply(properties: Any, headers: Mapping[str, Any] | None = None, route_id: str | None = None) -> bool:
    """Whether a message is a request worker's reply (``bus.worker.task.reply_message``: message id
    ``<request id>.reply``, correlation id the request id), and, with ``route_id``, one from that
    route; False for anything else the queue may hold (the correlator's events, a stray message)."""
    correlation = _text(_prop(properties, "correlation_id"))
    message_id = _text(_prop(properties, "message_id"))
    if correlation is None or message_id != f"{correlation}.reply":
        return False
    if isinstance(headers, Mapping) and (headers.get("task") or headers.get(H_ROUTE)):
        return False  # a route message (a request, or a retry of one), never a reply
    return route_id is None or _text(_prop(properties, "app_id")) == route_id


def answers_of(properties: Any, headers: Mapping[str, Any] | None, body: bytes | str, *,
               asked: Iterable[str] | None = None) -> tuple[str, dict[str, bool] | None]:
    """(request id, {meter: alive}) from a verification's reply, or (request id, None) when the
    reply settles nothing (module docstring: an unknown meter, a request-level failure, an
    unreadable body).  ``asked``: the meters the request named, if the caller knows them;
    meters the reply names beyond them are ignored, and one it says nothing about is unknown.
    Raises ValueError only for a message that cannot be a reply (no correlation id)."""
    request_id = _text(_prop(properties, "correlation_id"))
    if request_id is None or len(request_id) > 255:
        raise ValueError("not a reply: no correlation id")

    def unsettled(why: str) -> tuple[str, None]:
        log.warning("verification %s: %s; the outage stays estimated", request_id[:255], why)
        return request_id, None

    state = (headers or {}).get(naming.H_REPLY_STATE) if isinstance(headers, Mapping) else None
    if _text(state) == "expired":
        return unsettled("the request expired before it ran")
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        return unsettled(f"a reply body of type {type(body).__name__}")
    if len(body) > MAX_REPLY_BYTES:
        return unsettled(f"a reply of {len(body)} bytes (more than {MAX_REPLY_BYTES})")
    try:
        reply = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError):
        return unsettled("the reply is not JSON")
    result_part = reply.get("Reply") if isinstance(reply, dict) else None
    if not isinstance(result_part, dict) or result_part.get("Result") not in ("OK", "PARTIAL", "FAILED"):
        return unsettled("no Reply.Result (not an outcome)")
    errors = result_part.get("Error") or []
    if not isinstance(errors, list):
        return unsettled("Reply.Error is not a list")
    dead: set[str] = set()
    other: set[str] = set()
    for item in errors:
        if not isinstance(item, dict):
            continue
        meter = item.get("meter")
        if not isinstance(meter, str) or not meter:
            code = item.get("code")
            return unsettled(f"an error about the whole request ({code if isinstance(code, str) else '?'})"[:300])
        (dead if item.get("code") in DEAD_CODES else other).add(meter)
    alive: set[str] = set()
    payload = reply.get("Payload")
    readings = payload.get("MeterReadings") if isinstance(payload, dict) else None
    blocks = readings.get("MeterReading") if isinstance(readings, dict) else None
    for block in blocks if isinstance(blocks, list) else ():
        meter = block.get("meter") if isinstance(block, dict) else None
        if not isinstance(meter, str) or not meter:
            continue
        if isinstance(block.get("readings"), list) and block["readings"]:
            alive.add(meter)
        else:  # named without a reading: the HES said nothing about it
            other.add(meter)
    if asked is not None:
        meters = list(dict.fromkeys(m for m in asked if isinstance(m, str)))
    else:
        meters = sorted(alive | dead | other)
    if not meters:
        return unsettled("the reply names no meter")
    answers: dict[str, bool] = {}
    for meter in meters:
        if meter in other or (meter in alive and meter in dead):
            return unsettled(f"meter {meter}: no answer from it or its HES (an HES or bus failure, or a "
                             f"contradictory reply)"[:300])
        if meter in alive:
            answers[meter] = True
        elif meter in dead:
            answers[meter] = False
        else:
            return unsettled(f"the reply says nothing about meter {meter}"[:300])
    return request_id, answers
