"""`gridbus bench alarms`: a feeder-trip burst from the HES to every subscriber, beside plain pika.

One invocation, one RabbitMQ node, throw-away virtual hosts:

* **gridbus**: the HES sends the burst to the gateway (``--via rest``: JSON
  arrays of ``--batch`` alarms) or publishes each alarm on the AMQP ingress
  (``--via amqp``, as its own broker user); the route decodes them into
  canonical events and publishes them once; four subscriber routes deliver to
  four real HTTP stand-ins (MDMS-1 critical, WFM health, FMS fraud, ADMS
  outage).  The clock runs from the first alarm sent to the last one stored by
  the last subscriber that should have it.
* **baseline**: the same alarms, each published by plain pika on a topic
  exchange with its classes as the key, one quorum queue per subscriber, one
  plain pika consumer each that only counts and acks: the broker's floor.

The burst is a feeder trip (last gasps, classes outage + critical) with a
share of health and fraud alarms, from ``simulators.hes_alarms`` on a
feeder → DT → meter network.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from bus.messaging.connect import connect
from gridbus_dev.bench.ingest import _vhost_url, _wait_consumers
from gridbus_dev.bench.procs import free_port, spawn, terminate, wait_http
from bus.broker_admin import BrokerAdmin
from bus.settings import Settings

# subscriber → (class it takes, stand-in module, path it is posted to, stats counter of distinct events)
SUBSCRIBERS = {
    "mdms-1": ("critical", "simulators.mdms", "/messages", "events"),
    "wfm": ("health", "simulators.wfm", "/work-items", "events"),
    "fms": ("fraud", "simulators.fms", "/cases", "evidence"),
    "adms": ("outage", "simulators.adms", "/messages", "events"),
}
ENCODER = {"mdms-1": "to_mdms_json", "wfm": "to_wfm_work_items", "fms": "to_fms_cases", "adms": "to_mdms_json"}
HES = "hes-a"


@dataclass
class AlarmRun:
    pipeline: str
    alarms: int
    seconds: float
    per_subscriber_s: dict[str, float] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    sent_s: float | None = None  # when the HES had sent its last alarm

    @property
    def alarms_per_s(self) -> float:
        return self.alarms / self.seconds


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


def generate(work: Path, count: int, side_share: float) -> tuple[Path, dict[str, int], dict]:
    """The burst file, the events each class gets, and code → classes (for the baseline keys)."""
    side = int(count * side_share)
    trip, extra = work / "trip.json", work / "side.json"
    feeders = max(1, -(-(count - side) // 5000))
    common = ["--feeders", str(feeders), "--dts", "20", "--meters", "250", "--hes", HES]
    done = [subprocess.run([sys.executable, "-m", "simulators.hes_alarms", *argv], capture_output=True,
                           text=True, check=False)
            for argv in (["burst", "--count", str(count - side), "--out", str(trip), *common],
                         ["mixed", "--count", str(side), "--mix", "health=1,fraud=1", "--window-s", "5",
                          "--seed", "11", "--out", str(extra), *common])]
    for d in done:
        if d.returncode:
            raise RuntimeError(f"alarm generator failed: {d.stderr[-2000:]}")
    summaries = [json.loads(d.stdout) for d in done]
    alarms = json.loads(trip.read_text()) + json.loads(extra.read_text())
    # a trip with health and fraud alarms among it, as they would arrive
    alarms.sort(key=lambda a: a["received_at"])
    burst = work / "burst.json"
    burst.write_text(json.dumps(alarms, separators=(",", ":")))
    code_classes: dict[str, list[str]] = {}
    for s in summaries:
        code_classes.update(s["code_classes"])
    per_class = {c: sum(1 for a in alarms if c in code_classes[str(a["code"])])
                 for c in ("critical", "health", "fraud", "outage")}
    (work / "code-classes.json").write_text(json.dumps(code_classes))
    return burst, per_class, code_classes


def _routes(path: Path, via: str, urls: dict[str, str]) -> None:
    if via == "rest":
        source = {"system": HES, "connector": "http-push", "path": f"{HES}/alarms", "max_body_kb": 65536}
    else:
        source = {"system": HES, "connector": "amqp-in", "routing_key": f"{HES}.alarms",
                  "batch_max": 2000, "batch_window_ms": 100}
    routes = [{"id": "bench-alarms", "method": "pub-sub", "source": source, "message": {"noun": "EndDeviceEvents"},
               "transform": ["hes_alarm_json"], "destinations": [{"system": "events", "connector": "events"}]}]
    for system, (cls, _module, url_path, _counter) in SUBSCRIBERS.items():
        routes.append({"id": f"bench-{cls}-to-{system}", "method": "pub-sub",
                       "source": {"system": system, "connector": "subscription",
                                  "topic": "EndDeviceEvents.created.*", "classes": [cls]},
                       "transform": [ENCODER[system]],
                       "destinations": [{"system": system, "connector": "rest", "url": urls[system] + url_path}],
                       "retry": {"attempts": 10, "first_delay_s": 1, "max_delay_s": 10}})
    path.write_text(json.dumps({"use_case": 4, "routes": routes}))


def _as_user(url: str, user: str, password: str) -> str:
    """The broker URL with the HES's own credentials (it publishes as its broker user)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def _delivered(urls: dict[str, str]) -> dict[str, int]:
    return {s: requests.get(f"{urls[s]}/stats", timeout=10).json()[SUBSCRIBERS[s][3]] for s in urls}


