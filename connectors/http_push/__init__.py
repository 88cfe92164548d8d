"""HTTP push source: source systems POST documents to the gateway (`gridbus gateway`).

Served by aiohttp (``server``): requests wait for their replies on its event
loop, pushes run the WSGI application (``app``) on a pool of threads.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

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
                         error="path: lowercase letters, digits, '-', '_' and '/'"))
    max_body_kb = fields.Integer(load_default=1024, validate=validate.Range(min=1, max=65536))
    # what the route's first transformer reads: JSON documents or XML (e.g. 61968-9 EndDeviceEvents)
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "xml"]))


class HttpPushSource:
    name = "http-push"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return HttpPushOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["path"].strip("/"))

    def key_store(self, settings: Settings, wait_s: float | None = None) -> KeyStore:
        return open_key_store(settings.state_dir, wait_s)

    def serve_http(self, routes: list[Route], settings: Settings, host: str, port: int, threads: int,
                   rate_per_s: float = 0, all_routes: list[Route] | None = None,
                   retention: Retention = Retention()) -> None:
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
        serve(gateway, requests, host, port, threads, max_body, network)
