"""Helpers every stand-in shares: injected failure modes, a request log, a
threaded HTTP server that can be stopped for real, and starting a simulator as
a subprocess (``python -m simulators.X``) that announces ``listening on <url>``."""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

MODES = ("healthy", "slow", "error", "down")


class ControlError(ValueError):
    """A ``/_control`` request a stand-in cannot follow."""


@dataclasses.dataclass(frozen=True)
class FailureMode:
    """How the stand-in answers its next business request."""

    mode: str = "healthy"
    status: int = 503
    delay_s: float = 0.0
    times: int | None = None          # requests it lasts; None = until changed
    retry_after_s: float | None = None

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "FailureMode":
        if not isinstance(spec, dict):
            raise ControlError("control body must be a JSON object")
        unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ControlError(f"unknown control keys {sorted(unknown)}")
        mode = spec.get("mode", "healthy")
        if mode not in MODES:
            raise ControlError(f"mode must be one of {MODES}, not {mode!r}")
        status = spec.get("status", 503)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ControlError("status must be an HTTP error status (400-599)")
        delay = spec.get("delay_s", 2.0 if mode == "slow" else 0.0)
        times = spec.get("times")
        retry_after = spec.get("retry_after_s")
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ControlError("delay_s must be a number >= 0")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ControlError("times must be null or an integer >= 1")
        if retry_after is not None and (not isinstance(retry_after, (int, float)) or retry_after < 0):
            raise ControlError("retry_after_s must be null or a number >= 0")
        return cls(mode, status, float(delay), times, retry_after)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DROP = "drop"  # an injected failure's answer: close the connection without a word


def injected_failure(mode: FailureMode, log: "RequestLog", path: str, message_id: str | None,
                     refused: Any, failed: Any) -> Any:
    """Apply ``mode`` to a business POST: None to go on (after the delay of ``slow``), else the
    answer, ``DROP`` or ``(status, reply, headers)``.  ``refused()`` counts a refusal;
    ``failed(status)`` builds the FAILED reply."""
    if mode.mode in ("down", "error"):
        refused()
        if mode.mode == "down":
            log.add(method="POST", path=path, message_id=message_id, status=None)
            return DROP
        headers = {"Retry-After": f"{mode.retry_after_s:g}"} if mode.retry_after_s is not None else {}
        log.add(method="POST", path=path, message_id=message_id, status=mode.status)
        return mode.status, failed(mode.status), headers
    if mode.mode == "slow":
        time.sleep(mode.delay_s)
    return None


class Faults:
    """The current failure mode; ``take()`` spends one of its ``times``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mode = FailureMode()
        self._left: int | None = None

    @property
    def current(self) -> FailureMode:
        return self._mode

    def set(self, mode: FailureMode) -> None:
        with self._lock:
            self._mode, self._left = mode, mode.times

    def take(self) -> FailureMode:
        with self._lock:
            mode = self._mode
            if mode.mode != "healthy" and self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._mode, self._left = FailureMode(), None
            return mode


class RequestLog:
    """The last requests a stand-in answered, so tests can count attempts."""

    def __init__(self, size: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def add(self, **summary: Any) -> None:
        summary.setdefault("time", time.time())
        with self._lock:
            self._items.append(summary)

    def last(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
        return items[-limit:] if limit else items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class JsonRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive (clients post over pooled connections), JSON answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "StandInHttpServer"

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(fmt, *args)

    def send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass                          # trailers
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def drop_connection(self) -> None:
        """Answer nothing: the client sees the connection closed (a 'down' system)."""
        self.close_connection = True


class StandInHttpServer(ThreadingHTTPServer):
    """A thread per connection; remembers open connections so stopping drops them."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 app: Any, verbose: bool = False) -> None:
        self.app, self.verbose = app, verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        # Keep-alive connections would outlive the listener: a stopped system drops them.
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BackgroundServer:
    """A stand-in's HTTP server in a background thread: ``.url``, ``.start()``, ``.stop()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], app: Any, host: str = "127.0.0.1",
                 port: int = 0, verbose: bool = False) -> None:
        self.app = app
        self._httpd = StandInHttpServer((host, port), handler, app, verbose)
        self.host, self.port = host, self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "BackgroundServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
        self._httpd.close_open_connections()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_signalled(server: BackgroundServer) -> int:
    """Entry point of ``python -m simulators.X``: announce the URL, run until SIGTERM/SIGINT."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(f"listening on {server.url}", flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


