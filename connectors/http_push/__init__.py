"""HTTP push source: source systems POST documents to the gateway (`gridbus gateway`).

Served by waitress, a production WSGI server (multi-threaded, no C build, runs
anywhere Python does) rather than a development server.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from connectors.http_push.keys import KeyStore, keys_path


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

    def key_store(self, settings: Settings) -> KeyStore:
        return KeyStore(keys_path(settings.state_dir))

    def wsgi_app(self, routes: list[Route], settings: Settings, rate_per_s: float = 0,
                 all_routes: list[Route] | None = None, threads: int = 48):
        from bus.requests.store import RequestStore, requests_path
        from connectors.http_push.app import Gateway
        from connectors.http_push.reply_consumer import ReplyConsumer
        from connectors.http_push.requests_api import RequestApi, Waiters
        from connectors.http_push.seen import SeenAlarms

        request_routes = [r for r in routes if r.source.connector == "http-request"]
        if request_routes:
            store, waiters = RequestStore(requests_path(settings.state_dir)), Waiters()
            ReplyConsumer(settings.broker_url, store, waiters, list(all_routes or routes)).start()
        gateway = Gateway(routes, settings.broker_url, self.key_store(settings), rate_per_s,
                          SeenAlarms(settings.state_dir / "gateway-seen-alarms.sqlite"))
        if request_routes:
            # a third of the threads each: billing's waits never starve the MDMS's onward requests
            gateway.requests = RequestApi(request_routes, store, gateway._publisher, waiters,
                                          max(2, threads // 3))
        return gateway

    def serve_http(self, routes: list[Route], settings: Settings, host: str, port: int, threads: int,
                   rate_per_s: float = 0, all_routes: list[Route] | None = None) -> None:
        import waitress

        waitress.serve(self.wsgi_app(routes, settings, rate_per_s, all_routes, threads), host=host, port=port,
                       threads=threads,
                       ident="gridbus-gateway", clear_untrusted_proxy_headers=True)
