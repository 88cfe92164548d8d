"""`gridbus bench outages` (issue 19): the outage correlator as real processes on a RabbitMQ node
of its own, the storm of ``outages_engine.make_storm`` against its ground truth, beside the
raw-event route delivering the same gasps to the ADMS, in one run.

    python -m gridbus_dev.bench.outages [--gasps 200000] [--consumers 100000] [--feeders 40]
                                        [--restore-after 360] [--phases latency,throughput,baseline]
                                        [--json]

Every process is a throw-away one on loopback: a RabbitMQ node in the work folder
(``network_delivery.broker``), the network store loaded from ``simulators.network.NetworkModel``
(100,000 consumers, 1,000 DTs on 40 feeders by default), the ADMS stand-in consuming its outage
queue over AMQP (and taking the raw events over REST), ``gridbus outages run`` (one or two) and,
for the baseline, ``gridbus worker``.  The route file is written into the work folder: the
production options of routes/uc3-outages.yaml, without verification (``verify_meters: 0``: no
request worker and no HES stand-ins here), so the storm has no DT meter gasping alone (without an
AMI ping that would be a false DT outage by design).

The storm (``make_storm``): whole feeders tripping, single DTs, partial DTs, single meters,
repeated gasps (new alarm ids) and redelivered messages, delivery 1-10 s late, PLC batches
~30 s, 2 % of the events 1-5 minutes late; then restorations with 5 meters left out of some
DTs.  The restorations come ``--restore-after`` seconds after the trips (the generator's 30
minutes compressed; past 5 minutes, so the outages are sustained).  Events travel as canonical
EndDeviceEvents documents, as the alarm routes publish them: one per HES per 100 ms of arrival
(at most 1,000 events), with ``createdDateTime`` in whole seconds.

Phases, in this order:

1. **latency and accuracy**: the storm shifted to start now and published in real time by
   arrival, one correlator process; the outages the ADMS stand-in holds (``GET /outages``)
   compared with the ground truth (``outages_engine.score``).  Declaration latency: from the
   publication of the document holding the gasp that completed a DT's share (or its DT meter's
   gasp; for a feeder, its head meter's or its third DT's), as the generator's ground truth has
   it, to the ``receivedAt`` of the Outage's ``created`` at the ADMS.
2. **throughput**: the correlator's capacity, draining a backlog.  The whole storm (times shifted
   so that it ended a few seconds ago: every event within the allowed lateness) is published with
   no correlator running, then one process (every partition) is started, and timed until the
   partitions' input logs in the outage store hold every event; then the same with two processes
   (``--partitions 0,1`` and ``--partitions 2,3``, both routing), on a fresh store.  The route's
   ``checkpoint_s`` is 3,600 here so that the log, which the timing reads, is not cut during the
   drain.  The outages of the two runs are compared.
3. **baseline**: the same documents on the raw-event route (``outage-to-adms`` of
   routes/uc2-4-5-alarms.yaml: subscription → ``to_mdms_json`` → REST to the ADMS's /messages)
   drained by ``gridbus worker -c 2``, timed until the ADMS stand-in holds every distinct event.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import orjson
import requests
import yaml

import bus
from gridbus_dev.bench.outages_engine import T0, Storm, make_storm, score
from gridbus_dev.bench.procs import CpuMeter, free_port, spawn, terminate, wait_http

ROOT = Path(bus.__file__).resolve().parents[1]
ROUTE = "outages-to-adms"
RAW_ROUTE = "outage-to-adms"
ADMS_QUEUE = "adms.outages"
CIM_TYPE = {101: "3.26.0.85", 102: "3.26.0.216"}
DOC_SLOT_S = 0.1       # a document holds what one HES got within 100 ms ...
DOC_MAX = 1000         # ... at most this many events
TARGET_EVENTS_PER_S = 20_000
PHASES = ("latency", "throughput", "baseline")


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


# -- the storm as documents ------------------------------------------------------------------------
def compress_restorations(storm: Storm, restore_after_s: float) -> Storm:
    """The generator restores 30 minutes after the trips; bring the first breaths (and what they
    decide) ``restore_after_s`` after them instead, so that a run takes minutes."""
    shift = 1800.0 - restore_after_s
    if shift == 0:
        return storm
    events = []
    for arrival, e in storm.events:
        if e.code == 102:
            arrival, e = arrival - shift, replace(e, at=e.at - shift,
                                                   received=None if e.received is None else e.received - shift)
        events.append((arrival, e))
    events.sort(key=lambda x: x[0])
    storm.events = events
    storm.dead = {m: [a, b - shift if b != float("inf") else b] for m, (a, b) in storm.dead.items()}
    return storm


def documents(storm: Storm, t0: float) -> list[tuple[float, dict, list[float]]]:
    """(offset of its arrival from the storm's first, canonical EndDeviceEvents document, the
    generator's arrivals of its events) with the storm's times moved so that the generator's
    ``T0`` is ``t0``: per HES, what arrived within ``DOC_SLOT_S`` of the document's first event."""
    from bus.outages.events import iso

    delta = t0 - T0
    first = storm.events[0][0] if storm.events else T0
    open_docs: dict[str, tuple[float, list, list]] = {}
    out: list[tuple[float, dict, list[float]]] = []

    def close(hes: str) -> None:
        start, events, arrivals = open_docs.pop(hes)
        out.append((start - first, {"noun": "EndDeviceEvents", "source": hes, "EndDeviceEvent": events}, arrivals))

    for arrival, e in storm.events:
        current = open_docs.get(e.hes)
        if current is not None and (arrival - current[0] >= DOC_SLOT_S or len(current[1]) >= DOC_MAX):
            close(e.hes)
            current = None
        if current is None:
            current = open_docs[e.hes] = (arrival, [], [])
        current[1].append({"meter": e.meter, "eventType": CIM_TYPE[e.code], "isCode": e.code,
                           "createdDateTime": iso(e.at + delta),
                           "receivedDateTime": iso((e.received if e.received is not None else e.at) + delta),
                           "eventClass": ["outage", "critical"] if e.code == 101 else ["outage"],
                           "alarmId": e.message_id})
        current[2].append(arrival)
    for hes in list(open_docs):
        close(hes)
    out.sort(key=lambda x: x[0])
    return out


def distinct_events(docs) -> int:
    """What the ADMS's raw-event store keeps: one per (meter, eventType, createdDateTime)."""
    return len({(e["meter"], e["eventType"], e["createdDateTime"]) for _, d, _ in docs for e in d["EndDeviceEvent"]})


def decisions_at_adms(outages: list[dict]) -> list[tuple[float, dict]]:
    """The ADMS's outages as (receivedAt, decision) pairs for ``outages_engine.score``: each
    outage's ``created`` and, when closed, its ``closed`` (the ADMS keeps the latest document)."""
    out = []
    for o in outages:
        doc = o["Outage"]
        for m in o["messages"]:
            if m["verb"] in ("created", "closed"):
                out.append((m["receivedAt"], {"type": "outage", "verb": m["verb"], "Outage": doc}))
    return out


def outcome(outages: list[dict]) -> Counter:
    """(kind, equipment, meters at creation, verbs) of each outage: two runs compared without
    their mRIDs (which carry the start time, and the runs start at different times)."""
    return Counter((o["Outage"].get("kind"), o["Outage"]["Equipment"]["mRID"],
                    o["Outage"].get("originalMetersAffected"), tuple(m["verb"] for m in o["messages"]))
                   for o in outages)


def summary(outages: list[dict]) -> dict[str, Any]:
    kinds = Counter(o["Outage"].get("kind") for o in outages)
    durations = Counter(o["Outage"].get("durationKind") for o in outages
                        if o["verb"] == "closed" and o["Outage"].get("closedReason") in (None, "", "restored"))
    reasons = Counter(o["Outage"].get("closedReason") or "restored" for o in outages if o["verb"] == "closed")
    return {"outages": len(outages), "by_kind": dict(kinds), "open": sum(1 for o in outages if o["open"]),
            "closed_by_reason": dict(reasons), "closed_duration": dict(durations),
            "messages": sum(len(o["messages"]) for o in outages)}


# -- routes ----------------------------------------------------------------------------------------
def write_routes(path: Path, checkpoint_s: float | None = None) -> dict:
    """The bench's route file: the correlate route of routes/uc3-outages.yaml with its production
    options but ``verify_meters: 0`` and no verify route, and the raw-event route of
    routes/uc2-4-5-alarms.yaml.  Returns the correlate route as written."""
    uc3 = yaml.safe_load((ROOT / "routes" / "uc3-outages.yaml").read_text())
    raw = yaml.safe_load((ROOT / "routes" / "uc2-4-5-alarms.yaml").read_text())
    route = next(r for r in uc3["routes"] if r["id"] == ROUTE)
    route["options"] = {**route.get("options", {}), "verify_meters": 0}
    route["correlate"] = {k: v for k, v in route.get("correlate", {}).items() if k != "verify_route"}
    if checkpoint_s is not None:
        route["correlate"]["checkpoint_s"] = checkpoint_s
    raw_route = next(r for r in raw["routes"] if r["id"] == RAW_ROUTE)
    path.write_text(yaml.safe_dump({"use_case": 3, "title": "gridbus bench outages",
                                    "routes": [route, raw_route]}, sort_keys=False))
    return route


def declare(routes_path: Path, broker_url: str, env: dict) -> None:
    """What ``gridbus routes apply`` declares (in-process: this node has no management plugin)."""
    from bus.routes.loader import load_routes
    from bus.topology.apply import declare_all
    from bus.topology.compile import compile_topology

    declare_all(compile_topology(load_routes([routes_path], env=env)), broker_url)


# -- the broker ------------------------------------------------------------------------------------
class Queues:
    def __init__(self, broker_url: str, partitions: int):
        from bus import naming
        from bus.outages import names

        self.url = broker_url
        self.route = naming.route_queue_name(ROUTE)
        self.raw = naming.route_queue_name(RAW_ROUTE)
        self.parts = [names.partition_queue(ROUTE, p) for p in range(partitions)]

    def _channel(self, fn):
        from bus.messaging import connect

        conn = connect(self.url, "gridbus-bench-outages")
        try:
            return fn(conn.channel())
        finally:
            conn.close()

    def counts(self, queues: list[str]) -> dict[str, tuple[int, int]]:
        """queue → (messages ready, consumers)."""
        return self._channel(lambda ch: {q: tuple(ch.queue_declare(q, passive=True)[1:3]) for q in queues})

    def purge(self, queues: list[str]) -> None:
        self._channel(lambda ch: [ch.queue_purge(q) for q in queues])

    def wait_consumers(self, queues: list[str], timeout_s: float, why: Callable[[], str] = lambda: "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if all(c >= 1 for _, c in self.counts(queues).values()):
                    return
            except Exception:  # noqa: BLE001 - not declared yet
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no consumer on {queues} within {timeout_s:.0f}s {why()}")


class Publisher:
    """Route messages as the alarm routes publish them (``OutageStack.send_document``)."""

    def __init__(self, broker_url: str):
        from bus.messaging import ConfirmingPublisher

        self.p = ConfirmingPublisher(broker_url, "gridbus-bench-outages-hes")
        self.n = 0

    def publish(self, route: str, doc: dict, flush: bool = True) -> None:
        from bus import naming, task_message
        from bus.envelope import Envelope

        self.n += 1
        envelope = Envelope(route_id=route, source=doc["source"], verb="created", noun="EndDeviceEvents",
                            message_id=f"bench-{self.n}.{route}")
        body, props, headers = task_message.build(envelope, doc)
        self.p.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route), body, props, headers)
        if flush:
            self.p.flush()

    def flush(self) -> None:
        self.p.flush()

    def close(self) -> None:
        self.p.close()


