"""The gateway's WSGI application: authenticated pushes onto routes, with IEC-style replies.

    POST /v1/push/<path>   a JSON document for the route whose source is http-push with that path
    GET  /openapi.json     the OpenAPI document (from the marshmallow schemas)
    GET  /docs             a browsable page of it
    GET  /health

Requests (``/v1/requests/...``) are served on the event loop (``server``,
``request_loop``), with this application's authentication and body checks.

A push is answered 202 only once the broker has confirmed the message: an
accepted push is never lost.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from typing import Callable, Iterable

from bus import hooks, naming, task_message
from bus.envelope import Envelope, child_traceparent, new_traceparent
from bus.documents import check_json_depth
from bus.errors import BrokerError, DecodeError
from bus.messaging import ConfirmingPublisher
from bus.routes.model import Route
from bus.state_store import StateStoreError
from connectors.http_push.check import MAX_REASONS, DocumentCheck
from connectors.http_push.keys import KeyStore
from connectors.http_push.openapi import docs_page, openapi_document
from connectors.http_push.ratelimit import RateLimiter
from connectors.http_push.seen import SeenAlarms, alarm_ids, without
from connectors.http_push.schemas import ReplySchema

log = logging.getLogger("gridbus.gateway")
# a push waits at most this for its confirm, and at most FAILOVER_S for another node when its node
# died; a broker alarm (connection.blocked) is answered 503 at once, whatever these say
CONFIRM_TIMEOUT_S = 10.0
FAILOVER_S = 5.0
_REPLY = ReplySchema()
STATUS_TEXT = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
               404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
               413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
               503: "Service Unavailable", 504: "Gateway Timeout"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reply(result: str, noun: str | None = None, message_id: str | None = None,
          correlation_id: str | None = None, errors: list[tuple[str, str]] = ()) -> dict:
    body = {"Header": {"Verb": "reply", "Noun": noun, "Timestamp": _now(), "MessageID": message_id,
                       "CorrelationID": correlation_id},
            "Reply": {"Result": result}}
    if errors:
        # PARTIAL: the message was accepted without the items named (a WARNING each)
        level = "FATAL" if result == "FAILED" else "WARNING"
        body["Reply"]["Error"] = [{"code": c, "level": level, "reason": r} for c, r in errors]
    if message_id and result in ("OK", "PARTIAL"):
        body["message_id"] = message_id
    return _REPLY.dump(body)


# the answer while the state store cannot be read or written: nothing was taken, try again
STORE_AWAY = ("STORE_UNAVAILABLE", "the gateway's state store cannot be reached now; retry",
              [("Retry-After", "5")])
_STORE_AWAY = (503, *STORE_AWAY)


class Refusal(Exception):
    """An answer other than acceptance: (status, code, reason[, extra headers])."""


# the environ key under which the server hands over a caller it has authenticated and rate-limited
# already (server.py, before the body is read); a header can never set it (headers are HTTP_*)
CALLER = "gridbus.caller"


def count_refusal(route_id: str, source: str, status: int, code: str) -> None:
    """A call the gateway refused: a trace event, counted by the recorder
    (gridbus_requests_refused_total).  ``"?"`` for a route or system not known."""
    hooks.emit("refused", route=route_id, source=source, status=status, code=code)


class Gateway:
    def __init__(self, routes: list[Route], broker_url: str, keys: KeyStore, rate_per_s: float = 0,
                 seen: SeenAlarms | None = None):
        self.request_routes = {r.source.options["path"].strip("/"): r for r in routes
                               if r.source.connector == "http-request"}
        network_paths = [r.source.options["path"].strip("/") for r in routes if r.source.connector == "gis-push"]
        routes = [r for r in routes if r.source.connector == "http-push"]
        self.routes = {r.source.options["path"].strip("/"): r for r in routes}
        self.limiter = RateLimiter(rate_per_s)
        self.seen = seen
        self.broker_url = broker_url
        self.keys = keys
        self._local = threading.local()
        self.validator = DocumentCheck()
        self.openapi = openapi_document({p: r.source.options.get("format", "json") for p, r in self.routes.items()},
                                        {p: r.source.options["kind"] for p, r in self.request_routes.items()},
                                        network_paths)  # served by gis_push.NetworkPush

    def _publisher(self) -> ConfirmingPublisher:
        pub = getattr(self._local, "publisher", None)
        if pub is None:
            # a blocked broker (alarm) or one that takes longer to fail over is answered 503 with
            # Retry-After, not waited on
            pub = self._local.publisher = ConfirmingPublisher(self.broker_url, "gridbus-gateway", window=8,
                                                              failover_s=FAILOVER_S, wait_while_blocked=False)
        return pub

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if path == "/health":
            return self._send(start_response, 200, {"status": "ok"})
        if path == "/openapi.json" and method == "GET":
            return self._send(start_response, 200, self.openapi)
        if path == "/docs" and method == "GET":
            return self._send(start_response, 200, docs_page(self.openapi), "text/html; charset=utf-8")
        if path.startswith("/v1/push/"):
            if method != "POST":
                return self._fail(start_response, 405, "METHOD_NOT_ALLOWED", "use POST", [("Allow", "POST")])
            return self._push(environ, start_response, path[len("/v1/push/"):].strip("/"))
        return self._fail(start_response, 404, "NOT_FOUND", f"no {method} {path}")

    def _push(self, environ, start_response, push_path: str):
        route = self.routes.get(push_path)
        if route is None:
            return self._fail(start_response, 404, "UNKNOWN_ROUTE", f"no route takes pushes at {push_path!r}")
        system = "?"  # a refusal before the caller is known (503: the key store away) is counted under "?"
        try:
            system = environ.get(CALLER) or self.caller(environ)
            if system != route.source.system:
                raise Refusal(403, "FORBIDDEN",
                              f"{system} may not publish to route {route.id} (its source is {route.source.system})")
            fmt = route.source.options.get("format", "json")
            document = self.body_of(environ, route, fmt)
        except Refusal as refused:
            if refused.args[0] not in (401, 429):  # those two caller() has counted
                count_refusal(route.id, system, *refused.args[:2])
            return self._fail(start_response, *refused.args)
        if fmt == "json" and not isinstance(document, (dict, list)):
            count_refusal(route.id, system, 400, "MALFORMED_JSON")
            return self._fail(start_response, 400, "MALFORMED_JSON", "body must be a JSON object or array")
        checked = self.validator.check(route, system, document)
        if checked.error:
            count_refusal(route.id, system, 400, checked.error[0])
            return self._fail(start_response, 400, *checked.error)
        if checked.rejections and fmt == "json":
            document = without(document, {line for line, _ in checked.rejections if isinstance(line, int)})
        warnings = [("REJECTED", reason) for _, reason in checked.rejections[:MAX_REASONS]]
        if len(checked.rejections) > MAX_REASONS:
            warnings.append(("REJECTED", f"... and {len(checked.rejections) - MAX_REASONS} more"))
        ids = alarm_ids(document) if self.seen and fmt == "json" else None
        seen_before: dict[str, str] = {}
        if ids:
            try:
                seen_before = self.seen.known(system, [a for _, a in ids])
            except StateStoreError as exc:  # cannot tell a resend from a new alarm: nothing published
                log.error("push to %s not accepted: %s", route.id, exc)
                return self._fail(start_response, *_STORE_AWAY)
            if len(seen_before) == len(ids):  # all resent: the same answer, nothing published again
                first = seen_before[ids[0][1]]
                answer = reply("PARTIAL" if warnings else "OK", route.message.get("noun"), first, errors=warnings)
                answer["duplicates"] = len(ids)
                return self._send(start_response, 202, answer)
            document = without(document, {i for i, a in ids if a in seen_before})
        parent = environ.get("HTTP_TRACEPARENT")
        envelope = Envelope(route_id=route.id, source=system, verb=route.message.get("verb", "created"),
                            noun=route.message.get("noun", "EndDeviceEvents"),
                            correlation_id=environ.get("HTTP_X_CORRELATION_ID"),
                            traceparent=child_traceparent(parent) if parent else new_traceparent())
        body, props, headers = task_message.build(envelope, document)
        pub = self._publisher()
        try:
            pub.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers)
            pub.flush(timeout_s=CONFIRM_TIMEOUT_S)
        except BrokerError as exc:
            pub.abandon()  # not close(): a blocked broker would not answer its handshake
            self._local.publisher = None
            log.error("push to %s not accepted: %s", route.id, exc)
            return self._fail(start_response, 503, "BROKER_UNAVAILABLE", "the bus cannot take it now; retry",
                              [("Retry-After", "5")])
        if ids:
            try:
                self.seen.remember(system, [a for _, a in ids if a not in seen_before], envelope.message_id)
            except StateStoreError as exc:  # published and confirmed: accepted; a resend goes out twice
                log.warning("alarms of %s accepted but not remembered (a resend will be published again): %s",
                            envelope.message_id, exc)
        hooks.emit("received", message_id=envelope.message_id, correlation_id=envelope.correlation,
                   traceparent=envelope.traceparent, route=route.id, attempt=1, noun=envelope.noun,
                   source=system, request_id=environ.get("HTTP_X_REQUEST_ID"), bytes=int(environ["CONTENT_LENGTH"]))
        answer = reply("PARTIAL" if warnings else "OK", envelope.noun, envelope.message_id,
                       envelope.correlation, errors=warnings)
        if seen_before:
            answer["duplicates"] = len(seen_before)
        return self._send(start_response, 202, answer)

    def caller(self, environ) -> str:
        """The authenticated system, within its rate; ``Refusal`` (401, 429; 503 while the key
        store cannot be read) otherwise."""
        try:
            system = self.keys.system_of(environ.get("HTTP_X_API_KEY") or _bearer(environ.get("HTTP_AUTHORIZATION")))
        except StateStoreError as exc:
            log.error("API key not checked: %s", exc)
            raise Refusal(*_STORE_AWAY) from exc
        if system is None:
            # counted (gridbus_requests_refused_total): a run of these is someone trying keys; no
            # route label, since the path is the caller's to choose
            count_refusal("?", "?", 401, "UNAUTHENTICATED")
            raise Refusal(401, "UNAUTHENTICATED", "missing or unknown API key",
                          [("WWW-Authenticate", 'ApiKey realm="gridbus"')])
        wait = self.limiter.take(system)
        if wait:
            count_refusal("?", system, 429, "RATE_LIMITED")
            raise Refusal(429, "RATE_LIMITED", f"{system} is over its rate; retry later",
                          [("Retry-After", str(max(1, round(wait + 0.5))))])
        return system

    @staticmethod
    def body_of(environ, route: Route, fmt: str):
        """The parsed body (JSON, nested at most ``MAX_DEPTH`` levels) or its text (XML);
        ``Refusal`` (415, 411, 413, 400) otherwise."""
        media = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if not media.endswith(fmt):  # application/json, application/xml, text/xml, +json, +xml
            raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE", f"this route takes application/{fmt}")
        limit = route.source.options["max_body_kb"] * 1024
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length < 0:
            raise Refusal(411, "LENGTH_REQUIRED", "send a Content-Length")
        if length > limit:
            raise Refusal(413, "TOO_LARGE", f"{length} bytes; this route takes at most {limit}")
        raw = environ["wsgi.input"].read(length)
        if fmt == "xml":
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Refusal(400, "MALFORMED_XML", f"send XML in UTF-8: {exc}") from exc
        try:
            check_json_depth(raw)  # before parsing: the parser recurses once per level
        except DecodeError as exc:
            raise Refusal(400, "TOO_DEEP", str(exc)) from exc
        try:
            text = raw.decode(json.detect_encoding(raw))  # what json.loads does, without its surrogatepass
        except UnicodeDecodeError as exc:
            raise Refusal(400, "MALFORMED_JSON", f"body is not JSON in UTF-8 (or UTF-16/32): {exc}") from exc
        lone = _lone_surrogate(text)
        if lone:
            # no character, so no UTF-8 either: storing or publishing it was a 500
            raise Refusal(400, "MALFORMED_JSON", f"body is not JSON: {lone} is half of a UTF-16 pair, no character")
        try:
            # a request is stored and sent on with orjson, which takes no integer beyond 64 bits
            # (one in any field was a 500); a push travels with the standard library's too
            return json.loads(text, parse_int=_int64 if route.source.connector == "http-request" else None)
        except DecodeError as exc:  # from _int64: json.loads passes what parse_int raises on
            raise Refusal(400, "NUMBER_OUT_OF_RANGE", str(exc)) from exc
        except ValueError as exc:  # not JSON, not UTF-8/16/32, or an integer of over 4,300 digits
            raise Refusal(400, "MALFORMED_JSON", f"body is not JSON: {exc}") from exc

    def _fail(self, start_response, status: int, code: str, reason: str, extra: list | None = None):
        return self._send(start_response, status, reply("FAILED", errors=[(code, reason)]), extra=extra)

    @staticmethod
    def _send(start_response, status: int, body, content_type: str = "application/json", extra=None):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        start_response(f"{status} {STATUS_TEXT.get(status, '')}",
                       [("Content-Type", content_type), ("Content-Length", str(len(data))), *(extra or [])])
        return [data]


# an escape of a high surrogate with the low one that makes it a pair, or one half on its own
_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
                        r"|\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _lone_surrogate(text: str) -> str | None:
    """The first ``\\uXXXX`` escape of JSON text that is half a surrogate pair, if any."""
    if "\\ud" not in text and "\\uD" not in text:
        return None
    # escaped backslashes go first, as the parser pairs them: JSON \\ud800 is a backslash, then "ud800"
    for escape in _SURROGATE.findall(text.replace("\\\\", "")):
        if len(escape) == 6:
            return escape
    return None


def _int64(text: str) -> int:
    """An integer of a request body: signed or unsigned 64 bits, what orjson writes."""
    value = int(text) if len(text) <= 21 else None
    if value is None or not -2 ** 63 <= value < 2 ** 64:
        shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"
        raise DecodeError(f"integer {shown} is beyond 64 bits, where a request's integers must fit")
    return value


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith(("apikey ", "bearer ")):
        return value.split(" ", 1)[1].strip()
    return None
