"""The gateway's HTTP server: aiohttp, one event loop.

    /v1/requests/...   on the loop: a waiting request costs a future (request_loop)
    everything else    the WSGI application (app.Gateway: pushes, docs, health) on a
                       pool of threads, as under waitress before

Why aiohttp rather than waitress: a billing request waits for its reply, and
under waitress each wait held one of 48 threads; at 200 requests/s on two
cores the threads queued for the GIL and every stage of a round trip slowed
down together (docs/benchmarks.md, "bench rpc").  aiohttp parses HTTP in C and waits on
one loop.  Pushes need no waiting and keep their tested WSGI code.

Headers a proxy would set (``Forwarded``, ``X-Forwarded-*``) are not passed on:
no proxy is trusted, as with waitress's ``clear_untrusted_proxy_headers``.
"""
from __future__ import annotations

import asyncio
import io
import logging
import signal
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bus import aio
from bus.errors import ConfigError
from bus.operators import asserted_user
from bus.state_store import StateStoreError
from connectors.http_push.app import CALLER, STORE_AWAY, Gateway, Refusal, count_refusal, reply
from connectors.http_push.fairness import InFlight, ServerLimits
from connectors.http_push.request_loop import RequestLoop
from connectors.http_push.store_thread import NotCommitted

log = logging.getLogger("gridbus.gateway")
_UNTRUSTED = {"FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-HOST", "X-FORWARDED-PROTO", "X-FORWARDED-PORT",
              "X-FORWARDED-BY"}


