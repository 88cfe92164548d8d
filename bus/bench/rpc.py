"""`gridbus bench rpc`: on-demand read round trips through gateway and bus, beside direct HTTP.

Billing-1 asks for an on-demand read of one meter at a fixed rate (open loop:
each request starts on its own schedule, whether or not the previous one has
answered, so a slow answer shows as latency, not as a lower rate).  The path is
the shipped one: gateway → route → MDMS-1 stand-in → gateway → route → HES
stand-in (answering at once) and back.  The baseline, in the same run, calls
the HES stand-in directly over HTTP at the same rate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bus.bench.ingest import _vhost_url, _wait_consumers
from bus.bench.procs import free_port, spawn, terminate, wait_http
from bus.broker_admin import BrokerAdmin
from bus.settings import Settings

ROUTES_FILE = Path(__file__).resolve().parents[2] / "routes" / "uc6-7-8-requests.yaml"
METERS = [f"UPM{n:08d}" for n in range(1, 1001)]


@dataclass
class RpcRun:
    pipeline: str
    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]

    @property
    def achieved_rate(self) -> float:
        return (len(self.latencies_ms) + self.errors) / self.seconds


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


def _open_loop(send, rate: float, seconds: float, threads: int = 64) -> RpcRun:
    run = RpcRun("", rate, seconds)
    lock = threading.Lock()
    local = threading.local()

    def one(n: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        try:
            ok, detail = send(session, n)
        except requests.RequestException as exc:
            ok, detail = False, f"{exc.__class__.__name__}"
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            if ok:
                run.latencies_ms.append(elapsed)
            else:
                run.errors += 1
                if len(run.error_examples) < 5:
                    run.error_examples.append(detail[:200])

    total = int(rate * seconds)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, n)
    run.seconds = time.perf_counter() - start
    return run


def _read_request(meter: str) -> bytes:
    return json.dumps({"Header": {"Verb": "get", "Noun": "MeterReadings"},
                       "Request": {"meters": [meter]}}).encode()


def bench_rpc(rate: float, seconds: float, work: Path, baseline: bool, echo=print) -> list[RpcRun]:
    settings = Settings.load()
    admin = BrokerAdmin(settings.management_url)
    vhost = f"gridbus-bench-rpc-{os.getpid()}"
    admin.create_vhost(vhost)
    url = _vhost_url(settings.broker_url, vhost)
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    assignment = work / "assignment.csv"
    assignment.write_text("meter,hes\n" + "".join(f"{m},{'hes-a' if i % 2 else 'hes-b'}\n"
                                                  for i, m in enumerate(METERS)))
    ports = {name: free_port() for name in ("hes-a", "hes-b", "mdms-1", "gateway")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {**os.environ, "GRIDBUS_BROKER_URL": url, "GRIDBUS_HOME": str(home),
           "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_ROUTES": str(ROUTES_FILE),
           "MDMS_1_URL": urls["mdms-1"], "HES_A_URL": urls["hes-a"], "HES_B_URL": urls["hes-b"],
           "GRIDBUS_METER_ASSIGNMENT": str(assignment)}
    procs = []
    runs = []
    try:
        keys = {s: subprocess.run(_gridbus("gateway", "keys", "add", s), env=env, check=True, capture_output=True,
                                  text=True).stdout.strip() for s in ("billing-1", "mdms-1")}
        for name in ("hes-a", "hes-b"):
            procs.append(spawn([sys.executable, "-m", "simulators.hes", "--port", str(ports[name]), "--name", name],
                               env, work / f"{name}.log"))
        procs.append(spawn([sys.executable, "-m", "simulators.mdms", "--port", str(ports["mdms-1"]), "--name",
                            "mdms-1", "--bus-url", f"{urls['gateway']}/v1/requests/mdms-1",
                            "--bus-key", keys["mdms-1"]], env, work / "mdms-1.log"))
        procs.append(spawn(_gridbus("worker", "--pool", "threads", "-c", "32", "--loglevel", "WARNING"), env,
                           work / "worker.log"))
        procs.append(spawn(_gridbus("recorder", "--loglevel", "WARNING"), env, work / "recorder.log"))
        procs.append(spawn(_gridbus("gateway", "--port", str(ports["gateway"]), "--threads", "32",
                                    "--rate-per-system", "0", "--loglevel", "WARNING"), env, work / "gateway.log"))
        for u in urls.values():
            wait_http(f"{u}/health", 60)
        admin_v = BrokerAdmin(settings.management_url, vhost)
        for route in ("billing-1-reads", "mdms-1-reads-to-hes"):
            _wait_consumers(admin_v, f"gridbus.route.{route}", 60)
        gateway = f"{urls['gateway']}/v1/requests/billing-1/meter-readings"
        headers = {"X-API-Key": keys["billing-1"], "Content-Type": "application/json"}

        def via_bus(session, n):
            answer = session.post(gateway, data=_read_request(METERS[n % len(METERS)]), headers=headers, timeout=10)
            ok = answer.status_code == 200 and answer.json()["Reply"]["Result"] == "OK"
            return ok, f"{answer.status_code} {answer.text[:150]}"

        for n in range(20):  # warm-up: connections, imports, the first SQLite pages
            via_bus(requests.Session(), n)
        echo(f"gridbus: {rate:g} on-demand reads/s for {seconds:g}s ...")
        run = _open_loop(via_bus, rate, seconds)
        run.pipeline = "gridbus (gateway → bus → MDMS → bus → HES)"
        runs.append(run)
        if baseline:
            direct = {"hes-a": f"{urls['hes-a']}/requests/meter-readings",
                      "hes-b": f"{urls['hes-b']}/requests/meter-readings"}

            def via_http(session, n):
                meter = METERS[n % len(METERS)]
                answer = session.post(direct["hes-a" if n % 2 else "hes-b"], data=_read_request(meter),
                                      headers={"Content-Type": "application/json"}, timeout=10)
                ok = answer.status_code == 200 and answer.json()["Reply"]["Result"] == "OK"
                return ok, f"{answer.status_code} {answer.text[:150]}"

            echo(f"baseline: {rate:g} direct HTTP reads/s to the HES stand-in for {seconds:g}s ...")
            run = _open_loop(via_http, rate, seconds)
            run.pipeline = "baseline (direct HTTP to the HES)"
            runs.append(run)
    finally:
        for p in reversed(procs):
            terminate(p)
        admin.delete_vhost(vhost)
    return runs

