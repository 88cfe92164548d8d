"""What the worker does with one route message, independent of Celery:
decode → validate → transform → deliver to each pending destination.

Each destination succeeds or fails on its own, so that a retry or a dead letter
carries only the destinations that still need the message: a slow MDMS-2 never
makes MDMS-1 receive the same batch again.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bus import registry
from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import GridbusError, TransformError
from bus.routes.model import Endpoint, Route
from bus.transform import Outbound, SourceChunk, TransformContext

SOURCE_CHUNK = "source-chunk"


def chunk_payload(chunk: SourceChunk) -> dict:
    """A file batch as the JSON payload of a route message (the original text, untransformed)."""
    return {"kind": SOURCE_CHUNK, "format": chunk.format, "file_name": chunk.file_name,
            "first_line": chunk.first_line, "text": chunk.text}


def payload_to_input(payload: Any) -> Any:
    if isinstance(payload, dict) and payload.get("kind") == SOURCE_CHUNK:
        return SourceChunk(text=payload["text"], file_name=payload["file_name"],
                           first_line=payload["first_line"], format=payload["format"])
    return payload


@dataclass
class Outcome:
    context: TransformContext
    receipts: list[DeliveryReceipt] = field(default_factory=list)
    failures: list[tuple[Endpoint, Exception]] = field(default_factory=list)
    readings: int = 0
    events: int = 0
    transform_s: float = 0.0
    transformed_at: float = 0.0
    reply: dict | None = None  # request-response: the destination's answer


def _run_chain(names: tuple[str, ...], payload: Any, context: TransformContext) -> Any:
    for name in names:
        step = registry.transformer(name)
        try:
            payload = step(payload, context)
        except GridbusError:
            raise
        except Exception as exc:  # a transformer bug on this input: retrying will not fix it
            raise TransformError(f"transformer {name} failed: {exc.__class__.__name__}: {exc}") from exc
    return payload


def pending(route: Route, systems: list[str] | None) -> list[Endpoint]:
    """The destinations still owed this message (all of them on a first attempt)."""
    if not systems:
        return list(route.destinations)
    return [d for d in route.destinations if d.system in systems]


def _prepared(route: Route, envelope: Envelope, payload: Any) -> tuple[Outcome, Any]:
    context = TransformContext(route_id=route.id, source_system=envelope.source,
                               message_id=envelope.message_id, correlation_id=envelope.correlation,
                               options=dict(route.options))
    outcome = Outcome(context)
    started = time.perf_counter()
    common = _run_chain(route.transform, payload_to_input(payload), context)
    outcome.transform_s = time.perf_counter() - started
    outcome.transformed_at = time.time()
    return outcome, common


def _answered(outcome: Outcome, destination: Endpoint, reply: dict, asked: float) -> None:
    outcome.reply = reply
    result = (reply.get("Reply") or {}).get("Result", "?")
    outcome.receipts.append(DeliveryReceipt(destination.system, result, time.perf_counter() - asked))


def process(route: Route, envelope: Envelope, payload: Any, systems: list[str] | None = None) -> Outcome:
    """Transform once, deliver to each pending destination; MessageError escapes
    (the whole message is bad), delivery failures are collected per destination."""
    outcome, common = _prepared(route, envelope, payload)
    context = outcome.context
    for destination in pending(route, systems):
        outbound = _run_chain(destination.transform, common, context)
        connector = registry.connector(destination.connector)
        if getattr(connector, "takes_requests", False):
            # request-response: the answer is the product, published to the requester by the caller
            asked = time.perf_counter()
            try:
                _answered(outcome, destination, connector.request(outbound, envelope, destination), asked)
            except Exception as exc:
                outcome.failures.append((destination, exc))
            continue
        if getattr(connector, "takes_documents", False):
            # publishes canonical documents onward (pub-sub): no encoder, the document itself travels
            try:
                outcome.receipts.append(connector.deliver_document(outbound, envelope, destination))
            except Exception as exc:
                outcome.failures.append((destination, exc))
            continue
        if not isinstance(outbound, Outbound):
            raise TransformError(f"route {route.id}: the transform chain for {destination.system} "
                                 "must end with an encoder that returns Outbound")
        outcome.readings, outcome.events = outbound.readings, outbound.events
        if outbound.empty or (outbound.readings == 0 and outbound.events == 0 and context.rejections):
            continue  # nothing to deliver (every row rejected, or none to begin with): no empty POST
        try:
            outcome.receipts.append(connector.deliver(outbound, envelope, destination))
        except Exception as exc:  # classified by the caller: permanent, or worth a retry
            outcome.failures.append((destination, exc))
    return outcome


def asks_only(route: Route) -> bool:
    """Every destination of the route answers requests (what ``ask`` can run)."""
    return all(getattr(registry.connector(d.connector), "takes_requests", False) for d in route.destinations)


async def ask(route: Route, envelope: Envelope, payload: Any, systems: list[str] | None = None) -> Outcome:
    """``process`` for a route whose destinations all answer requests, on an event loop: a
    connector with ``request_async`` is awaited, any other one asked from a thread."""
    outcome, common = _prepared(route, envelope, payload)
    for destination in pending(route, systems):
        outbound = _run_chain(destination.transform, common, outcome.context)
        connector = registry.connector(destination.connector)
        asked = time.perf_counter()
        try:
            if hasattr(connector, "request_async"):
                reply = await connector.request_async(outbound, envelope, destination)
            else:
                reply = await asyncio.to_thread(connector.request, outbound, envelope, destination)
            _answered(outcome, destination, reply, asked)
        except Exception as exc:
            outcome.failures.append((destination, exc))
    return outcome
