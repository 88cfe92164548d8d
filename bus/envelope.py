"""The IEC 61968-100 header mapped onto an AMQP message (DESIGN.md, "Envelope").

AMQP properties carry what AMQP has a slot for (``message_id``, ``correlation_id``,
``reply_to``, ``timestamp``, ``app_id`` = Source, ``type`` = ``<verb>.<Noun>``);
the rest goes in headers named ``gridbus-*``.  The worker runs under Celery,
which hands a task only the *headers*, so the header set repeats the few
properties a task needs (source, correlation id, verb/noun).
"""
from __future__ import annotations

import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

SCHEMA_VERSION = "1"
_random = random.Random()  # its own generator: nobody's random.seed() makes ids repeat
os.register_at_fork(after_in_child=_random.seed)  # forked workers must not repeat each other's ids
_HOST = socket.gethostname()

H_ROUTE = "gridbus-route"
H_SCHEMA = "gridbus-schema-version"
H_ATTEMPT = "gridbus-attempt"
H_FIRST_SEEN = "gridbus-first-seen"
H_SOURCE = "gridbus-source"
H_CORRELATION = "gridbus-correlation-id"
H_REDELIVERED = "gridbus-redelivered"  # the worker's note that the broker redelivered it (bus.naming)
H_VERB = "gridbus-verb"
H_NOUN = "gridbus-noun"
H_CONTEXT = "gridbus-context"
H_METERS = "gridbus-meters"
H_FILE = "gridbus-file"
H_FILE_CHECKSUM = "gridbus-file-checksum"
H_CHUNK = "gridbus-chunk"
H_CHUNKS = "gridbus-chunks"
H_TRACEPARENT = "traceparent"


def new_message_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered rather than random (uuid4): every store keyed or indexed by message id
    (the gateway's requests and their audit trail, the trace store) appends near the end
    of its index instead of dirtying a random page per row, which at a few hundred
    requests a second is most of what a commit writes.  Still a UUID to anything reading
    it; unique across processes and hosts by its random bits (reseeded from the OS in
    every forked child)."""
    return str(_uuid7())


def new_event_id() -> str:
    """A trace event's id: a UUIDv7 in hex, for the trace store's primary key to append to."""
    return _uuid7().hex


def _uuid7() -> uuid.UUID:
    bits = _random.getrandbits(74)
    return uuid.UUID(int=(time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (bits >> 62) << 64
                     | 0b10 << 62 | bits & (1 << 62) - 1)


def file_chunk_message_id(checksum: str, chunk_index: int) -> str:
    """Deterministic, so a re-run of the same file is recognisable downstream."""
    return f"file-{checksum[:24]}-{chunk_index:06d}"


def new_traceparent(trace_id: str | None = None) -> str:
    # ids from the process's own generator (seeded from the OS): W3C asks for random ids, not
    # secret ones, and os.urandom was a system call on every request
    trace = (trace_id or f"{_random.getrandbits(128):032x}")[:32].rjust(32, "0")
    return f"00-{trace}-{_span_id()}-01"


def _span_id() -> str:
    return f"{_random.getrandbits(64) or 1:016x}"  # all zeros is not a valid span id


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span: what each hop puts on the message it emits."""
    if parent and parent.count("-") == 3:
        return f"00-{parent.split('-')[1]}-{_span_id()}-01"
    return new_traceparent()


@dataclass(frozen=True)
class Envelope:
    route_id: str
    source: str
    verb: str
    noun: str
    message_id: str = field(default_factory=new_message_id)
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: float = field(default_factory=time.time)
    traceparent: str = field(default_factory=new_traceparent)
    attempt: int = 1
    first_seen: float | None = None
    meters: tuple[str, ...] = ()
    context: str = "PRODUCTION"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correlation(self) -> str:
        return self.correlation_id or self.message_id

    def headers(self) -> dict[str, Any]:
        headers = {
            H_ROUTE: self.route_id,
            H_SCHEMA: SCHEMA_VERSION,
            H_ATTEMPT: self.attempt,
            H_FIRST_SEEN: self.first_seen or self.timestamp,
            H_SOURCE: self.source,
            H_CORRELATION: self.correlation,
            H_VERB: self.verb,
            H_NOUN: self.noun,
            H_CONTEXT: self.context,
            H_TRACEPARENT: self.traceparent,
        }
        if self.meters:
            headers[H_METERS] = list(self.meters)
        headers.update(self.extra)
        # what the broker said of this delivery is not part of the message: never sent on
        headers.pop(H_REDELIVERED, None)
        return headers

    def properties(self) -> dict[str, Any]:
        props = {
            "message_id": self.message_id,
            "correlation_id": self.correlation,
            "app_id": self.source,
            "type": f"{self.verb}.{self.noun}",
            "timestamp": int(self.timestamp),
            "delivery_mode": 2,
        }
        if self.reply_to:
            props["reply_to"] = self.reply_to
        return props

    def next_attempt(self) -> "Envelope":
        return replace(self, attempt=self.attempt + 1, traceparent=child_traceparent(self.traceparent),
                       extra=dict(self.extra))

    @classmethod
    def from_headers(cls, message_id: str, headers: dict[str, Any],
                     reply_to: str | None = None) -> "Envelope":
        known = {H_ROUTE, H_SCHEMA, H_ATTEMPT, H_FIRST_SEEN, H_SOURCE, H_CORRELATION, H_VERB,
                 H_NOUN, H_CONTEXT, H_METERS, H_TRACEPARENT}
        extra = {k: v for k, v in headers.items() if k.startswith("gridbus-") and k not in known}
        first_seen = headers.get(H_FIRST_SEEN)
        return cls(
            route_id=headers[H_ROUTE], source=headers.get(H_SOURCE, ""),
            verb=headers.get(H_VERB, "created"), noun=headers.get(H_NOUN, ""),
            message_id=message_id, correlation_id=headers.get(H_CORRELATION),
            reply_to=reply_to, timestamp=float(first_seen or time.time()),
            traceparent=headers.get(H_TRACEPARENT) or new_traceparent(),
            attempt=int(headers.get(H_ATTEMPT, 1)), first_seen=first_seen,
            meters=tuple(headers.get(H_METERS) or ()), context=headers.get(H_CONTEXT, "PRODUCTION"),
            extra=extra,
        )
