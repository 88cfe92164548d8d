"""REST request destination: POST the request, the answer is the reply (request-response routes)."""
from __future__ import annotations

import asyncio
import json

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from bus.routes.model import Endpoint
from connectors.http_session import LoopSessions, ThreadSessions


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
        self.loop_sessions = LoopSessions()

    def options_schema(self, role: str) -> type[Schema]:
        return RestRequestOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["url"])

    @staticmethod
    def _headers(envelope: Envelope, endpoint: Endpoint) -> dict:
        return {**endpoint.options["headers"], "Content-Type": "application/json",
                "X-Message-ID": envelope.message_id, "X-Correlation-ID": envelope.correlation,
                "traceparent": envelope.traceparent}

    def request(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """The destination's IEC reply; 5xx and no answer are worth a retry, a non-reply 4xx is not."""
        try:
            answer = self.sessions.get().post(endpoint.options["url"], data=json.dumps(document),
                                              headers=self._headers(envelope, endpoint),
                                              timeout=endpoint.options["timeout_s"])
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            raise TransientDeliveryError(f"{endpoint.system}: {exc.__class__.__name__}: {exc}",
                                         endpoint.system) from exc
        return _interpret(endpoint, answer.status_code, answer.content)

    async def close_async(self) -> None:
        """The event-loop worker stops: its HTTP connections close with it."""
        await self.loop_sessions.close()

    async def request_async(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """``request`` on an event loop."""
        import aiohttp  # only the event-loop worker needs it

        try:
            async with self.loop_sessions.get().post(
                    endpoint.options["url"], data=json.dumps(document), headers=self._headers(envelope, endpoint),
                    timeout=aiohttp.ClientTimeout(total=endpoint.options["timeout_s"])) as answer:
                status, content = answer.status, await answer.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise TransientDeliveryError(f"{endpoint.system}: {exc.__class__.__name__}: {exc}",
                                         endpoint.system) from exc
        return _interpret(endpoint, status, content)


def _interpret(endpoint: Endpoint, status: int, content: bytes) -> dict:
    """The destination's IEC reply; 5xx, 408 and 429 are worth a retry, a non-reply 4xx is not."""
    text = content[:300].decode("utf-8", "replace")
    if status >= 500 or status in (408, 429):
        raise TransientDeliveryError(f"{endpoint.system} answered {status}: {text}", endpoint.system, status)
    try:
        reply = json.loads(content)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or "Reply" not in reply:
        raise PermanentDeliveryError(f"{endpoint.system} answered {status} without an IEC reply: {text}",
                                     endpoint.system, status)
    return reply  # a FAILED reply (4xx or 200) is the answer, not a delivery failure
