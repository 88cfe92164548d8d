"""`gridbus bench fairness`: one system floods the gateway, another pushes at its normal rate.

One invocation, one gateway, a throw-away virtual host:

1. **alone**: HES-B pushes alarm batches at its normal rate for ``seconds``; its latencies.
2. **flood**: the same, while HES-A pushes at ``flood_factor`` times its rate limit from as
   many connections as it likes; HES-B's latencies again, and what HES-A was answered.

The figure is HES-B's p99 under the flood beside its p99 alone (target: within 2x).  Each
system's pusher is a process of its own (``fairness_client``), so neither client's CPU is
the other's latency.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from bus.broker_admin import BrokerAdmin
from bus.settings import Settings
from gridbus_dev.bench.ingest import _vhost_url
from gridbus_dev.bench.procs import free_port, spawn, terminate, wait_http

FLOODER, STEADY = "hes-a", "hes-b"


@dataclass
class Phase:
    name: str
    steady: dict            # HES-B's client summary
    flood: dict | None      # HES-A's, during the flood

    def percentile(self, q: float) -> float | None:
        lat = self.steady["latencies_ms"]
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


def _routes(path: Path) -> None:
    path.write_text(textwrap.dedent("""\
        use_case: 2
        routes:
        """) + "".join(textwrap.indent(textwrap.dedent(f"""\
          - id: bench-{system}-alarms
            source: {{system: {system}, connector: http-push, path: {system}/alarms}}
            method: pub-sub
            message: {{noun: EndDeviceEvents}}
            transform: [hes_alarm_json]
            destinations: [{{system: events, connector: events}}]
        """), "  ") for system in (FLOODER, STEADY)))


def _client(url: str, key: str, rate: float, seconds: float, env: dict, connections: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gridbus_dev.bench.fairness_client", url, key, str(rate),
                             str(seconds), "--connections", str(connections)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout_s: float) -> dict:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode:
        raise RuntimeError(f"a pusher failed: {err[-1500:]}")
    return json.loads(out)


def bench_fairness(work: Path, rate_per_system: float, steady_rate: float, flood_factor: float, seconds: float,
                   in_flight_per_system: int, echo=print, rounds: int = 1) -> list[Phase]:
    """``rounds`` pairs of phases, alone then flood, on one gateway: a p99 of a few hundred pushes
    moves with the machine's noise, so a pair's ratio is read beside the others'."""
    settings = Settings.load()
    admin = BrokerAdmin(settings.management_url)
    vhost = f"gridbus-bench-fairness-{os.getpid()}"
    admin.create_vhost(vhost)
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDBUS_BROKER_URL": _vhost_url(settings.broker_url, vhost), "GRIDBUS_HOME": str(home),
           "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_ROUTES": str(work / "routes.yaml")}
    gateway = None
    phases: list[Phase] = []
    try:
        _routes(work / "routes.yaml")
        keys = {s: subprocess.run(_gridbus("gateway", "keys", "add", s), env=env, check=True, capture_output=True,
                                  text=True).stdout.strip() for s in (FLOODER, STEADY)}
        port = free_port()
        gateway = spawn(_gridbus("gateway", "--port", str(port), "--rate-per-system", str(rate_per_system),
                                 "--in-flight-per-system", str(in_flight_per_system), "--loglevel", "WARNING"),
                        env, work / "gateway.log")
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", 60)
        warm = _client(f"{base}/v1/push/{STEADY}/alarms", keys[STEADY], steady_rate, 2, env, 8)
        _result(warm, 60)  # the gateway's first publishes open its channels: not part of either figure
        for n in range(1, rounds + 1):
            echo(f"round {n}, alone: {STEADY} pushes {steady_rate:g}/s for {seconds:g} s ...")
            steady = _client(f"{base}/v1/push/{STEADY}/alarms", keys[STEADY], steady_rate, seconds, env, 8)
            phases.append(Phase(f"alone {n}", _result(steady, seconds + 120), None))
            flood_rate = flood_factor * rate_per_system
            echo(f"round {n}, flood: {FLOODER} pushes {flood_rate:g}/s ({flood_factor:g}x its rate) while "
                 f"{STEADY} pushes {steady_rate:g}/s, {seconds:g} s ...")
            flood = _client(f"{base}/v1/push/{FLOODER}/alarms", keys[FLOODER], flood_rate, seconds + 2, env, 256)
            time.sleep(1.0)  # the flood is under way before HES-B's first push
            steady = _client(f"{base}/v1/push/{STEADY}/alarms", keys[STEADY], steady_rate, seconds, env, 8)
            phases.append(Phase(f"flood {n}", _result(steady, seconds + 120), _result(flood, seconds + 120)))
            time.sleep(2.0)  # the flood's tail and the token bucket settle before the next alone phase
    finally:
        terminate(gateway)
        admin.delete_vhost(vhost)
    return phases
