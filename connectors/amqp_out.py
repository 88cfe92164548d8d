"""AMQP destination (``amqp``): publish the outbound document on an exchange the receiving system owns.

A system that takes its messages over AMQP (the ADMS takes outages that way, issue 19) names
an exchange and a routing key, and usually its own queue::

    destinations:
      - {system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, queue: adms.outages}

``gridbus routes apply`` declares the exchange (``exchange_type``: direct, topic or fanout;
durable), the queue (quorum) and the binding with the routing key, through the topology
hook ``destination_topology(endpoint, topology)`` that bus/topology/compile.py calls for
every destination connector that has it.  ``gridbus broker users add <reader>`` gives the
system (``reader``, default the destination's system) a user that may consume that queue
and nothing else (``broker_read_grants``).

Every message is persistent (delivery mode 2), carries a deterministic ``message_id`` (the
receiver drops one it already has) and is published **mandatory** with publisher confirms:
a message no queue takes (no binding, a wrong key) is returned by the broker and the
publish fails, it never vanishes.

Two ways to publish:

* ``deliver(outbound, envelope, endpoint)``: the worker's path for an ordinary route (the raw
  events could go to the ADMS this way too); a confirming publisher per thread on the bus's
  broker (``GRIDBUS_BROKER_URL``), broker errors become ``TransientDeliveryError``.
* ``message(endpoint, body, message_id, ...)`` / ``document_message(endpoint, document)``: the
  pure part, for a bus process with its own ``bus.messaging.ConfirmingPublisher`` that
  publishes many documents and flushes once per batch::

      for decision in decisions:
          publisher.publish(*amqp_out.document_message(endpoint, decision))
      publisher.flush()   # BrokerError if any was nacked or unroutable
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, NamedTuple

import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from bus import naming
from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import BrokerError, ConfigError, TransientDeliveryError
from bus.messaging import ConfirmingPublisher
from bus.options import describe
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from bus.topology.model import ExchangeSpec, QueueSpec, Topology
from bus.transform import Outbound

EXCHANGE_TYPES = ("direct", "topic", "fanout")
# AMQP short strings: at most 255 bytes; names of plain characters so a permission pattern
# and a log line show them as they are
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
_KEY = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"   # a literal key: no * or # (it is also the binding)
_SYSTEM = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# names the bus or the broker own: a destination never declares or publishes into them
_RESERVED = (f"{naming.PREFIX}.", "amq.", "celery")


def _not_reserved(what: str):
    def check(value: str) -> None:
        if value.lower().startswith(_RESERVED):
            raise ValidationError(f"{what} {value!r} is not the receiving system's: names starting with "
                                  f"{', '.join(repr(p) for p in _RESERVED)} belong to the bus or the broker")
    return check


class AmqpOptions(Schema):
    class Meta:
        unknown = RAISE

    exchange = fields.String(required=True, validate=[
        validate.Regexp(_NAME, error="exchange must be 1-255 of A-Z, a-z, 0-9, '.', '_', ':' and '-' "
                                     "(not the default exchange)"),
        _not_reserved("exchange")], metadata=describe(
        "The receiving system's exchange the document is published on, declared (durable) by gridbus routes "
        "apply; never one of the bus's or the broker's (gridbus., amq., celery)."))
    routing_key = fields.String(required=True, validate=validate.Regexp(
        _KEY, error="routing_key must be 1-255 of A-Z, a-z, 0-9, '.', '_', ':' and '-' (a literal key: "
                    "no wildcards)"), metadata=describe(
        "The routing key of every message, a literal key (no wildcards); also the key the queue is bound "
        "with."))
    exchange_type = fields.String(load_default="direct", validate=validate.OneOf(EXCHANGE_TYPES),
        metadata=describe(
        "The exchange's type, as gridbus routes apply declares it."))
    # the receiving system's queue: declared (quorum) and bound to the exchange with the key
    queue = fields.String(load_default=None, validate=[
        validate.Regexp(_NAME, error="queue must be 1-255 of A-Z, a-z, 0-9, '.', '_', ':' and '-'"),
        _not_reserved("queue")], metadata=describe(
        "The receiving system's queue, declared (quorum) and bound to the exchange with routing_key; none: "
        "the system binds its own."))
    # the broker user (a system name) that may consume the queue; default: the destination's system
    reader = fields.String(load_default=None, validate=validate.Regexp(
        _SYSTEM, error="reader must be a system name: 1-63 of a-z, 0-9, '.', '_' and '-'"), metadata=describe(
        "The broker user (a system name) that may consume the queue, made by gridbus broker users add; "
        "default: the destination's system. Needs queue."))

    @validates_schema
    def _reader_needs_a_queue(self, data: dict, **_kwargs) -> None:
        if data.get("reader") and not data.get("queue"):
            raise ValidationError("a reader reads a queue: set queue as well", "reader")


class AmqpMessage(NamedTuple):
    """What ``ConfirmingPublisher.publish`` takes, in its order: ``publisher.publish(*m)``
    (mandatory is the publisher's default)."""

    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any]
    headers: dict[str, Any]


def reader_of(endpoint: Endpoint) -> str:
    """The broker user that may consume the endpoint's queue."""
    return endpoint.options.get("reader") or endpoint.system


