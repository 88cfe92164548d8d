"""GIS push source: network change documents POSTed to the gateway, applied to the network store.

    POST /v1/push/<path>   a change document (JSON, docs/network-formats.md) or an IEC 61968-9
                           MasterDataLinkageConfig (XML); answered with the store's IEC 61968-100
                           Reply once the document's transaction has committed

Served by `gridbus gateway` (``connectors.http_push.gis_push``).  The route's destination is the
network store itself (``network-store``): the gateway applies the document there and then, so
nothing travels on the route's queue; a document that does arrive there (published by hand, or
replayed) is applied by a worker the same way, and its repeated change ids are duplicates.
"""
from __future__ import annotations

import json
import time

from marshmallow import RAISE, Schema, fields, validate

from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import DecodeError, PermanentDeliveryError, TransientDeliveryError, ValidationError
from bus.network import open_store
from bus.network.model import read_document
from bus.network.store import NetworkStoreError
from bus.options import describe
from bus.routes.model import Endpoint


class GisPushOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9/_-]*$",
                         error="path: lowercase letters, digits, '-', '_' and '/'"), metadata=describe(
        "The URL path after /v1/push/ where the GIS POSTs its change documents (one gateway path space with "
        "http-push and http-request)."))
    # a document of 100,000 changes is about 20 MB; one document is parsed at a time
    max_body_kb = fields.Integer(load_default=32768, validate=validate.Range(min=1, max=65536), metadata=describe(
        "Largest document taken, in KiB; a larger one is answered 413 (100,000 changes are about 20 MB)."))
    max_changes = fields.Integer(load_default=100_000, validate=validate.Range(min=1, max=1_000_000),
        metadata=describe(
        "Most changes in one document; a document with more is answered 413 TOO_MANY_CHANGES."))
    # a sender slower than this for the whole body is cut off (408): it holds a socket, never the writer
    read_timeout_s = fields.Float(load_default=60.0, validate=validate.Range(min=0.1, max=3600), metadata=describe(
        "A sender that takes longer than this for the whole body is cut off with 408, in seconds."))


class GisPushSource:
    name = "gis-push"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return GisPushOptions

    def claim(self, endpoint: Endpoint):
        return ("http-push", endpoint.options["path"].strip("/"))  # one gateway path space


class NoOptions(Schema):
    class Meta:
        unknown = RAISE


class NetworkStoreDestination:
    """The bus's network store ($GRIDBUS_NETWORK_STORE, default $GRIDBUS_HOME/state/network.sqlite)."""

    name = "network-store"
    roles = ("destination",)
    takes_documents = True  # the change document itself, no encoder

    def options_schema(self, role: str) -> type[Schema]:
        return NoOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.system)

    def deliver_document(self, document, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        started = time.perf_counter()
        try:
            changes, _ = read_document(document if isinstance(document, (bytes, str)) else json.dumps(document))
        except (DecodeError, ValidationError) as exc:
            raise PermanentDeliveryError(f"not a change document: {exc}") from exc
        try:
            result = open_store().apply(changes, document_id=envelope.message_id)
        except NetworkStoreError as exc:
            raise TransientDeliveryError(f"network store: {exc}") from exc
        return DeliveryReceipt(endpoint.system, result.result, time.perf_counter() - started,
                               detail=str(result.summary()))
