"""Bus request source: a request-response route whose requests come from a bus process.

The outage correlator (use case 3) verifies each new DT or feeder outage by asking a few
meters through the on-demand read path of use case 7.  It is a process of the bus, not a
system behind the gateway, so its requests do not come in over HTTP: the process publishes
them on the route itself (``bus.outages.verify.verify_message``), with ``reply_to`` a queue
of its own, and the request worker (``gridbus worker --kind requests``) asks the route's
destinations and publishes the reply there, correlated by the request's message id.

    source: {system: outages, connector: bus-request, kind: meter-readings, timeout_s: 20}

- ``kind``: what is asked (``meter-readings`` only, for now).
- ``timeout_s`` (default 20): how long the asking process gives a request.  The request
  travels with that expiry (``gridbus-expires-at``): a worker that takes it later does not run
  it and replies ``EXPIRED``; the process treats a request unanswered by then as unanswered.
  The destination's own ``timeout_s`` and ``retry_for_s`` (hes-request: 10 s, 30 s by
  default) should fit inside it, or a reply may come after the process stopped waiting.

Nothing outside the bus reaches such a route: the gateway serves only ``http-request``
sources (no path, no API key takes it), no broker user may publish on it (no
``broker_grants``) and the ingress runs nothing for it (no ``serve``).  It declares no
broker objects either: the reply queue is the asking process's.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from bus.options import describe
from bus.routes.model import Endpoint

KINDS = ("meter-readings",)


class BusRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(KINDS), metadata=describe(
        "What the asking bus process asks; one route per process and kind."))
    timeout_s = fields.Float(load_default=20.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long the asking process waits for a reply, in seconds; the request expires then. The "
        "destination's timeout_s and retry_for_s should fit inside it."))


class BusRequestSource:
    name = "bus-request"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return BusRequestOptions

    def claim(self, endpoint: Endpoint):
        # one route per asking process and kind: the process finds its route without ambiguity
        return (self.name, endpoint.system, endpoint.options["kind"])
