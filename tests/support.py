"""Real processes for flow tests: gridbus worker/ingress and stand-in systems, on loopback."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2):
    """Poll until ``condition()`` is truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class Proc:
    """A child process with its own log file; killable with SIGKILL like a crash."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        return self

    def kill9(self) -> None:
        """Crash: SIGKILL the whole process group (a Celery worker and its pool children)."""
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def serving(url: str, **tls) -> bool:
    """``url`` answers 200 now (a server still starting refuses the connection); ``tls``:
    requests' ``verify``/``cert`` for an https one."""
    try:
        return requests.get(url, timeout=1, **tls).status_code == 200
    except requests.RequestException:
        return False


def gridbus(*args: str) -> list[str]:
    """The command line of a gridbus process: this checkout's code, or with $GRIDBUS_BIN an
    installed ``gridbus`` (CI runs a flow from the built wheel that way: .ci/wheel-check)."""
    installed = os.environ.get("GRIDBUS_BIN")
    return [installed, *args] if installed else [sys.executable, "-m", "bus.cli.main", *args]


class Mdms:
    """A stand-in (the MDMS unless ``module`` names another) as a real HTTP server process."""

    def __init__(self, env: dict, log_dir: Path, name: str = "mdms-1", module: str = "simulators.mdms",
                 args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(name, [sys.executable, "-m", module, "--port", str(self.port),
                                "--name", name, *args], env, log_dir).start()
        wait_for(self._healthy, 20, f"{name} stand-in to listen")

    def _healthy(self) -> bool:
        return serving(f"{self.url}/health")

    def stats(self) -> dict:
        return requests.get(f"{self.url}/stats", timeout=5).json()

    def control(self, **mode) -> None:
        requests.post(f"{self.url}/_control", json=mode, timeout=5).raise_for_status()

    def stop(self) -> None:
        self.proc.stop()


def run_cli(env: dict, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(gridbus(*args), env=env, cwd=ROOT, capture_output=True, text=True,
                          input=input, timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# the addresses the shipped routes name, for tests that load them without a running stack
ROUTE_ENV = {"GRIDBUS_INBOX": "/tmp/inbox", "MDMS_1_URL": "http://127.0.0.1:9", "GRIDBUS_OUTBOX": "/tmp/out",
             "WFM_URL": "http://127.0.0.1:9", "FMS_URL": "http://127.0.0.1:9", "ADMS_URL": "http://127.0.0.1:9",
             "HES_A_URL": "http://127.0.0.1:9", "HES_B_URL": "http://127.0.0.1:9",
             "BILLING_1_URL": "http://127.0.0.1:9", "BILLING_2_URL": "http://127.0.0.1:9",
             "GRIDBUS_METER_ASSIGNMENT": "/tmp/meter-assignment.csv"}


def start_gateway(env: dict, log_dir: Path, *args: str, timeout_s: float = 30, tls: dict | None = None,
                  name: str = "gateway") -> tuple[Proc, str]:
    """A real ``gridbus gateway`` on a free loopback port, once it answers /health: (process, url).
    ``tls``: it serves HTTPS (``--tls-*`` among ``args``), checked with these requests arguments
    (``verify``, ``cert``)."""
    port = free_port()
    server = Proc(name, gridbus("gateway", "--port", str(port), *args), env, log_dir).start()
    url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}"
    wait_for(lambda: serving(f"{url}/health", **(tls or {})), timeout_s, f"the gateway (log: {server.log()[-1500:]})")
    return server, url


class HttpsStandIn:
    """A destination serving HTTPS on 127.0.0.1 in this process, with the certificate it is given
    (a ``trustme`` leaf): records what is POSTed, answers 200, and an IEC reply (Result OK) to a
    POST under ``/requests/``, as the MDMS does.  ``client_ca``: a ``trustme`` CA whose client
    certificate it requires (mutual TLS)."""

    def __init__(self, leaf, client_ca=None):
        import http.server
        import ssl
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(200, {"ok": True})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, body))
                reply = ({"Header": {"Verb": "reply"}, "Reply": {"Result": "OK"}, "Payload": {"answered": True}}
                         if "/requests/" in self.path else {"ok": True})
                self._answer(200, reply)

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="https-stand-in").start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def env_of_its_own(rabbitmq_proc, management_url: str, tmp: Path, prefix: str = "out") -> tuple[dict, str]:
    """A bus environment (vhost, home) for a stack shared by the tests of a module, as the
    ``bus_env`` fixture makes one per test; returns (env, vhost)."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    auth = ("guest", "guest")
    requests.put(f"{management_url}/api/vhosts/{name}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{management_url}/api/permissions/{name}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    (tmp / "home").mkdir()
    return {**os.environ, "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/{name}",
            "GRIDBUS_MANAGEMENT_URL": management_url.replace("http://", "http://guest:guest@"),
            "GRIDBUS_HOME": str(tmp / "home"), "GRIDBUS_ENV_FILE": str(tmp / "home" / "none.env"),
            "PYTHONUNBUFFERED": "1"}, name


def drop_vhost(management_url: str, name: str) -> None:
    requests.delete(f"{management_url}/api/vhosts/{name}", auth=("guest", "guest"), timeout=30)