def message(endpoint: Endpoint, body: bytes, message_id: str, content_type: str = "application/json",
            headers: dict[str, Any] | None = None, correlation_id: str | None = None) -> AmqpMessage:
    """The message to publish for ``body`` to ``endpoint`` (an ``amqp`` destination): persistent,
    ``message_id`` set (the receiver's duplicate key), the endpoint's exchange and key.  Pure:
    the same arguments give the same message."""
    if not message_id:
        raise ValueError("an AMQP destination's message needs a message id (the receiver drops repeats by it)")
    options = endpoint.options
    # no timestamp: the same document gives the same message, byte for byte, however often it is sent
    properties: dict[str, Any] = {"content_type": content_type, "delivery_mode": 2, "message_id": message_id,
                                  "app_id": "gridbus"}
    if correlation_id:
        properties["correlation_id"] = correlation_id
    return AmqpMessage(options["exchange"], options["routing_key"], body, properties, dict(headers or {}))


def document_message(endpoint: Endpoint, document: dict[str, Any], message_id: str | None = None,
                     correlation_id: str | None = None) -> AmqpMessage:
    """``message`` for a JSON document such as the correlator's ``{"verb", "noun", "messageId",
    "Outage"}``: the body is the document as JSON, the id its ``messageId`` (unless given), and
    ``gridbus-verb`` / ``gridbus-noun`` headers say what it is without parsing it."""
    message_id = message_id or document.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise ValueError("the document has no messageId and none was given")
    headers = {key: document[field] for key, field in (("gridbus-verb", "verb"), ("gridbus-noun", "noun"))
               if isinstance(document.get(field), str)}
    return message(endpoint, orjson.dumps(document), message_id, "application/json", headers, correlation_id)


def topology_of(endpoint: Endpoint, topology: Topology) -> None:
    """Add the endpoint's exchange, queue and binding to ``topology``; ``ConfigError`` if another
    destination wants the same exchange or queue with other arguments."""
    options = endpoint.options
    exchange = ExchangeSpec.of(options["exchange"], options["exchange_type"])
    _add_once(topology.exchanges, exchange, "exchange", endpoint)
    topology.add_exchange(exchange)
    if options.get("queue"):
        queue = QueueSpec.of(options["queue"], {"x-queue-type": "quorum"})
        _add_once(topology.queues, queue, "queue", endpoint)
        topology.add_queue(queue)
        topology.bind(exchange.name, queue.name, options["routing_key"])


def _add_once(known: dict, spec: Any, kind: str, endpoint: Endpoint) -> None:
    if spec.name in known and known[spec.name] != spec:
        raise ConfigError(f"destination {endpoint.system!r} ({endpoint.connector}) wants {kind} {spec.name!r} "
                          f"as {spec}, another route already has it as {known[spec.name]}")


class AmqpDestination:
    name = "amqp"
    roles = ("destination",)
    # what a bus process that publishes through its own confirming publisher calls (the outage
    # correlator: bus/outages/partition.py); the bus finds it on the connector, never by import
    message = staticmethod(message)

    def __init__(self) -> None:
        self._local = threading.local()

    # the pure message builders, also reachable through the connector found by name
    # (``registry.connector(endpoint.connector).message(endpoint, body, message_id, ...)``)
    message = staticmethod(message)
    document_message = staticmethod(document_message)

    def options_schema(self, role: str) -> type[Schema]:
        return AmqpOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options.get("exchange"), endpoint.options.get("routing_key"))

    # -- topology and broker users (bus/topology/compile.py, bus/broker_users.py)
    def destination_topology(self, endpoint: Endpoint, topology: Topology) -> None:
        topology_of(endpoint, topology)

    def broker_read_grants(self, route: Route, endpoint: Endpoint) -> list[tuple[str, str]]:
        """(system, queue): who may consume what (``gridbus broker users``)."""
        queue = endpoint.options.get("queue")
        return [(reader_of(endpoint), queue)] if queue else []

    # -- the worker's path
    def _publisher(self) -> ConfirmingPublisher:
        pub = getattr(self._local, "publisher", None)
        if pub is None:
            pub = self._local.publisher = ConfirmingPublisher(Settings.load().broker_url,
                                                              f"gridbus-amqp-out-{threading.get_ident()}")
        return pub

    def _drop_publisher(self) -> None:
        pub = getattr(self._local, "publisher", None)
        self._local.publisher = None
        if pub is not None:
            pub.close()  # a channel the broker closed (404, 403) or a lost connection is not reused

    def deliver(self, outbound: Outbound, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        headers = {"traceparent": envelope.traceparent, "gridbus-source": envelope.source,
                   "gridbus-verb": envelope.verb, "gridbus-noun": outbound.noun or envelope.noun}
        msg = message(endpoint, outbound.body, envelope.message_id, outbound.content_type, headers,
                      envelope.correlation)
        started = time.perf_counter()
        try:
            pub = self._publisher()
            pub.publish(*msg)
            pub.flush()
        except BrokerError as exc:
            self._drop_publisher()
            error = TransientDeliveryError(f"{endpoint.system}: exchange {msg.exchange!r} key "
                                           f"{msg.routing_key!r}: {exc}", endpoint.system)
            # returned (unroutable) or refused: the receiver never had it; a lost connection: it may have
            error.maybe_sent = not re.search(r"unroutable|nacked|NotFound|AccessRefused", str(exc))
            raise error from exc
        return DeliveryReceipt(endpoint.system, "confirmed", time.perf_counter() - started,
                               f"{msg.exchange} [{msg.routing_key}]")