# -- the ADMS --------------------------------------------------------------------------------------
class Adms:
    def __init__(self, url: str):
        self.url = url

    def outages(self) -> list[dict]:
        r = requests.get(f"{self.url}/outages", timeout=60)
        r.raise_for_status()
        return r.json()["outages"]

    def stats(self) -> dict:
        return requests.get(f"{self.url}/stats", timeout=10).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_reset", timeout=10).raise_for_status()

    def settle(self, quiet_s: float, timeout_s: float, at_least: int = 0) -> dict:
        """Until the ADMS has taken no outage message for ``quiet_s`` (and holds ``at_least``)."""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            s = self.stats()
            n = s.get("outage_messages", 0)
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_s and s.get("outages", 0) >= at_least:
                return s
            time.sleep(0.5)
        raise RuntimeError(f"the ADMS did not settle within {timeout_s:.0f}s: {self.stats()}")


# -- the outage store's log: what the partitions have taken --------------------------------------
class LogWatch:
    """Events in the partitions' input logs (``outage_log``), read as they are appended."""

    def __init__(self, path: Path):
        self.path = path
        self.last: dict[int, int] = defaultdict(int)
        self.events = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.ticked: set[int] = set()       # partitions that have taken a tick
        self.after_tick = 0                 # events a partition took after its first tick

    def poll(self) -> int:
        if not self.path.exists():
            return self.events
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError:
            return self.events
        try:
            rows = db.execute("SELECT part, seq, at, inputs FROM outage_log WHERE route = ? ORDER BY part, seq",
                              (ROUTE,)).fetchall() if not self.last else [
                r for p in range(16) for r in db.execute(
                    "SELECT part, seq, at, inputs FROM outage_log WHERE route = ? AND part = ? AND seq > ? "
                    "ORDER BY seq", (ROUTE, p, self.last[p])).fetchall()]
        except sqlite3.OperationalError:  # not created yet
            return self.events
        finally:
            db.close()
        for part, seq, at, inputs in rows:
            self.last[part] = max(self.last[part], seq)
            n = 0
            for i in orjson.loads(inputs):
                if i.get("t") == "tick":
                    self.ticked.add(part)
                elif i.get("t") == "ev":
                    n += len(i["ev"])
                    if part in self.ticked:
                        self.after_tick += len(i["ev"])
            if n:
                self.events += n
                self.first_at = at if self.first_at is None else min(self.first_at, at)
                self.last_at = at if self.last_at is None else max(self.last_at, at)
        return self.events


