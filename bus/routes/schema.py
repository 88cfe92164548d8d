"""The marshmallow schema of a route file: what a connector team may write."""
from __future__ import annotations

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from bus import naming
from bus.options import describe
from bus.network.delivery_topology import MAX_PARTITIONS

# ``ordered``: in order per key, from the network store's outbox, run by ``gridbus network deliver``
# (partition queues with single active consumer, retries in place), never by the Celery worker
# ``correlate``: events correlated into new documents by a stateful process (``gridbus outages``),
# partitioned by feeder, never by the Celery worker (docs/outages.md)
METHODS = ("file-batch", "push", "pub-sub", "request-response", "ordered", "correlate")
ORDERED = "ordered"
CORRELATE = "correlate"
ORDERED_SOURCE = "network-store"  # the one source an ordered route has: the network store's outbox
MAX_DELAY_S = 2 ** 28 - 1  # the broker's delay levels end there (about 8.5 years)
MAX_IN_PLACE_DELAY_S = 600  # an ordered route's batch is let go for redelivery after 10 min in place


def _refuse(why: str):
    def refuse(_value):
        raise ValidationError(why)
    refuse.refusal = why  # the reference (bus/routes/reference.py) shows the key as refused, and why
    return refuse


class EndpointSchema(Schema):
    """``system`` and ``connector``; every other key is the connector's option,
    checked by that connector's own schema once the connector is known."""

    class Meta:
        unknown = INCLUDE

    system = fields.String(required=True, validate=validate.Length(min=1), metadata=describe(
        "The system at this end, e.g. hes-a or mdms-1: it labels deliveries, traces, metrics and dead letters; "
        "for a source it is who may push or publish."))
    connector = fields.String(required=True, validate=validate.Length(min=1), metadata=describe(
        "The connector that reaches the system (connectors.md); its options are the endpoint's other keys."))
    transform = fields.List(fields.String(), load_default=list, metadata=describe(
        "Extra transformers for this destination only, applied after the route's own chain."))


class RetrySchema(Schema):
    class Meta:
        unknown = RAISE

    attempts = fields.Integer(load_default=8, validate=validate.Range(min=1, max=100), metadata=describe(
        "Attempts per destination before the message goes to the route's dead-letter queue."))
    backoff = fields.String(load_default="exponential", validate=validate.OneOf(["exponential", "fixed"]),
                            metadata=describe("How the delay grows between attempts: doubled each time, or "
                                              "always first_delay_s."))
    first_delay_s = fields.Float(load_default=2.0, validate=validate.Range(min=1, max=MAX_DELAY_S),
                                 metadata=describe("Delay before the first retry, in seconds (retries wait in "
                                                   "the broker, up to its last delay level, about 8.5 years)."))
    max_delay_s = fields.Float(load_default=3600.0, validate=validate.Range(min=1, max=MAX_DELAY_S),
                               metadata=describe("The longest delay between two attempts, in seconds; not "
                                                 "below first_delay_s."))
    jitter = fields.Float(load_default=0.2, validate=validate.Range(min=0, max=1), metadata=describe(
        "Random spread of each delay, as a fraction of it, so retries of many messages do not come at once."))

    @validates_schema(skip_on_field_errors=False)
    def _delays_in_order(self, data, **kwargs):
        first, most = data.get("first_delay_s", 2.0), data.get("max_delay_s", 3600.0)
        if isinstance(first, float) and isinstance(most, float) and most < first:
            raise ValidationError("max_delay_s must not be smaller than first_delay_s", "max_delay_s")


class QueueSchema(Schema):
    class Meta:
        unknown = RAISE

    # Only quorum queues: at-least-once dead-lettering and a delivery limit need them.
    type = fields.String(load_default="quorum", validate=validate.OneOf(
        ["quorum"], error="only quorum queues are supported (at-least-once dead-lettering)"),
        metadata=describe("The route queue's type: quorum only (at-least-once dead-lettering and a "
                          "delivery limit need it)."))
    batch_size = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000), metadata=describe(
        "Rows (CSV) or readings (XML) per message that a file-drop source cuts from a file; a chunk also "
        "ends at 8 MiB."))
    delivery_limit = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100), metadata=describe(
        "A message whose worker dies this many times while holding it is dead-lettered "
        "(DeliveryLimitExceeded)."))


class OrderedSchema(Schema):
    """``ordered:`` of an ordered route: its partition queues and the batches taken from them."""

    class Meta:
        unknown = RAISE

    partitions = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=1, max=MAX_PARTITIONS),
                                metadata=describe("Partition queues of the route; a consumer's updates always "
                                                  "go to the same one. Drain the route before changing it."))
    batch_max = fields.Integer(load_default=500, strict=True, validate=validate.Range(min=1, max=10_000),
                               metadata=describe("Updates taken from a partition at once (prefetch is twice "
                                                 "this)."))
    window_ms = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1, max=60_000),
                               metadata=describe("The longest the first update of a batch waits for more, in "
                                                 "milliseconds."))


