"""``billing-rest``: POST a batch of consumer-path updates to a billing system; classify its answer.

The billing systems refuse a batch whole (docs/network-billing-formats.md), so a refusal says
which consumers it was about: the JSON ``Reply.Error[].consumer`` or the XML
``Reply/Error/details``.  They come back on the ``PermanentDeliveryError`` as ``consumers``,
so the delivery process dead-letters those consumers' updates and sends the others again.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.errors import PermanentDeliveryError, TransientDeliveryError
from bus.options import describe
from bus.transform import Outbound
from connectors.http_outcome import not_answered, refused
from connectors.http_session import ThreadSessions

MAX_REPLY = 1 << 20  # a refusal's body read for the consumers it names: at most 1 MiB


class BillingRestOptions(Schema):
    class Meta:
        unknown = RAISE

    system = fields.String(required=True, metadata=describe(
        "The billing system: the endpoint's system, which this connector reads too."))
    connector = fields.String(required=True, metadata=describe(
        "billing-rest: the endpoint's connector, which this connector reads too."))
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"}, metadata=describe(
        "Where batches of consumer-path updates are POSTed (http or https)."))
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long to wait for the billing system's answer, in seconds; a timeout is retried."))


def consumers_named(body: bytes, content_type: str) -> list[str]:
    """The consumers a refusal names (JSON or XML reply); none if it cannot be read."""
    try:
        if "json" in content_type:
            errors = json.loads(body).get("Reply", {}).get("Error", [])
            return [e["consumer"] for e in errors if isinstance(e, dict) and isinstance(e.get("consumer"), str)]
        if "xml" in content_type and b"<!DOCTYPE" not in body and b"<!ENTITY" not in body:
            root = ET.fromstring(body)
            return [el.text for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "details" and el.text]
    except (ValueError, AttributeError, ET.ParseError):
        pass
    return []


class BillingRest:
    name = "billing-rest"
    roles = ("destination",)

    def __init__(self):
        self.sessions = ThreadSessions()

    def options_schema(self, role: str) -> type[Schema]:
        return BillingRestOptions

    def claim(self, endpoint):
        return (self.name, endpoint.options.get("url"))

    def send(self, outbound: Outbound, destination: dict, message_id: str) -> None:
        """POST ``outbound``; return on 2xx, raise Transient- or PermanentDeliveryError otherwise."""
        system, timeout = destination["system"], float(destination.get("timeout_s", 10.0))
        headers = {"Content-Type": outbound.content_type, "X-Message-ID": message_id}
        try:
            response = self.sessions.get().post(destination["url"], data=outbound.body, headers=headers,
                                                timeout=timeout)
        except requests.Timeout as exc:
            raise TransientDeliveryError(f"{system}: timed out after {timeout}s", system) from exc
        except requests.RequestException as exc:
            self.sessions.drop()
            raise not_answered(system, exc, maybe_sent=True) from exc
        status = response.status_code
        if status < 300:
            return
        body = response.content[:MAX_REPLY]
        error = refused(system, status, f"{system} answered {status}: {body[:300].decode('utf-8', 'replace')}",
                        response.headers.get("Retry-After"))
        if isinstance(error, PermanentDeliveryError):
            error.consumers = consumers_named(body, response.headers.get("Content-Type", ""))
        raise error
