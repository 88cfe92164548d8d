"""`gridbus bench chaos`: the bus under load on a three-node cluster while a node dies, every node
restarts in turn, or the broker's disk alarm trips; then every message is counted where it ended.

One run, one throw-away virtual host on a local cluster (gridbus_dev.cluster), real processes:
the file-drop ingress, a Celery worker, the asyncio request worker, the gateway, the keeper,
and real HTTP stand-ins (MDMS-1, WFM, FMS, ADMS, HES-A, HES-B).  Three loads at once:

* a block-load file of ``rows`` interval rows dropped in the inbox → MDMS-1 (readings);
* a feeder-trip burst of ``alarms`` alarms POSTed to the gateway by an HES that retries what was
  not accepted (5xx, 503 with Retry-After, no answer) as a real one does → four subscribers;
* on-demand reads at ``read_rate``/s through the gateway → the HES stand-ins → replies.

The counts, in Jepsen's terms:

* **lost**: accepted (a row in the dropped file; an alarm the gateway answered 2xx) and not stored
  by the destination that should have it, and not in a dead-letter store with a reason;
* **unexpected**: stored but never sent (more distinct readings or events than were sent);
* **redelivered**: repeats the idempotent stand-ins absorbed (a destination without an idempotent
  store would have seen them);
* reads: answered OK with the right meter's values, failed with a clear error (an HTTP error with
  a reason), hung (no answer within the client's timeout), or **wrong** (OK with data that is not
  the requested meter's: another request's answer).

Recovery time: from the fault to the first 2-second window in which MDMS-1 stores readings at 80 %
of the rate of the 5 seconds before the fault.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from bus.broker_admin import BrokerAdmin
from gridbus_dev.bench import open_loop
from gridbus_dev.bench.alarms import ENCODER, SUBSCRIBERS
from gridbus_dev.bench.alarms import generate as generate_burst
from gridbus_dev.bench.ingest import generate as generate_file
from gridbus_dev.bench.procs import free_port, spawn, terminate, wait_http

SCENARIOS = ("node-kill", "rolling-restart", "disk-alarm")
CONTROL = "none"  # the same load and no fault: what the machine gives without one (not run by default)
HES = "hes-a"
# the stand-ins' counters of repeats they absorbed (MDMS-1's is reported with the readings)
REPEATS = {"wfm": "duplicate_events", "fms": "duplicate_evidence", "adms": "duplicate_values"}
READ_METERS = [f"UPM{n:08d}" for n in range(1, 501)]


@dataclass
class Load:
    rows: int = 2_000_000
    alarms: int = 50_000
    read_rate: float = 100.0
    read_seconds: float = 60.0
    fault_after_s: float = 10.0  # the fault comes this long after the load starts at the latest,
    fault_at_share: float = 0.25  # or once MDMS-1 holds this share of the file's readings: mid-ingest
    down_s: float = 15.0         # node-kill: how long the killed node stays down
    alarm_s: float = 15.0        # disk-alarm: how long the alarm lasts
    timeout_s: float = 600.0


@dataclass
class Counts:
    sent: int = 0
    stored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    unexpected: int = 0
    redelivered: int = 0


@dataclass
class Reads:
    sent: int = 0
    ok: int = 0
    failed: int = 0           # answered with an error and its reason
    hung: int = 0             # no answer within the client's timeout
    wrong: int = 0            # OK, but not the requested meter's data
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class ChaosResult:
    scenario: str
    nodes: int
    fault: str = ""
    readings: Counts = field(default_factory=Counts)
    alarms: dict[str, Counts] = field(default_factory=dict)
    alarm_posts: dict[str, int] = field(default_factory=dict)  # HTTP answers the HES got, by status
    reads: Reads = field(default_factory=Reads)
    recovery_s: float | None = None
    queues_not_whole: list[str] = field(default_factory=list)  # quorum queues missing a member at the end
    pre_fault_rate: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.readings.lost + sum(c.lost for c in self.alarms.values())

    @property
    def unexpected(self) -> int:
        return self.readings.unexpected + sum(c.unexpected for c in self.alarms.values()) + self.reads.wrong

    @property
    def redelivered(self) -> int:
        return self.readings.redelivered + sum(c.redelivered for c in self.alarms.values())

    def summary(self) -> dict:
        out = asdict(self)
        out.update(lost=self.lost, unexpected=self.unexpected, redelivered=self.redelivered)
        return out


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


def _routes(folder: Path, inbox: Path, urls: dict[str, str], assignment: Path) -> None:
    """Three route files (JSON is YAML): the ingest, the alarm fan-out, the on-demand reads."""
    folder.mkdir(parents=True, exist_ok=True)
    retry = {"attempts": 10, "first_delay_s": 1, "max_delay_s": 10}
    (folder / "ingest.yaml").write_text(json.dumps({"use_case": 1, "routes": [{
        "id": "chaos-ingest", "method": "file-batch",
        "source": {"system": HES, "connector": "file-drop", "path": str(inbox), "pattern": "*.csv", "settle_s": 0.1},
        "transform": ["hes_a_csv", "to_mdms_json"],
        "destinations": [{"system": "mdms-1", "connector": "rest", "url": f"{urls['mdms-1']}/messages"}],
        "queue": {"batch_size": 1000}, "retry": retry}]}))
    alarms = [{"id": "chaos-alarms", "method": "pub-sub",
               "source": {"system": HES, "connector": "http-push", "path": f"{HES}/alarms", "max_body_kb": 65536},
               "message": {"noun": "EndDeviceEvents"}, "transform": ["hes_alarm_json"],
               "destinations": [{"system": "events", "connector": "events"}]}]
    for system, (cls, _module, path, _counter) in SUBSCRIBERS.items():
        alarms.append({"id": f"chaos-{cls}-to-{system}", "method": "pub-sub",
                       "source": {"system": system, "connector": "subscription",
                                  "topic": "EndDeviceEvents.created.*", "classes": [cls]},
                       "transform": [ENCODER[system]],
                       "destinations": [{"system": system, "connector": "rest", "url": urls[system] + path}],
                       "retry": retry})
    (folder / "alarms.yaml").write_text(json.dumps({"use_case": 4, "routes": alarms}))
    (folder / "reads.yaml").write_text(json.dumps({"use_case": 7, "routes": [{
        "id": "chaos-reads", "method": "request-response",
        "source": {"system": "mdms-1", "connector": "http-request", "path": "mdms-1/meter-readings",
                   "kind": "meter-readings", "timeout_s": 15},
        "destinations": [{"system": "hes", "connector": "hes-request", "operation": "meter-readings",
                          "assignment": str(assignment), "hes": {"hes-a": urls["hes-a"], "hes-b": urls["hes-b"]},
                          "timeout_s": 10}],
        "retry": {"attempts": 3, "first_delay_s": 1, "max_delay_s": 5}}]}))


class AlarmSender(threading.Thread):
    """The HES: POSTs the burst in batches and sends a batch again until the gateway accepts it
    (2xx), honouring Retry-After, as a head-end's retry loop does.  The gateway keeps the alarm
    ids it accepted, so a batch sent twice is published once."""

    def __init__(self, alarms: list[dict], url: str, key: str, batch: int = 1000, workers: int = 4,
                 give_up_s: float = 300.0):
        super().__init__(daemon=True)
        self.batches = [alarms[i:i + batch] for i in range(0, len(alarms), batch)]
        self.url, self.key, self.workers, self.give_up_s = url, key, workers, give_up_s
        self.status: dict[str, int] = {}
        self.accepted = 0
        self.unaccepted = 0
        self._lock = threading.Lock()

    def _post(self, chunk: list[dict]) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.give_up_s
        while True:
            try:
                answer = session.post(self.url, json=chunk, headers={"X-API-Key": self.key}, timeout=30)
                code, wait = str(answer.status_code), float(answer.headers.get("Retry-After") or 1)
            except requests.RequestException as exc:
                code, wait = type(exc).__name__, 1.0
            with self._lock:
                self.status[code] = self.status.get(code, 0) + 1
            if code.startswith("2"):
                with self._lock:
                    self.accepted += len(chunk)
                return
            if time.monotonic() + wait > deadline:
                with self._lock:
                    self.unaccepted += len(chunk)
                return
            time.sleep(min(wait, 10.0) * random.uniform(0.5, 1.0))

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(self._post, self.batches))


def _read_checker(url: str, key: str, reads: Reads, lock: threading.Lock):
    """An on-demand read of one meter; counts it as OK (the meter's own values), failed (an error
    with its reason), or wrong (OK with another meter's data)."""
    from simulators.hes import register_value

    async def send(post: open_loop.Post, n: int) -> tuple[bool, str]:
        meter = READ_METERS[n % len(READ_METERS)]
        body = json.dumps({"Header": {"Verb": "get", "Noun": "MeterReadings"},
                           "Request": {"meters": [meter]}}).encode()
        with lock:
            reads.sent += 1
        status, raw = await post(url, body, {"Content-Type": "application/json", "X-API-Key": key})
        try:
            doc = json.loads(raw)
            reply = doc["Reply"]
        except (ValueError, KeyError, TypeError):
            kind = f"{status} (not a Reply)"
            with lock:
                reads.failed += 1
                reads.failures[kind] = reads.failures.get(kind, 0) + 1
            return False, kind
        if status == 200 and reply.get("Result") == "OK":
            blocks = (doc.get("Payload") or {}).get("MeterReadings", {}).get("MeterReading", [])
            right = bool(blocks) and all(
                b.get("meter") == meter and all(r.get("value") == register_value(meter, r.get("readingType", ""))
                                                for r in b.get("readings", [])) for b in blocks)
            with lock:
                if right:
                    reads.ok += 1
                else:
                    reads.wrong += 1
            return right, "" if right else f"wrong data for {meter}"
        first = (reply.get("Error") or [{}])[0]
        kind = f"{status} {reply.get('Result')} {first.get('code', '')}"
        with lock:
            reads.failed += 1
            reads.failures[kind] = reads.failures.get(kind, 0) + 1
        return False, kind

    return send


class Stack:
    """The processes and stand-ins of one chaos run, in its own virtual host of ``cluster``."""

    def __init__(self, cluster, work: Path, echo=print):
        self.cluster, self.work, self.echo = cluster, work, echo
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.vhost = f"chaos-{os.getpid()}-{int(time.time() * 1000) % 10**8}"  # one run's: the cluster may be reused

    def management_url(self) -> str:
        """A management API of a node that is up (the one asked first may be the one killed)."""
        for node in self.cluster.nodes:
            try:
                requests.get(f"http://127.0.0.1:{node.management_port}/api/overview", auth=("guest", "guest"),
                             timeout=2).raise_for_status()
                return f"http://guest:guest@127.0.0.1:{node.management_port}"
            except requests.RequestException:  # that node is down: the next
                continue
        raise RuntimeError("no node of the cluster answers its management API")

    def start(self, load: Load) -> None:
        work = self.work
        home, inbox, staging = work / "home", work / "inbox", work / "staging"
        for d in (home, inbox, staging):
            d.mkdir(parents=True, exist_ok=True)
        BrokerAdmin(self.management_url()).create_vhost(self.vhost)
        names = ("mdms-1", "wfm", "fms", "adms", "hes-a", "hes-b", "gateway")
        ports = {n: free_port() for n in names}
        self.urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        assignment = work / "assignment.csv"
        assignment.write_text("meter,hes\n" + "".join(f"{m},{'hes-a' if i % 2 else 'hes-b'}\n"
                                                      for i, m in enumerate(READ_METERS)))
        _routes(work / "routes", inbox, self.urls, assignment)
        self.env = {**os.environ, "GRIDBUS_BROKER_URL": self.cluster.broker_url(self.vhost),
                    "GRIDBUS_MANAGEMENT_URL": self.management_url(), "GRIDBUS_HOME": str(home),
                    "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_ROUTES": str(work / "routes"),
                    "GRIDBUS_TRACING": "off", "GRIDBUS_METER_ASSIGNMENT": str(assignment)}
        modules = {"mdms-1": "simulators.mdms", "wfm": "simulators.wfm", "fms": "simulators.fms",
                   "adms": "simulators.adms", "hes-a": "simulators.hes", "hes-b": "simulators.hes"}
        for name, module in modules.items():
            self.procs[name] = spawn([sys.executable, "-m", module, "--port", str(ports[name]), "--name", name],
                                     self.env, work / f"{name}.log")
        for name in modules:
            wait_http(f"{self.urls[name]}/health", 60)
        self.echo("applying routes on the cluster ...")
        subprocess.run(_gridbus("routes", "apply"), env=self.env, check=True, capture_output=True, timeout=120)
        self.keys = {s: subprocess.run(_gridbus("gateway", "keys", "add", s), env=self.env, check=True,
                                       capture_output=True, text=True, timeout=60).stdout.strip()
                     for s in (HES, "mdms-1")}
        self.procs["worker"] = spawn(_gridbus("worker", "-c", "2", "--loglevel", "WARNING"), self.env,
                                     work / "worker.log")
        self.procs["request-worker"] = spawn(_gridbus("worker", "--pool", "asyncio", "--loglevel", "WARNING"),
                                             self.env, work / "request-worker.log")
        self.procs["ingress"] = spawn(_gridbus("ingress", "--loglevel", "WARNING"), self.env, work / "ingress.log")
        self.procs["keeper"] = spawn(_gridbus("keeper", "--loglevel", "WARNING"), self.env, work / "keeper.log")
        self.procs["gateway"] = spawn(_gridbus("gateway", "--port", str(ports["gateway"]), "--rate-per-system", "0",
                                               "--loglevel", "WARNING"), self.env, work / "gateway.log")
        wait_http(f"{self.urls['gateway']}/health", 90)
        self._wait_consumers(["gridbus.route.chaos-ingest", "gridbus.route.chaos-reads",
                              *(f"gridbus.route.chaos-{cls}-to-{s}" for s, (cls, *_r) in SUBSCRIBERS.items())])
        time.sleep(1.0)  # the pool children finish importing

    def _wait_consumers(self, queues: list[str], timeout_s: float = 90) -> None:
        admin = BrokerAdmin(self.management_url(), self.vhost)
        deadline = time.monotonic() + timeout_s
        for queue in queues:
            while True:
                try:
                    if admin.queue(queue).get("consumers", 0) > 0:
                        break
                except Exception:  # noqa: BLE001 - not declared yet, or a node restarting
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nobody consumes {queue} after {timeout_s:.0f}s; see {self.work}/*.log")
                time.sleep(0.2)

    def stats(self, name: str) -> dict:
        return requests.get(f"{self.urls[name]}/stats", timeout=10).json()

    def dead_letters(self) -> dict[str, int]:
        """Dead letters the keeper stored, by route (``gridbus dlq list --json``)."""
        done = subprocess.run(_gridbus("dlq", "list", "--json"), env=self.env, capture_output=True, text=True,
                              timeout=120)
        by_route: dict[str, int] = {}
        if done.returncode == 0 and done.stdout.strip():
            for row in json.loads(done.stdout):
                by_route[row.get("route", "?")] = by_route.get(row.get("route", "?"), 0) + int(row.get("count", 1))
        return by_route

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            terminate(proc)
        try:
            BrokerAdmin(self.management_url()).delete_vhost(self.vhost)
        except Exception:  # noqa: BLE001 - a cluster that is going away anyway
            pass


def busiest_leader(members, messages: dict[str, int], node_names: list[str]) -> int:
    """The number (1-based, as the cluster's) of the node leading the quorum queues that hold the
    most messages; ``members``: each queue's name and leader, ``messages``: queue → messages."""
    load: dict[str, int] = {}
    for queue in members:
        if queue.leader in node_names:
            load[queue.leader] = load.get(queue.leader, 0) + messages.get(queue.name, 0) + 1
    return node_names.index(max(load, key=load.get)) + 1 if load else 1


def _busiest(cluster, admin: BrokerAdmin, vhost: str) -> int:
    messages = {q["name"]: int(q.get("messages") or 0) for q in admin.queues()}
    return busiest_leader(cluster.queue_members(vhost), messages, [n.name for n in cluster.nodes])


def _fault(scenario: str, cluster, admin: BrokerAdmin, vhost: str, load: Load, result: ChaosResult, echo) -> None:
    if scenario == "node-kill":
        victim = _busiest(cluster, admin, vhost)
        result.fault = f"kill -9 {cluster.node(victim).name} (leads the busiest queues), down {load.down_s:g}s"
        echo(result.fault)
        cluster.kill(victim)
        time.sleep(load.down_s)
        cluster.start(victim)
    elif scenario == "rolling-restart":
        result.fault = "each node stopped and started in turn, the next once the last rejoined"
        echo(result.fault)
        for i in range(1, len(cluster.nodes) + 1):
            cluster.stop(i)
            cluster.start(i)
    elif scenario == "disk-alarm":
        result.fault = f"disk alarm on every node for {load.alarm_s:g}s"
        echo(result.fault)
        for i in range(1, len(cluster.nodes) + 1):
            cluster.set_disk_alarm(i, True)
        time.sleep(load.alarm_s)
        for i in range(1, len(cluster.nodes) + 1):
            cluster.set_disk_alarm(i, False)
    elif scenario == CONTROL:
        result.fault = "none (the control run: the same load, no fault)"
        echo(result.fault)
    else:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}, {CONTROL}")


def _wait_whole(cluster, vhost: str, timeout_s: float) -> list[str]:
    """The quorum queues of ``vhost`` still missing an online member after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            missing = [q.name for q in cluster.queue_members(vhost) if q.offline]
        except Exception as exc:  # noqa: BLE001 - the management API of a node coming back
            missing = [f"(no answer: {exc})"]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1.0)


def _recovery(samples: list[tuple[float, int]], fault_at: float) -> tuple[float, float | None]:
    """(readings/s in the 5 s before the fault, seconds from the fault to the first 2-s window at
    80 % of it) from (time, readings stored) samples."""
    before = [(t, n) for t, n in samples if fault_at - 5 <= t <= fault_at]
    if len(before) < 2 or before[-1][0] == before[0][0]:
        return 0.0, None
    rate = (before[-1][1] - before[0][1]) / (before[-1][0] - before[0][0])
    if rate <= 0:
        return 0.0, None
    after = [(t, n) for t, n in samples if t >= fault_at]
    for i, (t, n) in enumerate(after):
        for t2, n2 in after[i + 1:]:
            if t2 - t >= 2.0:
                if (n2 - n) / (t2 - t) >= 0.8 * rate:
                    return rate, t - fault_at
                break
    return rate, None


def run_scenario(scenario: str, cluster, work: Path, load: Load, echo=print, progress=None) -> ChaosResult:
    """One scenario on ``cluster`` (started, healthy); the counts when everything has settled."""
    result = ChaosResult(scenario, len(cluster.nodes))
    stack = Stack(cluster, work, echo)
    try:
        stack.start(load)
        echo(f"generating {load.rows:,} rows and a {load.alarms:,}-alarm burst ...")
        summary = generate_file(work / "staging", load.rows, echo)
        expected_readings = summary["expected_readings"]
        burst, per_class, _ = generate_burst(work, load.alarms, 0.04)
        expected_events = {s: per_class[SUBSCRIBERS[s][0]] for s in SUBSCRIBERS}
        alarms = json.loads(burst.read_text())

        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    samples.append((time.monotonic(), stack.stats("mdms-1")["readings"]))
                except requests.RequestException:
                    pass
                done.wait(0.5)

        reads_lock = threading.Lock()
        send_read = _read_checker(f"{stack.urls['gateway']}/v1/requests/mdms-1/meter-readings",
                                  stack.keys["mdms-1"], result.reads, reads_lock)
        read_outcome: list = []
        reader = threading.Thread(target=lambda: read_outcome.append(
            open_loop.run(send_read, load.read_rate, load.read_seconds, timeout_s=60)), daemon=True)
        sender = AlarmSender(alarms, f"{stack.urls['gateway']}/v1/push/{HES}/alarms", stack.keys[HES])
        sampler = threading.Thread(target=sample, daemon=True)

        echo(f"{scenario}: load starts (file, burst, {load.read_rate:g} reads/s) ...")
        started = time.monotonic()
        sampler.start()
        os.replace(summary["path"], work / "inbox" / Path(summary["path"]).name)
        sender.start()
        reader.start()
        while time.monotonic() < started + load.fault_after_s:
            if samples and samples[-1][1] >= load.fault_at_share * expected_readings:
                break
            time.sleep(0.2)
        fault_at = time.monotonic()
        _fault(scenario, cluster, BrokerAdmin(stack.management_url(), stack.vhost), stack.vhost, load, result, echo)

        deadline = started + load.timeout_s
        while time.monotonic() < deadline:
            readings = stack.stats("mdms-1")["readings"]
            events = {s: stack.stats(s)[SUBSCRIBERS[s][3]] for s in SUBSCRIBERS}
            if progress:
                progress(readings, expected_readings, events, expected_events)
            if (readings >= expected_readings and all(events[s] >= expected_events[s] for s in events)
                    and not sender.is_alive() and not reader.is_alive()):
                break
            time.sleep(1.0)
        result.seconds = time.monotonic() - started
        time.sleep(3.0)  # what is still in flight lands (a redelivery after the last new value)
        done.set()
        sender.join(5)
        reader.join(5)
        hung = read_outcome[0].errors - result.reads.failed - result.reads.wrong if read_outcome else 0
        result.reads.hung = max(0, hung) + (0 if read_outcome else result.reads.sent - result.reads.ok
                                            - result.reads.failed - result.reads.wrong)
        result.pre_fault_rate, result.recovery_s = _recovery(samples, fault_at)
        dead = stack.dead_letters()

        mdms = stack.stats("mdms-1")
        result.readings = Counts(sent=expected_readings, stored=mdms["readings"],
                                 dead_lettered=dead.get("chaos-ingest", 0),
                                 unexpected=max(0, mdms["readings"] - expected_readings),
                                 redelivered=mdms["duplicate_values"])
        # a dead-lettered batch holds many readings: the dead letters count messages, so anything
        # short at the MDMS while the route has dead letters is reported as dead-lettered, not lost
        short = max(0, expected_readings - mdms["readings"])
        result.readings.lost = 0 if short and result.readings.dead_lettered else short
        result.alarm_posts = dict(sender.status)
        if sender.unaccepted:
            result.notes.append(f"{sender.unaccepted:,} alarms never accepted by the gateway (the HES gave up)")
        for system, (cls, _m, _p, counter) in SUBSCRIBERS.items():
            stats = stack.stats(system)
            got = stats[counter]
            # the MDMS stand-in counts repeated readings and events in one counter: its repeats are
            # all reported with the readings
            dup = 0 if system == "mdms-1" else stats.get(REPEATS[system], 0)
            route = f"chaos-{cls}-to-{system}"
            c = Counts(sent=expected_events[system], stored=got, dead_lettered=dead.get(route, 0),
                       unexpected=max(0, got - expected_events[system]), redelivered=dup)
            short = max(0, expected_events[system] - got)
            c.lost = 0 if short and c.dead_lettered else short
            result.alarms[system] = c
        result.queues_not_whole = _wait_whole(cluster, stack.vhost, 90.0)
        if dead:
            result.notes.append("dead letters: " + ", ".join(f"{r} {n}" for r, n in sorted(dead.items())))
        if time.monotonic() > deadline:
            result.notes.append(f"did not settle within {load.timeout_s:g}s")
    finally:
        stack.stop()
    return result


def bench_chaos(scenarios: list[str], load: Load, work: Path, nodes: int = 3, echo=print,
                progress=None) -> list[ChaosResult]:
    """Each scenario on a cluster of its own, started for it and stopped after it."""
    from gridbus_dev.cluster import start_cluster

    results = []
    for scenario in scenarios:
        base = work / scenario
        base.mkdir(parents=True, exist_ok=True)
        echo(f"starting a {nodes}-node cluster for {scenario} ...")
        cluster = start_cluster(base / "cluster", nodes, *free_cluster_ports(nodes), prefix="gridbus-chaos")
        try:
            results.append(run_scenario(scenario, cluster, base, load, echo, progress))
        finally:
            cluster.stop_all()
    return results


def free_cluster_ports(n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """AMQP, management and distribution ports for ``n`` nodes, apart from a dev stack's."""
    from gridbus_dev.cluster import free_ports

    ports = free_ports(3 * n)
    return tuple(ports[:n]), tuple(ports[n:2 * n]), tuple(ports[2 * n:])


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