class InPlaceRetrySchema(Schema):
    """``retry:`` of an ordered route: retried in place until delivered (the partition waits), so
    there is no attempt count, and delays may be below a second (no broker delay levels)."""

    class Meta:
        unknown = RAISE

    first_delay_s = fields.Float(load_default=0.5, validate=validate.Range(min=0.01, max=MAX_IN_PLACE_DELAY_S),
                                 metadata=describe("Delay before the first retry in place, in seconds (below a "
                                                   "second is fine: no broker delay levels)."))
    max_delay_s = fields.Float(load_default=30.0, validate=validate.Range(min=0.01, max=MAX_IN_PLACE_DELAY_S),
                               metadata=describe("The longest delay between two attempts, in seconds (the delay "
                                                 "doubles up to it); not below first_delay_s."))

    @validates_schema(skip_on_field_errors=False)
    def _delays_in_order(self, data, **kwargs):
        first, most = data.get("first_delay_s", 0.5), data.get("max_delay_s", 30.0)
        if isinstance(first, float) and isinstance(most, float) and most < first:
            raise ValidationError("max_delay_s must not be smaller than first_delay_s", "max_delay_s")


class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    verb = fields.String(load_default="created", metadata=describe(
        "The envelope's verb for messages the route's source builds."))
    noun = fields.String(load_default="MeterReadings", metadata=describe(
        "The envelope's noun for messages the route's source builds, e.g. EndDeviceEvents for alarms; "
        "events keys its fan-out by it."))


class RouteSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=validate.Regexp(
        naming.ROUTE_ID_PATTERN, error="route id must be 2-63 of a-z, 0-9 and '-' (no dots)"), metadata=describe(
        "The route's name, unique across all files: 2-63 of a-z, 0-9 and '-', no dots. Every broker object "
        "of the route is named after it (queue gridbus.route.<id>, dead letters gridbus.dlq.<id>)."))
    use_case = fields.Integer(load_default=None, metadata=describe(
        "The use case the route belongs to; default: the file's use_case."))
    description = fields.String(load_default="", metadata=describe(
        "One line on what the route does, shown by gridbus routes list and show."))
    source = fields.Nested(EndpointSchema, required=True, metadata=describe(
        "Where the route's messages come from: an endpoint."))
    method = fields.String(required=True, validate=validate.OneOf(METHODS), metadata=describe(
        "How messages move. request-response routes run on gridbus worker --kind requests, ordered routes in "
        "gridbus network deliver, correlate routes in gridbus outages, all others on --kind deliveries."))
    transform = fields.List(fields.String(), load_default=list, metadata=describe(
        "Transformer names applied in order (transformers.md): a decoder first, an encoder last."))
    destinations = fields.List(fields.Nested(EndpointSchema), required=True,
                               validate=validate.Length(min=1), metadata=describe(
                                   "Where the messages go: endpoints, each delivered and retried on its own."))
    retry = fields.Nested(RetrySchema, load_default=dict, metadata=describe(
        "How each destination is retried before a message is dead-lettered."))
    queue = fields.Nested(QueueSchema, load_default=dict, metadata=describe("The route queue."))
    message = fields.Nested(MessageSchema, load_default=dict, metadata=describe(
        "The envelope of messages the source builds; without it each source uses its own default."))
    ordered = fields.Raw(validate=_refuse(f"only a route of method {ORDERED!r} has it"), metadata=describe(
        "Partitions and batches of a route of method ordered (below)."))
    correlate = fields.Raw(validate=_refuse(f"only a route of method {CORRELATE!r} has it"), metadata=describe(
        "How a route of method correlate runs (below)."))
    # options for the route's transformers (e.g. utc_offset, fraud_case_window_s); each
    # transformer checks the ones it reads and names the route when one is wrong
    options = fields.Dict(keys=fields.String(), load_default=dict, metadata=describe(
        "Options of the route's transformers, one mapping for the whole chain (transformers.md); a key no "
        "step reads is an error."))