def environ_of(request: web.Request, body: bytes) -> dict:
    """The WSGI environ of an aiohttp request whose body has been read."""
    environ = {
        "REQUEST_METHOD": request.method, "PATH_INFO": request.path, "QUERY_STRING": request.query_string,
        "SCRIPT_NAME": "", "SERVER_NAME": request.url.host or "localhost", "SERVER_PORT": str(request.url.port or 80),
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "REMOTE_ADDR": request.remote or "", "wsgi.version": (1, 0), "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        upper = name.upper()
        if upper in _UNTRUSTED:
            continue
        if upper == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
        elif upper == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + upper.replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def call_wsgi(app, environ: dict) -> tuple[int, list, bytes]:
    started: dict = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, headers

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    headers = [(k, v) for k, v in started["headers"] if k.lower() != "content-length"]
    return int(started["status"].split(" ", 1)[0]), headers, data


class MalformedHttpInOneLine(logging.Filter):
    """aiohttp answers a request it cannot parse (a header with a control character, a bad
    request line) with a plain 400 before any handler runs (no hook: aio-libs/aiohttp#3287),
    and logs it at ERROR with a traceback.  That is the caller's mistake, not ours: one
    WARNING line saying what was wrong, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 500) < 500:
            what = " ".join(str(exc.message).split())[:300]  # aiohttp's message spans lines
            record.msg, record.args = "malformed HTTP request refused with %s: %s", (exc.code, what)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _json(status: int, body: dict, headers: list | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
                        headers={"Content-Type": "application/json", **dict(headers or [])})


def _body_too_slow(deadline_s: float) -> web.Response:
    return _json(408, reply("FAILED", errors=[("BODY_TOO_SLOW", f"the body did not arrive within {deadline_s:g} s")]),
                 [("Connection", "close")])


def _store_away() -> web.Response:
    code, reason, headers = STORE_AWAY
    return _json(503, reply("FAILED", errors=[(code, reason)]), headers)


class GatewayServer:
    def __init__(self, gateway: Gateway, requests: RequestLoop | None, threads: int, max_body: int, network=None,
                 limits: ServerLimits = ServerLimits()):
        self.gateway, self.requests, self.max_body = gateway, requests, max_body
        self.network = network  # gis_push.NetworkPush: GIS change documents, applied before the answer
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="gateway")
        self.limits = limits
        self.in_flight = InFlight(limits.in_flight_per_system)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body:
            # never read: the same refusal the WSGI application gives a body over its route's limit
            return _json(413, reply("FAILED", errors=[("TOO_LARGE", f"{request.content_length} bytes; the "
                                                       f"largest this gateway takes is {self.max_body}")]))
        if self.network is not None and self.network.serves(request.path):
            return await self.network.handle(request)  # reads the body itself, once the caller is known
        if request.method == "POST" and request.path.startswith("/v1/push/"):
            return await self._push(request)
        return await self._other(request)

    async def _push(self, request: web.Request) -> web.Response:
        """A push: the caller, its rate and its share checked from the headers alone (fairness.py),
        then its body read within the deadline, then the WSGI application on a thread."""
        try:
            system = await self._caller(environ_of(request, b""))
        except Refusal as refused:
            status, code, reason, *extra = refused.args
            return _json(status, reply("FAILED", errors=[(code, reason)]), extra[0] if extra else None)
        if not self.in_flight.enter(system):
            count_refusal("?", system, 429, "TOO_MANY_IN_FLIGHT")
            return _json(429, reply("FAILED", errors=[(
                "TOO_MANY_IN_FLIGHT", f"{system} already has {self.limits.in_flight_per_system} pushes being "
                                      f"taken; wait for their answers")]), [("Retry-After", "1")])
        try:
            body = await self._body(request)
            if body is None:
                return _body_too_slow(self.limits.body_timeout_s)
            environ = environ_of(request, body)
            environ[CALLER] = system  # authenticated and counted against its rate above
            status, headers, data = await asyncio.get_running_loop().run_in_executor(
                self.executor, call_wsgi, self.gateway, environ)
            return web.Response(status=status, body=data, headers=headers)
        finally:
            self.in_flight.leave(system)

    async def _body(self, request: web.Request) -> bytes | None:
        """The body, or None if it did not arrive within the deadline."""
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await request.read()
        except TimeoutError:
            return None

    async def _other(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body is None:
            return _body_too_slow(self.limits.body_timeout_s)
        environ = environ_of(request, body)
        path = request.path
        if self.requests is not None and path.startswith(("/v1/requests/", "/requests/")):
            return await self._request(environ, request.method, path.split("/requests/", 1)[1].strip("/"))
        if self.requests is not None and path in ("/v1/requests", "/requests") and request.method == "GET":
            return await self._find(environ, dict(request.query))
        status, headers, data = await asyncio.get_running_loop().run_in_executor(
            self.executor, call_wsgi, self.gateway, environ)
        return web.Response(status=status, body=data, headers=headers)

    async def _caller(self, environ: dict) -> str:
        """``Gateway.caller``: on the loop for keys in a local SQLite file (microseconds), off it
        for a shared PostgreSQL (a round trip; while the server is away, up to its wait)."""
        if not getattr(self.gateway.keys, "shared", False):
            return self.gateway.caller(environ)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.gateway.caller, environ)

    async def _request(self, environ: dict, method: str, rest: str) -> web.Response:
        try:
            return await self._request_stored(environ, method, rest)
        except (StateStoreError, NotCommitted) as exc:
            # the request store cannot be read or written: a request not committed was not sent
            log.error("request not taken: %s", exc)
            return _store_away()

    async def _request_stored(self, environ: dict, method: str, rest: str) -> web.Response:
        try:
            system = await self._caller(environ)
            if method == "GET":
                answer = await self.requests.stored(self.requests.api.get, rest, system)
                return _json(answer.status, answer.body, answer.headers)
            if method != "POST":
                raise Refusal(405, "METHOD_NOT_ALLOWED", "POST a request, GET its id", [("Allow", "GET, POST")])
            route = self.gateway.request_routes.get(rest)
            if route is None:
                raise Refusal(404, "UNKNOWN_ROUTE", f"no route takes requests at {rest!r}")
            document = self.gateway.body_of(environ, route, "json")
            try:
                user = asserted_user(environ.get("HTTP_X_USER"))
            except ConfigError as exc:
                raise Refusal(400, "INVALID_USER", str(exc)) from exc
        except Refusal as refused:
            status, code, reason, *extra = refused.args
            return _json(status, reply("FAILED", errors=[(code, reason)]), extra[0] if extra else None)
        answer = await self.requests.post(route, system, user, document,
                                          environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_X_CORRELATION_ID"))
        return _json(answer.status, answer.body, answer.headers)

    async def _find(self, environ: dict, query: dict) -> web.Response:
        """``GET /v1/requests?messageId=…|commandId=…``: the caller's requests with that id."""
        try:
            system = await self._caller(environ)
        except Refusal as refused:
            status, code, reason, *extra = refused.args
            return _json(status, reply("FAILED", errors=[(code, reason)]), extra[0] if extra else None)
        try:
            answer = await self.requests.stored(self.requests.api.find, system, query)
        except (StateStoreError, NotCommitted) as exc:
            log.error("requests not looked up: %s", exc)
            return _store_away()
        return _json(answer.status, answer.body, answer.headers)

    async def run(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        if self.requests is not None:
            await self.requests.start()
        logging.getLogger("aiohttp.server").addFilter(MalformedHttpInOneLine())
        app = web.Application(client_max_size=self.max_body)
        # every path, a decoded newline in it too (".*" stops at one, and aiohttp's own 404 is not JSON)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        # on SIGTERM, requests still waiting get 5 s to be answered; their replies are kept anyway
        # keepalive_timeout also bounds how long a new connection may take to send its request line
        # and headers (aiohttp arms it when the connection opens and closes it if no request came
        # whole): the header deadline of fairness.py; tests/integration/test_gateway_fairness.py
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5,
                               keepalive_timeout=self.limits.header_timeout_s)
        await runner.setup()
        if ssl_context is None:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        else:
            await TlsSite(runner, host, port, ssl_context=ssl_context, reuse_address=True,
                          handshake_timeout_s=self.limits.header_timeout_s).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            if self.requests is not None:
                await self.requests.close()
            if self.network is not None:
                await asyncio.to_thread(self.network.close)
            self.executor.shutdown(wait=False)


class TlsSite(web.TCPSite):
    """``web.TCPSite`` with a deadline on the TLS handshake (aiohttp has no option for it).

    asyncio runs each handshake on the loop without blocking it, so a client that opens a
    connection and never sends its ClientHello holds no one up; but the protocol, and with it the
    header deadline, only starts once the handshake is done, and asyncio's own default waits 60 s.
    The header deadline bounds both: tests/integration/test_https.py."""

    def __init__(self, *args, handshake_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        # what TCPSite.start does (aiohttp 3.x), with ssl_handshake_timeout
        self._runner._reg_site(self)
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout_s)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def serve(gateway: Gateway, requests: RequestLoop | None, host: str, port: int, threads: int,
          max_body: int, network=None, limits: ServerLimits = ServerLimits(),
          ssl_context: ssl.SSLContext | None = None) -> None:
    """``ssl_context``: serve HTTPS with it (bus.tls.server_context); None: plain HTTP."""
    aio.run(GatewayServer(gateway, requests, threads, max_body, network, limits).run(host, port, ssl_context))