# -- one run ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, work: Path, broker_url: str, broker_pid: int | None, say):
        self.work, self.url, self.broker_pid, self.say = work, broker_url, broker_pid, say
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.routes = work / "routes.yaml"
        self.env = {**os.environ, "GRIDBUS_BROKER_URL": broker_url, "GRIDBUS_HOME": str(work / "home"),
                    "GRIDBUS_ENV_FILE": str(work / "home" / "none.env"), "GRIDBUS_ROUTES": str(self.routes),
                    "GRIDBUS_NETWORK_STORE": str(work / "network.sqlite"), "PYTHONUNBUFFERED": "1"}
        self.procs: dict[str, Any] = {}
        self.adms_port = free_port()
        self.env["ADMS_URL"] = f"http://127.0.0.1:{self.adms_port}"
        self.adms: Adms | None = None
        self.queues: Queues | None = None

    def start_adms(self) -> None:
        self.procs["adms"] = spawn([sys.executable, "-m", "simulators.adms", "--port", str(self.adms_port),
                                    "--amqp-url", self.url, "--amqp-queue", ADMS_QUEUE], self.env,
                                   self.logs / "adms.log")
        wait_http(f"{self.env['ADMS_URL']}/health", 60)
        self.adms = Adms(self.env["ADMS_URL"])

    def start_correlators(self, tag: str, store: Path, partitions: list[str | None]) -> list[str]:
        self.env["GRIDBUS_OUTAGE_STORE"] = str(store)
        names = []
        for i, parts in enumerate(partitions):
            name = f"outages-{tag}-{i}"
            self.procs[name] = spawn(_gridbus("outages", "run", *(("--partitions", parts) if parts else ()),
                                              "--loglevel", "WARNING"), self.env, self.logs / f"{name}.log")
            names.append(name)
        return names

    def log_tail(self, names: list[str]) -> str:
        return " | ".join(f"{n}: {(self.logs / f'{n}.log').read_text(errors='replace')[-800:]}" for n in names)

    def stop(self, names: list[str]) -> None:
        for n in names:
            terminate(self.procs.pop(n, None))

    def cpu(self, names: list[str]) -> CpuMeter:
        return CpuMeter({**{n: self.procs[n].pid for n in names},
                         **({"rabbitmq": self.broker_pid} if self.broker_pid else {})})

    # -- phase 1 ---------------------------------------------------------------------------------
    def latency(self, storm: Storm, restore_wait_s: float) -> dict:
        self.say("latency and accuracy: the storm in real time, one correlator process")
        names = self.start_correlators("latency", self.work / "outages-latency.sqlite", [None])
        self.queues.wait_consumers([self.queues.route, *self.queues.parts], 90, lambda: self.log_tail(names))
        t0 = time.time() + 2.0
        docs = documents(storm, t0)
        start = t0 + (storm.events[0][0] - T0)          # when the storm's first event arrives
        publisher = Publisher(self.url)
        published_at: dict[float, float] = {}            # generator arrival -> when its document went out
        lag = []
        meter = self.cpu(names)
        cpu_before = meter.snapshot()
        last_say = time.monotonic()
        for i, (offset, doc, arrivals) in enumerate(docs):
            due = start + offset
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            sent = time.time()
            lag.append(max(0.0, sent - due))
            publisher.publish(ROUTE, doc)
            for a in arrivals:
                published_at.setdefault(a, sent)
            if time.monotonic() - last_say > 30:
                last_say = time.monotonic()
                self.say(f"  {i + 1:,}/{len(docs):,} documents published, {sent - start:.0f} s into the storm")
        publisher.close()
        # every timer due: the last breath + restore_wait + the watermark's skew, ticks, batches
        last_event = max(e.at for _, e in storm.events) + (t0 - T0)
        wait = last_event + restore_wait_s + 10 - time.time()
        if wait > 0:
            self.say(f"  published; waiting {wait:.0f} s for the last restorations to close")
            time.sleep(wait)
        self.adms.settle(15, 300)
        cpu = CpuMeter.delta(cpu_before, meter.snapshot())
        outages = self.adms.outages()
        stats = self.adms.stats()
        self.stop(names)
        actual = dict(storm.share_arrival)
        storm.share_arrival = {eq: published_at[a] for eq, a in actual.items() if a in published_at}
        try:
            acc = score(storm, decisions_at_adms(outages))
        finally:
            storm.share_arrival = actual
        return {"documents": len(docs), "events": sum(len(d["EndDeviceEvent"]) for _, d, _ in docs),
                "publish_lag_s": {"p50": round(statistics.median(lag), 3), "max": round(max(lag), 3)},
                "storm_s": round(docs[-1][0], 1), "accuracy": acc, "adms": summary(outages),
                "adms_duplicates": stats.get("duplicates"), "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                "load_average": round(os.getloadavg()[0], 2)}

    # -- phase 2 ---------------------------------------------------------------------------------
    def throughput(self, storm: Storm, tag: str, partitions: list[str | None], restore_after_s: float) -> dict:
        procs = len(partitions)
        self.say(f"throughput: the storm as a backlog, {procs} correlator process(es)")
        write_routes(self.routes, checkpoint_s=3600)
        self.queues.purge([self.queues.route, *self.queues.parts, ADMS_QUEUE])
        self.adms.reset()
        # the storm ended a few seconds ago: the trips restore_after + ~100 s ago (lateness 600 s)
        t0 = time.time() - (restore_after_s + 100)
        docs = documents(storm, t0)
        events = sum(len(d["EndDeviceEvent"]) for _, d, _ in docs)
        publisher = Publisher(self.url)
        started = time.perf_counter()
        for i, (_, doc, _) in enumerate(docs):
            publisher.publish(ROUTE, doc, flush=i % 50 == 49)
        publisher.flush()
        publisher.close()
        backlog_s = time.perf_counter() - started
        self.say(f"  {events:,} events in {len(docs):,} documents published in {backlog_s:.1f} s; starting")
        store = self.work / f"outages-{tag}.sqlite"
        watch = LogWatch(store)
        spawned = time.time()
        names = self.start_correlators(tag, store, partitions)
        meter = self.cpu(names)
        cpu_before = meter.snapshot()
        deadline = time.monotonic() + max(300, events / 500)
        last_say = time.monotonic()
        while watch.poll() < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{watch.events:,} of {events:,} events logged: {self.log_tail(names)}")
            if any(self.procs[n].poll() is not None for n in names):
                raise RuntimeError(f"a correlator exited: {self.log_tail(names)}")
            if time.monotonic() - last_say > 15:
                last_say = time.monotonic()
                self.say(f"  {watch.events:,}/{events:,} events taken by the partitions")
            time.sleep(0.25)
        cpu = CpuMeter.delta(cpu_before, meter.snapshot())
        self.say(f"  events taken after their partition's first tick: {watch.after_tick:,}")
        drained_s = watch.last_at - spawned
        steady_s = watch.last_at - watch.first_at
        self.say(f"  drained in {drained_s:.1f} s from the process start ({events / drained_s:,.0f} events/s)")
        self.adms.settle(15, 300, at_least=len(storm.feeders) + len(storm.dts))
        outages = self.adms.outages()
        self.stop(names)
        acc = score(storm, decisions_at_adms(outages))
        return {"processes": procs, "partitions": [p or "all" for p in partitions], "documents": len(docs),
                "events": events, "backlog_published_s": round(backlog_s, 2),
                "events_after_first_tick": watch.after_tick,
                "drained_s": round(drained_s, 2), "events_per_s": round(events / drained_s),
                "steady_s": round(steady_s, 2),
                "events_per_s_steady": round(events / steady_s) if steady_s > 0 else None,
                "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                "correlator_cpu_s": round(sum(v for k, v in cpu.items() if k != "rabbitmq"), 1),
                "accuracy": {k: acc[k] for k in ("feeder", "dt", "singles", "nested", "absorbedAnnounced")},
                "adms": summary(outages), "outcome": outcome(outages),
                "load_average": round(os.getloadavg()[0], 2)}

    # -- phase 3 ---------------------------------------------------------------------------------
    def baseline(self, storm: Storm, concurrency: int = 2) -> dict:
        self.say(f"baseline: the raw-event route, gridbus worker -c {concurrency}, the same documents")
        self.queues.purge([self.queues.raw])
        self.adms.reset()
        docs = documents(storm, time.time() - 600)
        events = sum(len(d["EndDeviceEvent"]) for _, d, _ in docs)
        expected = distinct_events(docs)
        publisher = Publisher(self.url)
        for i, (_, doc, _) in enumerate(docs):
            publisher.publish(RAW_ROUTE, doc, flush=i % 50 == 49)
        publisher.flush()
        publisher.close()
        spawned = time.time()
        self.procs["worker"] = spawn(_gridbus("worker", "-c", str(concurrency), "--loglevel", "WARNING"),
                                     self.env, self.logs / "worker.log")
        meter = self.cpu(["worker"])
        cpu_before = meter.snapshot()
        first = None
        deadline = time.monotonic() + max(300, events / 200)
        last_say = time.monotonic()
        while True:
            n = self.adms.stats().get("events", 0)
            now = time.time()
            if n and first is None:
                first = now
            if n >= expected:
                break
            if time.monotonic() > deadline or self.procs["worker"].poll() is not None:
                raise RuntimeError(f"the ADMS holds {n:,} of {expected:,} events: {self.log_tail(['worker'])}")
            if time.monotonic() - last_say > 15:
                last_say = time.monotonic()
                self.say(f"  {n:,}/{expected:,} distinct events at the ADMS")
            time.sleep(0.2)
        cpu = CpuMeter.delta(cpu_before, meter.snapshot())
        done_s = now - spawned
        stats = self.adms.stats()
        self.stop(["worker"])
        return {"documents": len(docs), "events": events, "distinct_events": expected, "drained_s": round(done_s, 2),
                "events_per_s": round(events / done_s), "steady_s": round(now - first, 2),
                "events_per_s_steady": round(events / (now - first)) if now > first else None,
                "posts": stats.get("messages"), "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                "worker_cpu_s": round(cpu.get("worker", 0.0), 1), "load_average": round(os.getloadavg()[0], 2)}


def bench_outages(work: Path, gasps: int = 200_000, consumers: int = 100_000, feeders: int = 40, seed: int = 1,
                  restore_after_s: float = 360.0, phases: tuple[str, ...] = PHASES, say=lambda m: None) -> dict:
    from bus.network.store import open_store
    from bus.outages import MemoryTopology
    from gridbus_dev.bench.network_delivery import broker
    from simulators.network import NetworkModel

    if not 0 < restore_after_s <= 480:
        raise ValueError("--restore-after: 1 .. 480 s (the backlog must stay within the allowed lateness)")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dts = max(1, round(consumers / 100))
    model = NetworkModel.generate(consumers, seed=seed, dts_per_feeder=max(1, dts // feeders), feeders_per_substation=10)
    topo = MemoryTopology.from_model(model)
    storm = compress_restorations(make_storm(model, gasps, seed, spurious=0), restore_after_s)
    out: dict[str, Any] = {
        "network": {"feeders": len(topo.feeders), "dts": len(topo.dts), "meters": len(topo.places)},
        "storm": {"events": len(storm.events), "gasps": sum(1 for _, e in storm.events if e.code == 101),
                  "breaths": sum(1 for _, e in storm.events if e.code == 102),
                  "meters_out": storm.gasps, "feeders_tripped": len(storm.feeders), "dts_out": len(storm.dts),
                  "singles": len(storm.singles), "nested_expected": len(storm.nested),
                  "gasps_span_s": round(max(a for a, e in storm.events if e.code == 101) - storm.events[0][0], 1),
                  "restore_after_s": restore_after_s},
        "cores": os.cpu_count(), "load_average_start": round(os.getloadavg()[0], 2)}
    say(f"storm: {out['storm']['events']:,} events ({out['storm']['gasps']:,} gasps, {out['storm']['breaths']:,} "
        f"breaths) on {out['network']['feeders']} feeders, {out['network']['dts']} DTs, "
        f"{out['network']['meters']:,} meters")
    say("loading the network store ...")
    open_store(work / "network.sqlite").apply(model.creates())
    out["setup_s"] = round(time.perf_counter() - started, 1)
    with broker(work, say) as (url, broker_pid):
        b = Bench(work, url, broker_pid, say)
        route = write_routes(b.routes)
        out["route"] = {"options": route["options"], "correlate": route.get("correlate", {})}
        say(f"route {ROUTE}: options {route['options']}, correlate {route.get('correlate', {})}")
        declare(b.routes, url, b.env)
        b.queues = Queues(url, int(route.get("correlate", {}).get("partitions", 4)))
        try:
            b.start_adms()
            if "latency" in phases:
                out["latency"] = b.latency(storm, float(route["options"].get("restore_wait_s", 60)))
            if "throughput" in phases:
                one = b.throughput(storm, "one", [None], restore_after_s)
                two = b.throughput(storm, "two", ["0,1", "2,3"], restore_after_s)
                two["same_outages_as_one"] = one["outcome"] == two["outcome"]
                two["only_with_one"] = [list(k) for k in (one["outcome"] - two["outcome"])][:10]
                two["only_with_two"] = [list(k) for k in (two["outcome"] - one["outcome"])][:10]
                one["outcome"] = two["outcome"] = None
                out["throughput"] = [one, two]
            if "baseline" in phases:
                out["baseline"] = b.baseline(storm)
        except BaseException:
            say(f"logs in {b.logs}")
            raise
        finally:
            for p in list(b.procs.values()):
                terminate(p)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    out["total_s"] = round(time.perf_counter() - started, 1)
    return out


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def table_rows(r: dict) -> list[list[str]]:
    rows: list[list[str]] = []
    s = r["storm"]
    rows.append(["storm", f"{s['events']:,} events: {s['gasps']:,} gasps ({s['meters_out']:,} meters out) and "
                          f"{s['breaths']:,} first breaths; {s['feeders_tripped']} feeders tripped, {s['dts_out']} "
                          f"single DTs, {s['singles']:,} single meters; network {r['network']['feeders']} feeders, "
                          f"{r['network']['dts']} DTs, {r['network']['meters']:,} meters"])
    if "latency" in r:
        lt = r["latency"]
        acc = lt["accuracy"]
        for kind, label in (("feeder", "feeder outages"), ("dt", "DT outages"), ("singles", "single-customer outages"),
                            ("nested", "nested outages")):
            k = acc[kind]
            rows.append([f"{label}: precision / recall (found / truth)",
                         f"{_pct(k['precision'])} / {_pct(k['recall'])} ({k['found']} / {k['truth']})"
                         + (f" false {k['false']}" if k["false"] else "") + (f" missed {k['missed']}" if k["missed"] else "")])
        rows.append(["false outages (feeder + DT not in the truth)",
                     str(len(set(acc['feeder']['false'])) + len(set(acc['dt']['false'])))])
        rows.append(["DT outages announced, then absorbed into their feeder", str(acc["absorbedAnnounced"])])
        for key, label in (("latency_s", "feeder and DT"), ("latency_feeder_s", "feeder"), ("latency_dt_s", "DT")):
            lat = acc[key]
            rows.append([f"declaration latency, {label} outages, p50 / p99 / max s",
                         f"{lat['p50']} / {lat['p99']} / {lat['max']}"])
        a = lt["adms"]
        rows.append(["at the ADMS (latency run)", f"{a['outages']} outages {a['by_kind']}, {a['messages']} messages, "
                     f"{a['open']} open; closed {a['closed_by_reason']} {a['closed_duration']}; "
                     f"duplicates dropped {lt['adms_duplicates']}"])
        rows.append(["latency run: documents, storm length, publication lag p50 / max",
                     f"{lt['documents']:,} documents over {lt['storm_s']} s, lag {lt['publish_lag_s']['p50']} / "
                     f"{lt['publish_lag_s']['max']} s"])
        rows.append(["latency run: CPU s", ", ".join(f"{k} {v}" for k, v in lt["cpu_s"].items())])
    for t in r.get("throughput", []):
        label = f"correlator, {t['processes']} process(es) ({', '.join(t['partitions'])})"
        rows.append([f"{label}: backlog of {t['events']:,} events drained, from process start",
                     f"{t['drained_s']} s = {t['events_per_s']:,} events/s (first to last batch: {t['steady_s']} s = "
                     f"{t['events_per_s_steady']:,}/s)"])
        rows.append([f"{label}: CPU s", ", ".join(f"{k} {v}" for k, v in t["cpu_s"].items())
                     + f"; correlator {t['events'] / max(t['correlator_cpu_s'], 0.01):,.0f} events per CPU s"])
        acc = t["accuracy"]
        rows.append([f"{label}: feeder / DT / nested precision, recall",
                     f"{_pct(acc['feeder']['precision'])} {_pct(acc['feeder']['recall'])} / "
                     f"{_pct(acc['dt']['precision'])} {_pct(acc['dt']['recall'])} / "
                     f"{_pct(acc['nested']['precision'])} {_pct(acc['nested']['recall'])}; {t['adms']['outages']} outages"
                     + (f"; same outages as one process: {t['same_outages_as_one']}" if "same_outages_as_one" in t else "")])
        a = t["adms"]
        rows.append([f"{label}: at the ADMS", f"{a['outages']} outages {a['by_kind']}, {a['open']} open; closed "
                     f"{a['closed_by_reason']} {a['closed_duration']}; events a partition took after its first tick: "
                     f"{t['events_after_first_tick']:,}"])
    if "baseline" in r:
        bl = r["baseline"]
        rows.append([f"baseline: raw-event route, worker -c 2, {bl['events']:,} events drained to the ADMS, from "
                     "worker start", f"{bl['drained_s']} s = {bl['events_per_s']:,} events/s (first to last: "
                     f"{bl['steady_s']} s = {bl['events_per_s_steady']:,}/s); {bl['distinct_events']:,} distinct "
                     f"events in {bl['posts']} POSTs"])
        rows.append(["baseline: CPU s", ", ".join(f"{k} {v}" for k, v in bl["cpu_s"].items())])
        if r.get("throughput"):
            one = r["throughput"][0]
            rows.append(["correlator (1 process) / raw route, events/s", f"{one['events_per_s'] / bl['events_per_s']:.2f}"])
    rows.append(["load average (1 min) start / end, cores",
                 f"{r['load_average_start']} / {r['load_average_end']} on {r['cores']}; whole run {r['total_s']} s"])
    return rows


def main(argv: list[str] | None = None) -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gasps", type=int, default=200_000)
    p.add_argument("--consumers", type=int, default=100_000)
    p.add_argument("--feeders", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--restore-after", type=float, default=360.0)
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--dir", type=Path)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    work = a.dir or Path(tempfile.mkdtemp(prefix="gridbus-bench-outages-"))
    r = bench_outages(work, a.gasps, a.consumers, a.feeders, a.seed, a.restore_after,
                      tuple(x for x in a.phases.split(",") if x), say=lambda m: print(m, file=sys.stderr, flush=True))
    if a.json:
        print(json.dumps(r, indent=2, default=str))
    else:
        for measure, value in table_rows(r):
            print(f"{measure}: {value}")
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
