"""Replies to asynchronous requests, POSTed to the requester's ReplyAddress with retries.

The gateway's reply consumer puts ``{"address", "request_id", "reply"}`` on the
route whose source is ``replies``; its ``callback`` destination POSTs the
reply there.  Retries and dead letters are the route's, like any delivery: a
billing system that is down for an hour gets its replies when it is back.
"""
from __future__ import annotations

import json
import time

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import TransientDeliveryError, ValidationError
from bus.options import describe
from bus.routes.model import Endpoint
from connectors.http_outcome import certificate_failure, message_headers, refused, untrusted
from connectors.http_session import ThreadSessions


class NoOptions(Schema):
    class Meta:
        unknown = RAISE


class CallbackOptions(Schema):
    class Meta:
        unknown = RAISE

    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long to wait for the requester's answer to a callback POST, in seconds; a timeout is retried."))


class RepliesSource:
    """Marks the callback route: fed by the gateway's reply consumer, nothing external."""

    name = "replies"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return NoOptions

    def claim(self, endpoint: Endpoint):
        return (self.name,)


class CallbackDestination:
    name = "callback"
    roles = ("destination",)
    takes_documents = True

    def __init__(self):
        self.sessions = ThreadSessions()

    def options_schema(self, role: str) -> type[Schema]:
        return CallbackOptions

    def claim(self, endpoint: Endpoint):
        return (self.name,)

    def deliver_document(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        address = document.get("address") if isinstance(document, dict) else None
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise ValidationError(f"callback without an http(s) address: {address!r}")
        started = time.perf_counter()
        try:
            answer = self.sessions.get().post(address, data=json.dumps(document["reply"]), timeout=endpoint.options[
                "timeout_s"], headers=message_headers(envelope, **{"X-Request-ID": document["request_id"]}))
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            failure = certificate_failure(exc)
            if failure is not None:
                raise untrusted("callback", failure, f"callback {address}") from exc
            raise TransientDeliveryError(f"callback {address}: {exc.__class__.__name__}", "callback") from exc
        if answer.status_code >= 300:
            raise refused("callback", answer.status_code, f"callback {address} answered {answer.status_code}: "
                          f"{answer.text[:200]}", answer.headers.get("Retry-After"))
        return DeliveryReceipt("callback", str(answer.status_code), time.perf_counter() - started, address)
