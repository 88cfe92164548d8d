"""REST request destination: POST the request, the answer is the reply (request-response routes)."""
from __future__ import annotations

import json

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from bus.routes.model import Endpoint
from connectors.http_session import ThreadSessions


class RestRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    timeout_s = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=300))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class RestRequestDestination:
    name = "rest-request"
    roles = ("destination",)
    takes_requests = True

    def __init__(self):
        self.sessions = ThreadSessions()

    def options_schema(self, role: str) -> type[Schema]:
        return RestRequestOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["url"])

    def request(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """The destination's IEC reply; 5xx and no answer are worth a retry, a non-reply 4xx is not."""
        headers = {**endpoint.options["headers"], "Content-Type": "application/json",
                   "X-Message-ID": envelope.message_id, "X-Correlation-ID": envelope.correlation,
                   "traceparent": envelope.traceparent}
        try:
            answer = self.sessions.get().post(endpoint.options["url"], data=json.dumps(document), headers=headers,
                                          timeout=endpoint.options["timeout_s"])
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            raise TransientDeliveryError(f"{endpoint.system}: {exc.__class__.__name__}: {exc}",
                                         endpoint.system) from exc
        if answer.status_code >= 500 or answer.status_code in (408, 429):
            raise TransientDeliveryError(f"{endpoint.system} answered {answer.status_code}: {answer.text[:300]}",
                                         endpoint.system, answer.status_code)
        try:
            reply = answer.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or "Reply" not in reply:
            raise PermanentDeliveryError(f"{endpoint.system} answered {answer.status_code} without an IEC "
                                         f"reply: {answer.text[:300]}", endpoint.system, answer.status_code)
        return reply  # a FAILED reply (4xx or 200) is the answer, not a delivery failure
