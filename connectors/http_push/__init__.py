"""HTTP push source: source systems POST documents to the gateway (`gridbus gateway`).

Served by aiohttp (``server``): requests wait for their replies on its event
loop, pushes run the WSGI application (``app``) on a pool of threads.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from bus.options import describe
from bus.requests.store import Retention
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from connectors.http_push.keys import KeyStore, open_key_store

# the request store's WAL is copied into the database this often, off the store thread
CHECKPOINT_S = 0.5
# how long the gateway's stores wait for a PostgreSQL connection (a shared state store): while
# the server is away a caller is answered 503 after this, rather than held until it gives up
STORE_WAIT_S = 3.0


class HttpPushOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9/_-]*$",
                         error="path: lowercase letters, digits, '-', '_' and '/'"),
                         metadata=describe("The gateway path the source system POSTs to, under /v1/push/."))
    max_body_kb = fields.Integer(load_default=1024, validate=validate.Range(min=1, max=65536), metadata=describe(
        "The largest body taken, in KiB; a larger one is answered 413."))
    # what the route's first transformer reads: JSON documents or XML (e.g. 61968-9 EndDeviceEvents)
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "xml"]), metadata=describe(
        "What the route's first transformer reads: JSON documents or XML."))


class HttpPushSource:
    name = "http-push"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return HttpPushOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["path"].strip("/"))

    def sample_payloads(self, route: Route, data: bytes, name: str, reject=None):
        """The payload the worker would get for ``data`` pushed to this route (``gridbus routes
        test``): the body read and checked as the gateway does (``Gateway.body_of``, then the
        route's first transformer, ``DocumentCheck``).  ``DecodeError`` naming the status and code
        when the gateway would refuse it.  A JSON document is handed on without the items the
        check refused, as the gateway publishes it; those refusals (the sender's PARTIAL reply)
        go to ``reject(index, reason)``.  An XML document goes on whole (its items are refused
        again by the worker's decoder, so they are not reported twice)."""
        import io

        from bus.errors import DecodeError
        from connectors.http_push.app import Gateway, Refusal
        from connectors.http_push.check import DocumentCheck
        from connectors.http_push.seen import without

        fmt = route.source.options.get("format", "json")
        environ = {"CONTENT_TYPE": f"application/{fmt}", "CONTENT_LENGTH": str(len(data)),
                   "wsgi.input": io.BytesIO(data)}
        try:
            document = Gateway.body_of(environ, route, fmt)
        except Refusal as refused:
            status, code, reason = refused.args[:3]
            raise DecodeError(f"refused by the gateway ({status} {code}): {reason}") from None
        if fmt == "json" and not isinstance(document, (dict, list)):
            raise DecodeError("refused by the gateway (400 MALFORMED_JSON): body must be a JSON object or array")
        checked = DocumentCheck().check(route, route.source.system, document)
        if checked.error:
            raise DecodeError(f"refused by the gateway (400 {checked.error[0]}): {checked.error[1]}")
        if fmt == "json" and checked.rejections:
            dropped = {line for line, _ in checked.rejections if isinstance(line, int)}
            document = without(document, dropped)
            for line, reason in checked.rejections:
                if line in dropped and reject is not None:
                    reject(line, reason)
        yield document

    def key_store(self, settings: Settings, wait_s: float | None = None) -> KeyStore:
        return open_key_store(settings.state_dir, wait_s)

    def serve_http(self, routes: list[Route], settings: Settings, host: str, port: int, threads: int,
                   rate_per_s: float = 0, all_routes: list[Route] | None = None,
                   retention: Retention = Retention(), limits: dict | None = None, ssl_context=None) -> None:
        """``limits``: fairness.ServerLimits' fields (per-system share, header and body deadlines);
        ``ssl_context``: serve HTTPS with it (bus.tls.server_context), None: plain HTTP."""
        from bus.requests.store import RequestStore, requests_path
        from connectors.http_push.app import Gateway
        from connectors.http_push.request_loop import RequestLoop
        from connectors.http_push.requests_api import RequestApi
        from connectors.http_push.seen import SeenAlarms
        from connectors.http_push.server import serve

        gateway = Gateway(routes, settings.broker_url, self.key_store(settings, STORE_WAIT_S), rate_per_s,
                          SeenAlarms(settings.state_dir / "gateway-seen-alarms.sqlite", wait_s=STORE_WAIT_S))
        request_routes = [r for r in routes if r.source.connector == "http-request"]
        requests = None
        if request_routes:
            api = RequestApi(request_routes, RequestStore(requests_path(settings.state_dir),
                                                          checkpoint_s=CHECKPOINT_S, wait_s=STORE_WAIT_S))
            requests = RequestLoop(api, settings.broker_url, list(all_routes or routes), retention)
        network = None
        network_routes = [r for r in routes if r.source.connector == "gis-push"]
        if network_routes:
            from bus.network import open_store
            from connectors.http_push.gis_push import NetworkPush

            network = NetworkPush(network_routes, gateway, open_store())
        # the largest body any route takes; each route's own limit is checked by the gateway
        max_body = max(r.source.options["max_body_kb"] for r in routes) * 1024
        from connectors.http_push.fairness import ServerLimits

        serve(gateway, requests, host, port, threads, max_body, network, ServerLimits(**(limits or {})), ssl_context)
