"""HTTP request source: billing and MDMS systems ask through the gateway and get a reply.

    POST /v1/requests/<path>     a request (meter readings, billing determinants, commands)
    GET  /v1/requests/<id>       its state and reply (also when the sync wait timed out)

The request travels on its route with ``reply_to = gridbus.replies`` and the
request id as the correlation of the reply; served by `gridbus gateway`.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from bus import naming
from bus.options import describe
from bus.routes.model import Endpoint, Route
from bus.topology.model import QueueSpec, Topology

KINDS = ("meter-readings", "billing-determinants", "commands")


class HttpRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9/_-]*$",
                         error="path: lowercase letters, digits, '-', '_' and '/'"), metadata=describe(
        "The URL path after /v1/requests/ where the system POSTs its requests (one gateway path space with "
        "http-push)."))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS), metadata=describe(
        "Which request document the gateway accepts on this path."))
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long a synchronous caller waits for the reply before 504, in seconds; the reply is still kept "
        "for GET /v1/requests/<id>."))
    max_body_kb = fields.Integer(load_default=1024, validate=validate.Range(min=1, max=65536), metadata=describe(
        "Largest request body taken, in KiB; a larger one is answered 413."))
    max_meters = fields.Integer(load_default=10_000, validate=validate.Range(min=1, max=1_000_000),
        metadata=describe(
        "Most meters in one request; more are answered 413 TOO_MANY_METERS."))
    # command safety (kind: commands)
    approval_above = fields.Integer(load_default=50, validate=validate.Range(min=0), metadata=describe(
        "Commands: a request for more meters than this waits as pending-approval for a second person "
        "(gridbus commands approve)."))
    disconnects_per_minute = fields.Integer(load_default=1000, validate=validate.Range(min=1), metadata=describe(
        "Commands: disconnects per system per minute, counted in meters; more are answered 429 with "
        "Retry-After."))
    default_expiry_s = fields.Integer(load_default=900, validate=validate.Range(min=1, max=7 * 86400),
        metadata=describe(
        "Commands: how long a command stays valid when its request gives no expiresAt, in seconds."))
    # plausibility: a number past these is refused with the limit named (a credit update of
    # 1e308 is a bug or an attack, never a top-up); per route, as tariffs and meters differ
    max_credit_amount = fields.Float(load_default=100_000.0, validate=validate.Range(min=0, max=1e12),
        metadata=describe(
        "Commands: a credit update beyond this amount, either way, is refused (400 IMPLAUSIBLE_VALUE)."))
    max_load_limit_kw = fields.Float(load_default=1_000.0, validate=validate.Range(min=0, max=1e6),
        metadata=describe(
        "Commands: a load limit above this, in kW, is refused (400 IMPLAUSIBLE_VALUE)."))


class HttpRequestSource:
    name = "http-request"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return HttpRequestOptions

    def claim(self, endpoint: Endpoint):
        return ("http-push", endpoint.options["path"].strip("/"))  # one gateway path space

    def topology(self, route: Route, topology: Topology) -> None:
        topology.add_queue(QueueSpec.of(naming.REPLIES_QUEUE, {"x-queue-type": "quorum"}))
