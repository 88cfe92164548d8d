"""Helpers every stand-in shares: injected failure modes, a request log, a
threaded HTTP server that can be stopped for real, and starting a simulator as
a subprocess (``python -m simulators.X``) that announces ``listening on <url>``."""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
