"""Pub-sub: canonical events published once, delivered to every subscriber on its own.

``events`` (destination) gives a canonical document the key
``<Noun>.<verb>.<source>`` and hands a copy to every route whose source is a
``subscription`` whose topic pattern (AMQP topic syntax) matches that key and,
for events, whose classes it has.  The copy is published on the events topic
exchange (``gridbus.events``) with the key ``<Noun>.<verb>.<source>.route.<subscriber>``;
each subscriber route's queue is bound there by its own id.  A copy per subscriber
(not one message bound to many queues) because each is a complete task message
for that subscriber's worker task, holding only the classes it asked for.  Each subscriber route has its own quorum queue,
worker task, retries and dead-letter queue, so a slow or dead WFM never holds
back the ADMS.  Copies have deterministic ids (``<message id>.<subscriber>``):
a re-published fan-out is recognisable downstream.
"""
from __future__ import annotations

import re
import time
from functools import lru_cache

from marshmallow import RAISE, Schema, fields, validate

from bus import naming, task_message
from bus.connector import DeliveryReceipt
from bus.envelope import Envelope, child_traceparent
from bus.errors import BrokerError, TransientDeliveryError
from bus.options import describe
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from bus.topology.model import Topology

CLASSES = ["critical", "outage", "health", "fraud"]


class SubscriptionOptions(Schema):
    class Meta:
        unknown = RAISE

    topic = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9*#_.-]+$"), metadata=describe(
        "The documents this route gets a copy of: an AMQP topic pattern over <Noun>.<verb>.<source>, e.g. "
        "EndDeviceEvents.created.* (* one word, # zero or more)."))
    classes = fields.List(fields.String(validate=validate.OneOf(CLASSES)), load_default=list, metadata=describe(
        "EndDeviceEvents only: the copy holds only events of these classes, and a document with none of "
        "them is not sent; empty: all events."))


class EventsOptions(Schema):
    class Meta:
        unknown = RAISE


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more."""
    regex = "^" + r"\.".join({"*": r"[^.]+", "#": r".*"}.get(w, re.escape(w)) for w in pattern.split(".")) + "$"
    regex = regex.replace(r"\..*", r"(\..*)?").replace(r".*\.", r"(.*\.)?")
    return re.match(regex, key) is not None


def select_events(document: dict, classes: list[str]) -> dict | None:
    """The document with only the events of ``classes`` (all when none given); None if none is left."""
    if not classes or document.get("noun") != "EndDeviceEvents":
        return document
    kept = [e for e in document.get("EndDeviceEvent", []) if set(e.get("eventClass") or ()) & set(classes)]
    return {**document, "EndDeviceEvent": kept} if kept else None


class SubscriptionSource:
    name = "subscription"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return SubscriptionOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, id(endpoint))  # any number of routes may subscribe to one topic

    def topology(self, route: Route, topology: Topology) -> None:
        # copies come from the events exchange; retries still come back through the ingress
        topology.bind(naming.EVENTS_EXCHANGE, route.queue_name, naming.route_binding_key(route.id))


@lru_cache(maxsize=1)
def _subscribers() -> tuple[Route, ...]:
    from bus.routes import load_routes  # the whole table: a worker may serve only some routes

    return tuple(r for r in load_routes([Settings.load().routes_path]) if r.source.connector == "subscription")


class EventsDestination:
    name = "events"
    roles = ("destination",)
    takes_documents = True

    def options_schema(self, role: str) -> type[Schema]:
        return EventsOptions

    def claim(self, endpoint: Endpoint):
        return (self.name,)

    def deliver_document(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        from bus.worker.task import publisher  # the worker process's confirming publisher

        started = time.perf_counter()
        noun = document.get("noun", envelope.noun)
        key = naming.events_routing_key(noun, envelope.verb, envelope.source)
        pub = publisher()
        try:
            copies = 0
            for route in _subscribers():
                if not topic_matches(route.source.options["topic"], key):
                    continue
                selected = select_events(document, route.source.options["classes"])
                if selected is None:
                    continue
                copy = Envelope(route_id=route.id, source=envelope.source, verb=envelope.verb, noun=noun,
                                message_id=f"{envelope.message_id}.{route.id}",
                                correlation_id=envelope.correlation,
                                traceparent=child_traceparent(envelope.traceparent),
                                extra={"gridbus-caused-by": envelope.message_id})
                body, props, headers = task_message.build(copy, selected)
                pub.publish(naming.EVENTS_EXCHANGE, f"{key}.{naming.route_routing_key(route.id)}",
                            body, props, headers)
                copies += 1
            pub.flush()
        except BrokerError as exc:
            raise TransientDeliveryError(f"events: {exc}", endpoint.system) from exc
        return DeliveryReceipt(endpoint.system, f"published to {copies} subscriber(s)",
                               time.perf_counter() - started, key)
