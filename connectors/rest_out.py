"""REST destination: POST the outbound document; classify the answer for retry or dead letter."""
from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from bus.routes.model import Endpoint
from connectors.http_session import ThreadSessions
from bus.transform import Outbound

# 408 and 429 are the destination asking us to come back later
RETRYABLE_4XX = {408, 429}


class RestOptions(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


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
        headers = {**endpoint.options.get("headers", {}), "Content-Type": outbound.content_type,
                   "X-Message-ID": envelope.message_id, "X-Correlation-ID": envelope.correlation,
                   "traceparent": envelope.traceparent}
        started = time.perf_counter()
        try:
            response = self.sessions.get().post(url, data=outbound.body, headers=headers,
                                            timeout=endpoint.options["timeout_s"])
        except requests.Timeout as exc:
            raise TransientDeliveryError(f"{endpoint.system}: timed out after "
                                         f"{endpoint.options['timeout_s']}s", endpoint.system) from exc
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            raise TransientDeliveryError(f"{endpoint.system}: {exc.__class__.__name__}: {exc}",
                                         endpoint.system) from exc
        status = response.status_code
        if status < 300:
            return DeliveryReceipt(endpoint.system, str(status), time.perf_counter() - started)
        detail = f"{endpoint.system} answered {status}: {response.text[:300]}"
        if status >= 500 or status in RETRYABLE_4XX:
            raise TransientDeliveryError(detail, endpoint.system, status,
                                         _retry_after(response.headers.get("Retry-After")))
        raise PermanentDeliveryError(detail, endpoint.system, status)