class SimulatorProcess:
    """A simulator started as ``python -m <module> <args>``; ready once it prints its URL.

    The stand-in announces itself with one line ``listening on <url>`` on stdout.
    """

    def __init__(self, module: str, *args: str, timeout_s: float = 15.0,
                 env: dict[str, str] | None = None) -> None:
        self.module = module
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})}, text=True, bufsize=1)
        self.url = self._await_url(timeout_s)

    def _await_url(self, timeout_s: float) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:                  # drain so the child never blocks
                if not found and line.startswith("listening on "):
                    found.append(line.split("listening on ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, name=f"{self.module}-stdout", daemon=True).start()
        if not ready.wait(timeout_s) or not found:
            self.stop()
            raise RuntimeError(f"{self.module} did not report 'listening on' within {timeout_s}s")
        return found[0]

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Terminate the child (SIGTERM, then SIGKILL) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        return self.proc.returncode

    def __enter__(self) -> "SimulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Stand-ins that receive business messages (WFM, FMS) --------------------------------
# The MDMS predates these helpers and keeps its own copy of the same behaviour.

SEVERITIES = ("critical", "major", "minor", "info")   # most severe first, as the canonical model
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_EVENT_TYPE = re.compile(r"\d+\.\d+\.\d+\.\d+")


class MessageRejected(Exception):
    """A message a stand-in refuses (400): the code and reason go into the FAILED Reply."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def most_severe(*levels: str) -> str:
    return min(levels, key=SEVERITIES.index)


def check_instant(value: Any, where: str) -> str:
    """A UTC instant like ``2026-11-01T04:45:02Z`` naming a real calendar time."""
    ok = isinstance(value, str) and _INSTANT.fullmatch(value) is not None
    if ok:
        try:
            datetime.datetime.fromisoformat(value[:-1])
        except ValueError:                   # 30 February, hour 25
            ok = False
    if not ok:
        raise MessageRejected("INVALID_TIMESTAMP", f"{where} must be UTC like 2026-11-01T04:45:02Z, not {value!r}")
    return value


def check_text(value: Any, where: str, code: str = "INVALID_MESSAGE") -> str:
    if not isinstance(value, str) or not value.strip():
        raise MessageRejected(code, f"{where} must be a non-empty string, not {value!r}")
    return value


def check_events(events: Any, where: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Canonical events keyed by (eventType, createdDateTime): the key a repeat shares.

    Only what the key and the owner need is checked (meter, eventType, createdDateTime); the
    other canonical fields are kept as sent.  A repeat inside the list keeps the first copy."""
    if not isinstance(events, list) or not events:
        raise MessageRejected("INVALID_MESSAGE", f"{where} must be a non-empty array of events")
    staged: dict[tuple[str, str], dict[str, Any]] = {}
    for i, ev in enumerate(events):
        at = f"{where}[{i}]"
        if not isinstance(ev, dict):
            raise MessageRejected("INVALID_EVENT", f"{at} must be an object, not {type(ev).__name__}")
        check_text(ev.get("meter"), f"{at}.meter", "INVALID_METER")
        event_type = ev.get("eventType")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise MessageRejected("INVALID_EVENT_TYPE", f"{at}.eventType must be like 3.26.0.85, not {event_type!r}")
        created = check_instant(ev.get("createdDateTime"), f"{at}.createdDateTime")
        staged.setdefault((event_type, created), ev)
    return staged


class MessageStandIn:
    """What a stand-in receiving JSON business messages answers apart from its business:
    failure modes on message POSTs, IEC-style replies, ``/_control``, ``/_reset``,
    ``/_requests``, ``/health`` and the refusal counters of ``/stats``.

    A subclass sets ``noun`` and ``message_paths`` and implements ``accept(doc)`` (check
    everything, then store; return the reply's fields, or raise ``MessageRejected``),
    ``counters()`` and ``clear()``; ``get``/``post`` answer its other routes.
    """

    noun = ""
    message_paths: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = Faults()
        self.requests = RequestLog()
        self._lock = threading.Lock()
        self._refusals = dict.fromkeys(("rejected_posts", "refused_posts"), 0)

    # -- the subclass's business
    def accept(self, doc: Any) -> dict[str, Any]:
        raise NotImplementedError

    def counters(self) -> dict[str, Any]:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
        return None

    def post(self, path: str, body: bytes) -> tuple[int, Any] | None:
        return None

    # -- shared
    def header(self, correlation_id: str | None) -> dict[str, Any]:
        return {"Verb": "reply", "Noun": self.noun, "Timestamp": utc_now(), "Source": self.name,
                "CorrelationID": correlation_id}

    def failed(self, code: str, reason: str, message_id: str | None = None) -> dict[str, Any]:
        return {"Header": self.header(message_id),
                "Reply": {"Result": "FAILED", "Error": [{"code": code, "level": "FATAL", "reason": reason}]}}

    def _bump(self, counter: str) -> None:
        with self._lock:
            self._refusals[counter] += 1

    def post_message(self, path: str, body: bytes) -> tuple[int, dict, dict] | None:
        """(status, reply, extra headers); None means: drop the connection, answer nothing."""
        mode = self.faults.take()
        message_id = None
        try:
            doc = orjson.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("Header"), dict):
                message_id = doc["Header"].get("MessageID")
        except ValueError as exc:
            doc, bad_json = None, exc
        else:
            bad_json = None
        injected = injected_failure(mode, self.requests, path, message_id, lambda: self._bump("refused_posts"),
                                    lambda status: self.failed(str(status), f"injected {status}", message_id))
        if injected is not None:
            return None if injected == DROP else injected
        try:
            if bad_json is not None:
                raise MessageRejected("MALFORMED_JSON", f"body is not JSON: {bad_json}")
            try:
                fields = self.accept(doc)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise MessageRejected("INVALID_MESSAGE", f"{type(exc).__name__}: {exc}") from exc
        except MessageRejected as exc:
            self._bump("rejected_posts")
            self.requests.add(method="POST", path=path, message_id=message_id, status=400, error=exc.code)
            return 400, self.failed(exc.code, exc.reason, message_id), {}
        self.requests.add(method="POST", path=path, message_id=message_id, status=200,
                          **{k: v for k, v in fields.items() if isinstance(v, int)})
        return 200, {"Header": self.header(message_id), "Reply": {"Result": "OK"}, **fields}, {}

    def control(self, body: bytes) -> tuple[int, dict]:
        try:
            mode = FailureMode.from_dict(json.loads(body or b"{}"))
        except (ValueError, ControlError) as exc:
            return 400, self.failed("BAD_CONTROL", str(exc))
        self.faults.set(mode)
        return 200, {"mode": mode.to_dict()}

    def reset(self) -> tuple[int, dict]:
        self.clear()
        with self._lock:
            self._refusals = dict.fromkeys(self._refusals, 0)
        self.requests.clear()
        return 200, {"reset": True}

    def health(self) -> tuple[int, dict]:
        mode = self.faults.current.mode
        up = mode in ("healthy", "slow")
        return (200 if up else 503), {"status": "ok" if up else "unavailable", "mode": mode, "name": self.name}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            refusals = dict(self._refusals)
        return {**self.counters(), **refusals, "mode": self.faults.current.mode, "name": self.name}


class MessageStandInHandler(JsonRequestHandler):
    """Routes the shared endpoints of a ``MessageStandIn``; the rest goes to its get/post."""

    server_version = "gridbus-standin/1.0"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        app: MessageStandIn = self.server.app
        if url.path == "/stats":
            self.send_json(200, app.stats())
        elif url.path == "/health":
            self.send_json(*app.health())
        elif url.path == "/_requests":
            limit = query.get("limit", ["0"])[0] or "0"
            if not limit.isdigit():
                self.send_json(400, app.failed("BAD_QUERY", f"limit must be a whole number, not {limit!r}"))
            else:
                self.send_json(200, {"requests": app.requests.last(int(limit))})
        else:
            answer = app.get(url.path, query)
            self.send_json(*(answer or (404, app.failed("NOT_FOUND", f"no GET {url.path}"))))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.read_body()
        app: MessageStandIn = self.server.app
        if path in app.message_paths:
            answer = app.post_message(path, body)
            if answer is None:
                self.drop_connection()
            else:
                self.send_json(*answer)
        elif path == "/_control":
            self.send_json(*app.control(body))
        elif path == "/_reset":
            self.send_json(*app.reset())
        else:
            answer = app.post(path, body)
            self.send_json(*(answer or (404, app.failed("NOT_FOUND", f"no POST {path}"))))


def standin_main(server_factory: Any, prog: str, description: str, default_name: str,
                 argv: list[str] | None = None) -> int:
    """``python -m simulators.X [--port] [--host] [--name] [--verbose]`` for a stand-in whose
    server takes ``(host, port, name, verbose)``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default=default_name, help="answered in /health, /stats and reply headers")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = p.parse_args(argv)
    return serve_until_signalled(server_factory(a.host, a.port, a.name, a.verbose))
