"""REST destination: POST the outbound document; classify the answer for retry or dead letter."""
from __future__ import annotations

import time

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import TransientDeliveryError
from bus.options import describe
from bus.routes.model import Endpoint
from bus.transform import Outbound
from connectors.http_outcome import message_headers, not_answered, refused
from connectors.http_session import ThreadSessions


class RestOptions(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"}, metadata=describe(
        "Where the outbound document is POSTed (http or https)."))
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long to wait for the answer, in seconds; a timeout is retried."))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict, metadata=describe(
        "Extra HTTP headers sent with every POST (no secrets: route files are not secret)."))


class RestDestination:
    name = "rest"
    roles = ("destination",)

    def __init__(self):
        self.sessions = ThreadSessions()

    def options_schema(self, role: str) -> type[Schema]:
        return RestOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options.get("url"))

    def deliver(self, outbound: Outbound, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        url = endpoint.options["url"]
        headers = {**endpoint.options.get("headers", {}), **message_headers(envelope, outbound.content_type)}
        started = time.perf_counter()
        try:
            response = self.sessions.get().post(url, data=outbound.body, headers=headers,
                                            timeout=endpoint.options["timeout_s"])
        except requests.Timeout as exc:
            raise TransientDeliveryError(f"{endpoint.system}: timed out after "
                                         f"{endpoint.options['timeout_s']}s", endpoint.system) from exc
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            raise not_answered(endpoint.system, exc, maybe_sent=True) from exc
        status = response.status_code
        if status < 300:
            return DeliveryReceipt(endpoint.system, str(status), time.perf_counter() - started)
        raise refused(endpoint.system, status, f"{endpoint.system} answered {status}: {response.text[:300]}",
                      response.headers.get("Retry-After"))
