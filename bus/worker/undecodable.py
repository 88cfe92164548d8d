"""Messages a worker cannot read: dead-lettered with the reason, never dropped, never a crash.

A route queue may hold bytes that are not a route message: a body nested deeper
than the bus takes (a worker that decodes it may hit RecursionError, and the
prefork pool's pickling of it killed the worker's main process), bytes that
are not UTF-8 or not JSON, or JSON of another shape.  Celery's own answer to
a body it cannot decode is to log it and ack it (gone), and a body that
decodes but cannot be pickled kills the worker until the queue's delivery
limit dead-letters it, stopping every route on that worker meanwhile.

So the bus reads route bodies with its own JSON decoder (registered with
kombu under the name ``json``): the nesting depth is checked on the raw bytes
before anything is built (``bus.documents``), and a body that fails any check
decodes to a *marker* task body carrying the reason and the raw text.  The
task sees the marker and dead-letters the original bytes with the reason,
like any bad message.  What fails even before the decoder (bytes that are not
UTF-8 under a utf-8 content encoding) reaches Celery's ``on_decode_error``,
which the worker's consumer overrides to dead-letter instead of dropping.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from celery.worker.consumer import Consumer
from kombu import serialization

from bus.documents import check_json_depth
from bus.errors import DecodeError

log = logging.getLogger("gridbus.worker")
UNDECODABLE = "gridbus-undecodable"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def marker(reason: str, raw: bytes) -> list:
    """The task body standing for a message that could not be read: [args, kwargs, embed]."""
    return [[{UNDECODABLE: reason, "body": raw.decode("utf-8", "replace")}], {}, _EMBED]


def undecodable(payload: Any) -> str | None:
    """The reason a payload stands for a message that could not be read, else None."""
    return payload.get(UNDECODABLE) if isinstance(payload, dict) and len(payload) == 2 else None


def loads(data: str | bytes) -> Any:
    """A route message body: ``[[payload], {}, embed]`` checked, or the marker of why not."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    try:
        check_json_depth(raw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:  # NaN or a huge integer, as Celery's own encoder may write them
            body = json.loads(raw)
    except (DecodeError, ValueError, RecursionError) as exc:
        return marker(f"{exc.__class__.__name__}: {exc}"[:500], raw)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list) and len(body[0]) == 1
            and isinstance(body[1], dict)):
        return marker("not a route message: the body is not [[payload], {}, embed]", raw)
    return body


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def install() -> None:
    """Route bodies are read by ``loads`` in this process (the worker and its pool children)."""
    serialization.register("json", _dumps, loads, content_type="application/json", content_encoding="utf-8")


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot decode is dead-lettered, not acked away, and
    without the native delayed delivery bootstep."""

    class Blueprint(Consumer.Blueprint):
        # DelayedDelivery declares kombu's 28 celery_delayed_* levels and binds every task
        # queue's exchange to celery_delayed_delivery at each start: `gridbus routes apply`
        # declares exactly those (bus/topology/compile.py mirrors kombu), so the step only
        # redid it, and needed configure on 57 objects that the worker's broker user
        # (gridbus-worker) is not given.  The worker still publishes its retries into them.
        default_steps = [step for step in Consumer.Blueprint.default_steps
                         if not step.endswith(":DelayedDelivery")]

    def on_decode_error(self, message, exc):
        from bus.worker import task  # the task module imports this one's marker

        try:
            task.dead_letter_raw(message.delivery_info.get("routing_key"), dict(message.headers or {}),
                                 dict(message.properties or {}), message.body,
                                 f"cannot decode the message body: {exc.__class__.__name__}: {exc}"[:500])
        except Exception as publish_error:  # noqa: BLE001 - the broker dead-letters it instead
            log.error("undecodable message not dead-lettered (%s); rejected to the queue's dead-letter "
                      "exchange", publish_error)
            message.reject(requeue=False)
            return
        message.ack()
