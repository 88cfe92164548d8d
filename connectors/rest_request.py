"""REST request destination: POST the request, the answer is the reply (request-response routes).

Only an answer that carries a Result is a reply.  An acknowledgement (202, or a
body that says the request is still pending, as the gateway answers a request
it is still working on) is not: the request is asked again later, and a system
that deduplicates by MessageID or commandId answers the retry with the real
outcome.  A command's retry says whether the destination may have seen it
(``maybe_sent``), so the worker never reports as failed what may have run.

The request's correlation id travels in the document's ``Header.CorrelationID``
as well as in ``X-Correlation-ID``: a system that forwards the document (the
MDMS asking the HES through the bus) keeps one correlation across both hops.
"""
from __future__ import annotations

import asyncio
import json

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from bus.options import describe
from bus.routes.model import Endpoint
from connectors.http_outcome import message_headers, never_connected, not_answered, refused, transient
from connectors.http_outcome import retry_after as http_retry_after
from connectors.http_session import LoopSessions, ThreadSessions


class RestRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"}, metadata=describe(
        "Where the request is POSTed (http or https); the answer is the reply."))
    timeout_s = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long to wait for the answer, in seconds; a timeout is asked again."))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict, metadata=describe(
        "Extra HTTP headers sent with every POST (no secrets: route files are not secret)."))


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
        return {**endpoint.options["headers"], **message_headers(envelope)}

    def request(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """The destination's IEC reply; 5xx and no answer are worth a retry, a non-reply 4xx is not."""
        try:
            answer = self.sessions.get().post(endpoint.options["url"], data=_body(document, envelope),
                                              headers=self._headers(envelope, endpoint),
                                              timeout=endpoint.options["timeout_s"])
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            raise not_answered(endpoint.system, exc, maybe_sent=not never_connected(exc)) from exc
        return _interpret(endpoint, answer.status_code, answer.content, answer.headers.get("Retry-After"))

    async def close_async(self) -> None:
        """The event-loop worker stops: its HTTP connections close with it."""
        await self.loop_sessions.close()

    async def request_async(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """``request`` on an event loop."""
        import aiohttp  # only the event-loop worker needs it

        try:
            async with self.loop_sessions.get().post(
                    endpoint.options["url"], data=_body(document, envelope), headers=self._headers(envelope, endpoint),
                    timeout=aiohttp.ClientTimeout(total=endpoint.options["timeout_s"])) as answer:
                status, content, retry_after = answer.status, await answer.read(), answer.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise not_answered(endpoint.system, exc, maybe_sent=not never_connected(exc)) from exc
        return _interpret(endpoint, status, content, retry_after)


def _body(document: dict, envelope: Envelope) -> str:
    """The document as sent, with the request's correlation id in its Header if it had none."""
    header = document.get("Header") if isinstance(document, dict) else None
    if isinstance(header, dict) and not header.get("CorrelationID"):
        document = {**document, "Header": {**header, "CorrelationID": envelope.correlation}}
    return json.dumps(document)


def _interpret(endpoint: Endpoint, status: int, content: bytes, retry_after: str | None = None) -> dict:
    """The destination's IEC reply; 5xx, 408 and 429 are worth a retry, a non-reply 4xx is not;
    an acknowledgement (202, or a Reply without a Result) is not a reply."""
    text = content[:300].decode("utf-8", "replace")
    if transient(status):
        raise refused(endpoint.system, status, f"{endpoint.system} answered {status}: {text}", retry_after)
    try:
        reply = json.loads(content)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("Reply"), dict):
        raise PermanentDeliveryError(f"{endpoint.system} answered {status} without an IEC reply: {text}",
                                     endpoint.system, status)
    if status == 202 or "Result" not in reply["Reply"] or reply.get("pending"):
        # taken, not answered: asked again, a deduplicating destination answers with the outcome
        error = TransientDeliveryError(f"{endpoint.system} answered {status}: taken but not answered yet "
                                       f"(state {reply.get('state', '?')})", endpoint.system, status,
                                       http_retry_after(retry_after) or 2.0)
        error.maybe_sent = True
        raise error
    return reply  # a FAILED reply (4xx or 200) is the answer, not a delivery failure
