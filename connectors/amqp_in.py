"""AMQP ingress: systems that push over MQ publish raw JSON on ``gridbus.hes-ingress``
with their routing key; the ingress batches them (by count or a short window) into
one route message, so a burst of 50,000 alarms is a few hundred tasks, not 50,000.

Raw messages are acked only after their batch is confirmed on the route; one
that is not JSON, is over ``max_body_kb`` or nests deeper than the bus takes
(``bus.documents``) goes to the route's dead-letter queue with the reason, unparsed.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from bus import naming, task_message
from bus.options import describe
from bus.deadletters import headers as dl
from bus.documents import check_json_depth
from bus.envelope import Envelope
from bus.errors import DecodeError
from bus.messaging import BatchConsumer, ConfirmingPublisher, Delivery
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from bus.topology.model import ExchangeSpec, QueueSpec, Topology

log = logging.getLogger("gridbus.amqp-in")


class AmqpInOptions(Schema):
    class Meta:
        unknown = RAISE

    routing_key = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9._-]*$"), metadata=describe(
        "The routing key the source system publishes with on gridbus.ingress (its broker user may use only its own)."))
    batch_max = fields.Integer(load_default=500, validate=validate.Range(min=1, max=10_000), metadata=describe(
        "Messages gathered into one batch at the ingress (an alarm burst travels in batches)."))
    batch_window_ms = fields.Integer(load_default=200, validate=validate.Range(min=1, max=10_000), metadata=describe(
        "The longest a batch waits to fill, in milliseconds."))
    # the largest raw message taken, as http-push's: a batch holds up to batch_max of them
    max_body_kb = fields.Integer(load_default=1024, validate=validate.Range(min=1, max=65536), metadata=describe(
        "The largest message taken, in KiB; a larger one is refused."))


class AmqpInSource:
    name = "amqp-in"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return AmqpInOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["routing_key"])

    def topology(self, route: Route, topology: Topology) -> None:
        topology.add_exchange(ExchangeSpec.of(naming.HES_INGRESS_EXCHANGE, "topic",
                                              {"alternate-exchange": naming.UNROUTABLE_EXCHANGE}))
        queue = topology.add_queue(QueueSpec.of(naming.inbound_queue_name(route.id), {"x-queue-type": "quorum"}))
        topology.bind(naming.HES_INGRESS_EXCHANGE, queue.name, route.source.options["routing_key"])

    def broker_grants(self, route: Route) -> list[tuple[str, str]]:
        """What the route's source system may publish (``gridbus broker users``)."""
        return [(naming.HES_INGRESS_EXCHANGE, route.source.options["routing_key"])]

    def sample_payloads(self, route: Route, data: bytes, name: str, reject=None):
        """The payload the worker would get for ``data`` published as one raw message on this
        route's routing key (``gridbus routes test``): its JSON as the ingress batches it, a list
        of items (an array's items, or the one document).  ``DecodeError`` when the ingress would
        dead-letter it unparsed (too large, too deep, not JSON); nothing for an empty array."""
        item = raw_document(data, route.source.options["max_body_kb"] * 1024)
        items = item if isinstance(item, list) else [item]
        if items:
            yield items

    def serve(self, routes: list[Route], settings: Settings, stop: threading.Event) -> None:
        threads = [threading.Thread(target=_bridge_forever, args=(route, settings, stop), daemon=True,
                                    name=f"amqp-in {route.id}") for route in routes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _bridge_forever(route: Route, settings: Settings, stop: threading.Event) -> None:
    options = route.source.options
    publisher = ConfirmingPublisher(settings.broker_url, f"gridbus-amqp-in-{route.id}")
    consumer = BatchConsumer(settings.broker_url, [naming.inbound_queue_name(route.id)],
                             lambda batch: _bridge(route, publisher, batch), name=f"gridbus-amqp-in-{route.id}",
                             batch_max=options["batch_max"], window_s=options["batch_window_ms"] / 1000)
    try:
        consumer.serve(stop, after_failure=publisher.close)
    finally:
        publisher.close()


def _bridge(route: Route, publisher: ConfirmingPublisher, batch: list[Delivery]) -> None:
    """Publish a batch of raw messages as route messages (a new one each time ``batch_max``
    items are reached, at a message's end) and what cannot be read as dead letters, then
    wait for the broker's confirms: only then does the consumer ack the raw ones."""
    options = route.source.options
    max_bytes = options["max_body_kb"] * 1024
    items: list = []
    for delivery in batch:
        try:
            item = raw_document(delivery.body, max_bytes)
        except DecodeError as exc:
            _dead_letter_raw(publisher, route, delivery, str(exc))
            continue
        items.extend(item if isinstance(item, list) else [item])
        if len(items) >= options["batch_max"]:
            _publish(route, publisher, items)
            items = []
    if items:
        _publish(route, publisher, items)
    publisher.flush()


def _publish(route: Route, publisher: ConfirmingPublisher, items: list) -> None:
    envelope = Envelope(route_id=route.id, source=route.source.system,
                        verb=route.message.get("verb", "created"),
                        noun=route.message.get("noun", "EndDeviceEvents"))
    body, props, headers = task_message.build(envelope, items)
    publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers)


def raw_document(body: bytes, max_bytes: int) -> Any:
    """The JSON of a raw message; ``DecodeError`` if it is too large, too deep or not JSON,
    checked in that order so that nothing too large or too deep is ever parsed."""
    if len(body) > max_bytes:
        raise DecodeError(f"too large: {len(body)} bytes; this route takes at most {max_bytes}")
    check_json_depth(body)
    try:
        return json.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8/16/32, or an integer of over 4,300 digits
        raise DecodeError(f"not JSON: {exc}") from exc


def _dead_letter_raw(publisher: ConfirmingPublisher, route: Route, delivery: Delivery, reason: str) -> None:
    now = time.time()
    headers, props = delivery.headers, delivery.properties
    # one group per kind of refusal ("not JSON", "too large", ...), not per parser message
    headers.update(dl.reason_headers(route.id, "", "DecodeError", reason[:1000], attempts=0,
                                     grouped_by=reason.split(":", 1)[0]))
    publisher.publish(naming.dead_letter_exchange_name(route.id), "", delivery.body,
                      {"content_type": props.get("content_type") or "application/octet-stream", "delivery_mode": 2,
                       "message_id": props.get("message_id") or f"raw-{now}"}, headers)