def _wait_all(urls: dict[str, str], expected: dict[str, int], started: float, timeout_s: float,
               progress) -> dict[str, float]:
    """Seconds from ``started`` until each subscriber held all its events."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = _delivered({s: u for s, u in urls.items() if s not in done})
        now = time.perf_counter()
        for s, n in got.items():
            if n >= expected[s]:
                done[s] = now - started
        if len(done) == len(urls):
            return done
        if progress:
            progress({s: (got.get(s, expected[s]), expected[s]) for s in urls})
        time.sleep(0.05)
    raise RuntimeError(f"not every subscriber got its events within {timeout_s:.0f}s: "
                       f"{_delivered(urls)} of {expected}")


def bench_alarms(count: int, via: str, work: Path, baseline: bool, concurrency: int = 2, batch: int = 1000,
                 side_share: float = 0.04, echo=print, progress=None, per_message: int = 1) -> list[AlarmRun]:
    settings = Settings.load()
    admin = BrokerAdmin(settings.management_url)
    vhost = f"gridbus-bench-alarms-{os.getpid()}"
    admin.create_vhost(vhost)
    url = _vhost_url(settings.broker_url, vhost)
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDBUS_BROKER_URL": url, "GRIDBUS_HOME": str(home),
           "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_ROUTES": str(work / "routes.yaml")}
    procs: list = []
    runs: list[AlarmRun] = []
    try:
        urls = {}
        for system, (_cls, module, _path, _counter) in SUBSCRIBERS.items():
            port = free_port()
            procs.append(spawn([sys.executable, "-m", module, "--port", str(port), "--name", system],
                               env, work / f"{system}.log"))
            urls[system] = f"http://127.0.0.1:{port}"
        for u in urls.values():
            wait_http(f"{u}/health")
        echo(f"generating a {count:,}-alarm feeder-trip burst ...")
        burst, per_class, _ = generate(work, count, side_share)
        expected = {s: per_class[SUBSCRIBERS[s][0]] for s in SUBSCRIBERS}
        echo("events each subscriber must get: " + ", ".join(f"{s} {n:,}" for s, n in expected.items()))
        timeout = max(120.0, count / 500)
        _routes(work / "routes.yaml", via, urls)
        admin_v = BrokerAdmin(settings.management_url, vhost)
        subprocess.run(_gridbus("routes", "apply"), env=env, check=True, capture_output=True)
        worker = spawn(_gridbus("worker", "-c", str(concurrency), "--loglevel", "WARNING"), env,
                       work / "worker.log")
        procs.append(worker)
        procs.append(spawn(_gridbus("recorder", "--loglevel", "WARNING"), env, work / "recorder.log"))
        if via == "rest":
            key = subprocess.run(_gridbus("gateway", "keys", "add", HES), env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
            port = free_port()
            procs.append(spawn(_gridbus("gateway", "--port", str(port), "--rate-per-system", "0",
                                        "--loglevel", "WARNING"), env, work / "gateway.log"))
            gateway = f"http://127.0.0.1:{port}"
            wait_http(f"{gateway}/health", 60)
        else:
            password = subprocess.run(_gridbus("broker", "users", "add", HES), env=env, check=True,
                                      capture_output=True, text=True).stdout.strip()
            procs.append(spawn(_gridbus("ingress", "--loglevel", "WARNING"), env, work / "ingress.log"))
            _wait_consumers(admin_v, "gridbus.in.bench-alarms", 60)
        for system, (cls, *_rest) in SUBSCRIBERS.items():
            _wait_consumers(admin_v, f"gridbus.route.bench-{cls}-to-{system}", 60)
        time.sleep(1.0)  # the pool children finish importing
        echo(f"gridbus ({via}): sending ...")
        started, started_wall = time.perf_counter(), time.time()
        if via == "rest":
            sender = subprocess.Popen([sys.executable, "-m", "simulators.hes_alarms", "send", str(burst),
                                       "--url", f"{gateway}/v1/push/{HES}/alarms", "--key", key,
                                       "--batch", str(batch), "--workers", "4"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        else:
            hes_url = _as_user(url, HES, password)
            sender = subprocess.Popen([sys.executable, "-m", "gridbus_dev.bench.alarm_pika", "publish", hes_url,
                                       "gridbus.hes-ingress", f"{HES}.alarms", str(burst), str(per_message)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        per = _wait_all(urls, expected, started, timeout, progress)
        out, _ = sender.communicate(timeout=60)
        if sender.returncode:
            raise RuntimeError(f"the HES sender failed: {out[-1000:]}")
        summary = json.loads(out)
        sent_s = summary["elapsed_s"] if via == "rest" else summary["at"] - started_wall
        label = f"gridbus via {via}" + (f", {per_message} alarms/message" if via == "amqp" else f", {batch}/POST")
        runs.append(AlarmRun(label, count, max(per.values()), per, expected, sent_s))
        for p in reversed(procs[len(SUBSCRIBERS):]):
            terminate(p)
        del procs[len(SUBSCRIBERS):]
        if baseline:
            runs.append(_baseline(settings, admin, work, burst, count, expected, env, echo, per_message))
    finally:
        for p in reversed(procs):
            terminate(p)
        admin.delete_vhost(vhost)
    return runs


def _baseline(settings: Settings, admin: BrokerAdmin, work: Path, burst: Path, count: int,
              expected: dict[str, int], env: dict, echo, per_message: int = 1) -> AlarmRun:
    vhost = f"gridbus-bench-alarms-base-{os.getpid()}"
    admin.create_vhost(vhost)
    url = _vhost_url(settings.broker_url, vhost)
    consumers = []
    try:
        conn = connect(url, "bench-baseline-setup")
        ch = conn.channel()
        ch.exchange_declare("baseline.alarms", "topic", durable=True, auto_delete=False)
        for system, (cls, *_rest) in SUBSCRIBERS.items():
            ch.queue_declare(f"baseline.{system}", durable=True, auto_delete=False,
                             arguments={"x-queue-type": "quorum"})
            ch.queue_bind(f"baseline.{system}", "baseline.alarms", f"#.{cls}.#")
        conn.close()
        for system in SUBSCRIBERS:
            consumers.append(subprocess.Popen(
                [sys.executable, "-m", "gridbus_dev.bench.alarm_pika", "consume", url, f"baseline.{system}",
                 str(expected[system])], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(1.0)
        echo("baseline (pika): publishing ...")
        started_wall = time.time()
        publisher = subprocess.run([sys.executable, "-m", "gridbus_dev.bench.alarm_pika", "publish", url,
                                    "baseline.alarms", str(work / "code-classes.json"), str(burst),
                                    str(per_message)],
                                   env=env, capture_output=True, text=True, timeout=600)
        if publisher.returncode:
            raise RuntimeError(f"baseline publisher failed: {publisher.stderr[-1000:]}")
        sent_s = json.loads(publisher.stdout)["at"] - started_wall
        per = {}
        for system, c in zip(SUBSCRIBERS, consumers):
            out, _ = c.communicate(timeout=max(120, count / 500))
            per[system] = json.loads(out.strip().splitlines()[-1])["last_at"] - started_wall
        return AlarmRun(f"baseline (pika), {per_message} alarms/message", count, max(per.values()), per, expected, sent_s)
    finally:
        for c in consumers:
            if c.poll() is None:
                c.kill()
        admin.delete_vhost(vhost)
