"""The marshmallow schema of a route file: what a connector team may write."""
from __future__ import annotations

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from bus import naming
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
    return refuse


class EndpointSchema(Schema):
    """``system`` and ``connector``; every other key is the connector's option,
    checked by that connector's own schema once the connector is known."""

    class Meta:
        unknown = INCLUDE

    system = fields.String(required=True, validate=validate.Length(min=1))
    connector = fields.String(required=True, validate=validate.Length(min=1))
    transform = fields.List(fields.String(), load_default=list)


class RetrySchema(Schema):
    class Meta:
        unknown = RAISE

    attempts = fields.Integer(load_default=8, validate=validate.Range(min=1, max=100))
    backoff = fields.String(load_default="exponential", validate=validate.OneOf(["exponential", "fixed"]))
    first_delay_s = fields.Float(load_default=2.0, validate=validate.Range(min=1, max=MAX_DELAY_S))
    max_delay_s = fields.Float(load_default=3600.0, validate=validate.Range(min=1, max=MAX_DELAY_S))
    jitter = fields.Float(load_default=0.2, validate=validate.Range(min=0, max=1))

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
        ["quorum"], error="only quorum queues are supported (at-least-once dead-lettering)"))
    batch_size = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000))
    delivery_limit = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))


class OrderedSchema(Schema):
    """``ordered:`` of an ordered route: its partition queues and the batches taken from them."""

    class Meta:
        unknown = RAISE

    partitions = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=1, max=MAX_PARTITIONS))
    batch_max = fields.Integer(load_default=500, strict=True, validate=validate.Range(min=1, max=10_000))
    window_ms = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1, max=60_000))


class InPlaceRetrySchema(Schema):
    """``retry:`` of an ordered route: retried in place until delivered (the partition waits), so
    there is no attempt count, and delays may be below a second (no broker delay levels)."""

    class Meta:
        unknown = RAISE

    first_delay_s = fields.Float(load_default=0.5, validate=validate.Range(min=0.01, max=MAX_IN_PLACE_DELAY_S))
    max_delay_s = fields.Float(load_default=30.0, validate=validate.Range(min=0.01, max=MAX_IN_PLACE_DELAY_S))

    @validates_schema(skip_on_field_errors=False)
    def _delays_in_order(self, data, **kwargs):
        first, most = data.get("first_delay_s", 0.5), data.get("max_delay_s", 30.0)
        if isinstance(first, float) and isinstance(most, float) and most < first:
            raise ValidationError("max_delay_s must not be smaller than first_delay_s", "max_delay_s")


class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    verb = fields.String(load_default="created")
    noun = fields.String(load_default="MeterReadings")


class RouteSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=validate.Regexp(
        naming.ROUTE_ID_PATTERN, error="route id must be 2-63 of a-z, 0-9 and '-' (no dots)"))
    use_case = fields.Integer(load_default=None)
    description = fields.String(load_default="")
    source = fields.Nested(EndpointSchema, required=True)
    method = fields.String(required=True, validate=validate.OneOf(METHODS))
    transform = fields.List(fields.String(), load_default=list)
    destinations = fields.List(fields.Nested(EndpointSchema), required=True,
                               validate=validate.Length(min=1))
    retry = fields.Nested(RetrySchema, load_default=dict)
    queue = fields.Nested(QueueSchema, load_default=dict)
    message = fields.Nested(MessageSchema, load_default=dict)
    ordered = fields.Raw(validate=_refuse(f"only a route of method {ORDERED!r} has it"))
    correlate = fields.Raw(validate=_refuse(f"only a route of method {CORRELATE!r} has it"))
    # options for the route's transformers (e.g. utc_offset, fraud_case_window_s); each
    # transformer checks the ones it reads and names the route when one is wrong
    options = fields.Dict(keys=fields.String(), load_default=dict)


class OrderedRouteSchema(RouteSchema):
    """A route of method ``ordered`` (the loader picks this schema by the method): one transformer
    (it takes a batch of updates), one destination, ``ordered:`` options and in-place retries.
    ``queue`` and ``message`` belong to routes the Celery worker runs, so they are refused."""

    transform = fields.List(fields.String(), required=True, validate=validate.Length(
        equal=1, error="an ordered route has exactly one transformer (it encodes a batch of updates)"))
    destinations = fields.List(fields.Nested(EndpointSchema), required=True, validate=validate.Length(
        equal=1, error="an ordered route has exactly one destination (each destination is a route of its own, "
                       "with its own order)"))
    retry = fields.Nested(InPlaceRetrySchema, load_default=dict)
    ordered = fields.Nested(OrderedSchema, load_default=dict)
    queue = fields.Raw(validate=_refuse("an ordered route's queues are its partitions: set ordered.partitions"))
    message = fields.Raw(validate=_refuse("an ordered route forwards the outbox's updates as they are"))


class CorrelateSchema(Schema):
    """``correlate:`` of a correlate route: its partition queues, the batches taken from them, the
    watermark's tick, how often the state is checkpointed, and the route its verifications take."""

    class Meta:
        unknown = RAISE

    partitions = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=1, max=64))
    batch_max = fields.Integer(load_default=2000, strict=True, validate=validate.Range(min=1, max=100_000))
    window_ms = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1, max=60_000))
    tick_s = fields.Float(load_default=1.0, validate=validate.Range(min=0.05, max=60))
    skew_s = fields.Float(load_default=2.0, validate=validate.Range(min=0, max=600))
    checkpoint_s = fields.Float(load_default=30.0, validate=validate.Range(min=1, max=3600))
    verify_route = fields.String(load_default=None, allow_none=True)
    keep_days = fields.Float(load_default=90.0, validate=validate.Range(min=1, max=3660))
    breath_lookback_s = fields.Float(load_default=86400.0, validate=validate.Range(min=0, max=30 * 86400))


class CorrelateRouteSchema(RouteSchema):
    """A route of method ``correlate`` (the loader picks this schema by the method): a subscription
    source, no transform (the correlator makes the documents), one destination, ``correlate:``
    settings.  ``options`` are the correlator's rules (bus/outages/rules.py), checked by name."""

    transform = fields.List(fields.String(), load_default=list, validate=validate.Length(
        equal=0, error="a correlate route has no transformer: the correlator makes its documents"))
    destinations = fields.List(fields.Nested(EndpointSchema), required=True, validate=validate.Length(
        equal=1, error="a correlate route has exactly one destination"))
    correlate = fields.Nested(CorrelateSchema, load_default=dict)
    queue = fields.Raw(validate=_refuse("a correlate route's queues are its partitions: set correlate.partitions"))
    retry = fields.Raw(validate=_refuse("a correlate route is not retried by the broker: its process "
                                        "keeps the batch until its destination confirmed"))


class RouteFileSchema(Schema):
    class Meta:
        unknown = RAISE

    use_case = fields.Integer(load_default=None)
    title = fields.String(load_default="")
    routes = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1))