class OrderedRouteSchema(RouteSchema):
    """A route of method ``ordered`` (the loader picks this schema by the method): one transformer
    (it takes a batch of updates), one destination, ``ordered:`` options and in-place retries.
    ``queue`` and ``message`` belong to routes the Celery worker runs, so they are refused."""

    transform = fields.List(fields.String(), required=True, validate=validate.Length(
        equal=1, error="an ordered route has exactly one transformer (it encodes a batch of updates)"),
        metadata=describe("The one transformer that encodes a batch of updates, e.g. billing_network_json."))
    destinations = fields.List(fields.Nested(EndpointSchema), required=True, validate=validate.Length(
        equal=1, error="an ordered route has exactly one destination (each destination is a route of its own, "
                       "with its own order)"), metadata=describe(
        "The one destination, a connector that takes batches (billing-rest), with no transform of its own."))
    retry = fields.Nested(InPlaceRetrySchema, load_default=dict, metadata=describe(
        "Retried in place until delivered (the partition waits): no attempts, backoff or jitter."))
    ordered = fields.Nested(OrderedSchema, load_default=dict, metadata=describe(
        "The route's partition queues and the batches taken from them."))
    queue = fields.Raw(validate=_refuse("an ordered route's queues are its partitions: set ordered.partitions"),
                       metadata=describe("Not on an ordered route: its queues are its partitions."))
    message = fields.Raw(validate=_refuse("an ordered route forwards the outbox's updates as they are"),
                         metadata=describe("Not on an ordered route: the outbox's updates go as they are."))


class CorrelateSchema(Schema):
    """``correlate:`` of a correlate route: its partition queues, the batches taken from them, the
    watermark's tick, how often the state is checkpointed, and the route its verifications take."""

    class Meta:
        unknown = RAISE

    partitions = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=1, max=64), metadata=describe(
        "Partition queues of the route; all events of one feeder go to the same partition."))
    batch_max = fields.Integer(load_default=2000, strict=True, validate=validate.Range(min=1, max=100_000),
                               metadata=describe("Deliveries taken from a partition at once."))
    window_ms = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1, max=60_000),
                               metadata=describe("The longest the first delivery of a batch waits for more, in "
                                                 "milliseconds."))
    tick_s = fields.Float(load_default=1.0, validate=validate.Range(min=0.05, max=60), metadata=describe(
        "How often the watermark (the clock minus skew_s) is published to the partitions, in seconds."))
    skew_s = fields.Float(load_default=2.0, validate=validate.Range(min=0, max=600), metadata=describe(
        "How far the watermark stays behind the clock, in seconds: events that late still count in order."))
    checkpoint_s = fields.Float(load_default=30.0, validate=validate.Range(min=1, max=3600), metadata=describe(
        "How often a partition's state is checkpointed to the outage store, in seconds."))
    verify_route = fields.String(load_default=None, allow_none=True, metadata=describe(
        "The request-response route (a bus-request source) that verifies new outages by reading meters; "
        "none: outages are not verified."))
    keep_days = fields.Float(load_default=90.0, validate=validate.Range(min=1, max=3660), metadata=describe(
        "Days a closed outage, its timeline and its sent messages are kept; open ones are never forgotten."))
    breath_lookback_s = fields.Float(load_default=86400.0, validate=validate.Range(min=0, max=30 * 86400),
                                     metadata=describe("A first breath also goes to the partitions of every "
                                                       "feeder its meter was under this long before it, in "
                                                       "seconds."))


class CorrelateRouteSchema(RouteSchema):
    """A route of method ``correlate`` (the loader picks this schema by the method): a subscription
    source, no transform (the correlator makes the documents), one destination, ``correlate:``
    settings.  ``options`` are the correlator's rules (bus/outages/rules.py), checked by name."""

    transform = fields.List(fields.String(), load_default=list, validate=validate.Length(
        equal=0, error="a correlate route has no transformer: the correlator makes its documents"),
        metadata=describe("None: the correlator makes the route's documents."))
    destinations = fields.List(fields.Nested(EndpointSchema), required=True, validate=validate.Length(
        equal=1, error="a correlate route has exactly one destination"), metadata=describe(
        "The one destination of the correlated documents, e.g. the ADMS over amqp."))
    correlate = fields.Nested(CorrelateSchema, load_default=dict, metadata=describe(
        "How the correlator runs the route: partitions, batches, watermark, checkpoints, verification."))
    queue = fields.Raw(validate=_refuse("a correlate route's queues are its partitions: set correlate.partitions"),
                       metadata=describe("Not on a correlate route: its queues are its partitions."))
    retry = fields.Raw(validate=_refuse("a correlate route is not retried by the broker: its process "
                                        "keeps the batch until its destination confirmed"), metadata=describe(
        "Not on a correlate route: its process keeps a batch until the destination confirmed it."))


class RouteFileSchema(Schema):
    class Meta:
        unknown = RAISE

    use_case = fields.Integer(load_default=None, metadata=describe(
        "The use case of the file's routes (docs/use-cases.md), for every route that does not give its own."))
    title = fields.String(load_default="", metadata=describe("What the file's routes are for, in one line."))
    routes = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1), metadata=describe(
        "The routes of the file, each a mapping of the route keys below."))
