"""Use case 3 as real processes: a generated network in a network store, `gridbus outages run`
(one or two), the ADMS stand-in consuming its queue over AMQP, and a way to publish outage events
as the alarm routes do (canonical EndDeviceEvents on the correlate route's queue).

The route's thresholds are shortened so that a test takes seconds (the rules are the same; the
unit tests run them at their defaults): window 10 s, feeder hold 2 s, single hold 4 s,
restoration wait 2 s, ticks every 0.2 s.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import requests

from bus import naming, task_message
from bus.broker_admin import BrokerAdmin
from bus.envelope import Envelope
from bus.messaging import ConfirmingPublisher
from bus.network.store import open_store
from bus.outages import MemoryTopology
from bus.outages.events import iso
from bus.outages.store import open_outage_store
from simulators.network import NetworkModel
from tests.support import Mdms, Proc, gridbus, run_cli, wait_for

ROUTE = "outages-to-adms"
ADMS_QUEUE = "adms.outages"

ROUTE_FILE = """
use_case: 3
title: outage identification (test thresholds)
routes:
  - id: outages-to-adms
    description: last gasps and first breaths into CIM Outages
    source: {system: adms, connector: subscription, topic: "EndDeviceEvents.created.*", classes: [outage]}
    method: correlate
    options: {window_s: 10, feeder_hold_s: 2, feeder_window_s: 10, single_hold_s: 4, restore_wait_s: 2,
              repeat_s: 2, momentary_s: 300, verify_meters: %(verify)d}
    correlate: {partitions: %(partitions)d, tick_s: 0.2, skew_s: 0.3, checkpoint_s: %(checkpoint)s%(verify_route)s}
    destinations:
      - {system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, queue: adms.outages}
"""

VERIFY_ROUTE = """
  - id: outages-verify-reads
    use_case: 7
    description: AMI pings of new outages
    source: {system: outages, connector: bus-request, kind: meter-readings, timeout_s: 10}
    method: request-response
    destinations:
      - system: hes
        connector: hes-request
        operation: meter-readings
        assignment: "${GRIDBUS_METER_ASSIGNMENT}"
        hes: {hes-a: "${HES_A_URL}", hes-b: "${HES_B_URL}"}
        timeout_s: 5
    retry: {attempts: 2, first_delay_s: 1, max_delay_s: 2}
"""

_MODEL: list = []


def model() -> NetworkModel:
    """10 feeders of 6 DTs, 6,000 consumers (the unit tests' network)."""
    if not _MODEL:
        _MODEL.append(NetworkModel.generate(6000, seed=11, dts_per_feeder=6, feeders_per_substation=5))
    return _MODEL[0]


class OutageStack:
    def __init__(self, env: dict, tmp: Path, partitions: int = 2, verify: bool = False, checkpoint_s: float = 2):
        self.env, self.tmp = env, tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.topo = MemoryTopology.from_model(model())
        network = tmp / "network.sqlite"
        open_store(network).apply(model().creates())
        env["GRIDBUS_NETWORK_STORE"] = str(network)
        env["GRIDBUS_OUTAGE_STORE"] = str(tmp / "outages.sqlite")
        routes = tmp / "routes.yaml"
        routes.write_text(ROUTE_FILE % {
            "partitions": partitions, "checkpoint": checkpoint_s, "verify": 3 if verify else 0,
            "verify_route": ", verify_route: outages-verify-reads" if verify else ""}
            + (VERIFY_ROUTE if verify else ""))
        env["GRIDBUS_ROUTES"] = str(routes)
        self.partitions = partitions
        self.hes: dict[str, Mdms] = {}
        self.workers: list[Proc] = []
        if verify:  # two HES stand-ins (odd serials on HES-A, even on HES-B) and a request worker
            meters = sorted({m for d in self.topo.dts.values() for m in (*d.meters, d.dt_meter) if m}
                            | {f.head_meter for f in self.topo.feeders.values() if f.head_meter})
            self.hes_of = {m: "hes-a" if int(m[-1]) % 2 else "hes-b" for m in meters}
            assignment = tmp / "assignment.csv"
            assignment.write_text("meter,hes\n" + "".join(f"{m},{h}\n" for m, h in self.hes_of.items()))
            self.hes = {name: Mdms(env, self.logs, name, "simulators.hes") for name in ("hes-a", "hes-b")}
            env.update({"GRIDBUS_METER_ASSIGNMENT": str(assignment), "HES_A_URL": self.hes["hes-a"].url,
                        "HES_B_URL": self.hes["hes-b"].url})
        applied = run_cli(env, "routes", "apply")
        assert applied.returncode == 0, applied.stderr
        self.broker_url = env["GRIDBUS_BROKER_URL"]
        self.admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], self.broker_url.rsplit("/", 1)[1])
        self.adms = Mdms(env, self.logs, name="adms", module="simulators.adms",
                         args=("--amqp-url", self.broker_url, "--amqp-queue", ADMS_QUEUE))
        self.correlators: list[Proc] = []
        if verify:
            self.workers.append(Proc("worker-requests", gridbus("worker", "--kind", "requests"), env, self.logs).start())
            wait_for(lambda: self.admin.queue(naming.route_queue_name("outages-verify-reads")).get("consumers", 0) > 0,
                     60, f"the request worker ({self.workers[0].log()[-1500:]})")
        self.publisher = ConfirmingPublisher(self.broker_url, "test-hes-events")
        self.ids = itertools.count(1)

    # -- processes ---------------------------------------------------------------------------------
    def start(self, name: str = "outages", *args: str) -> Proc:
        proc = Proc(f"{name}-{len(self.correlators)}", gridbus("outages", "run", *args), self.env, self.logs).start()
        self.correlators.append(proc)
        return proc

    def wait_consuming(self, partitions=None, timeout_s: float = 60) -> None:
        """Until every partition queue (or those given) has a consumer, and the route queue too."""
        queues = [naming.route_queue_name(ROUTE)] + [f"gridbus.outages.{ROUTE}.{p}"
                                                     for p in (partitions if partitions is not None
                                                               else range(self.partitions))]

        def consumed():
            try:
                return all(self.admin.queue(q).get("consumers", 0) > 0 for q in queues)
            except Exception:  # noqa: BLE001 - not declared yet
                return False
        wait_for(consumed, timeout_s, f"consumers on {queues} ({self.log_tail()})")

    def log_tail(self) -> str:
        return " | ".join(f"{p.name}: {p.log()[-1500:]}" for p in self.correlators)

    def out_at_hes(self, meters) -> None:
        """The HES stand-ins simulate an outage of ``meters``: their reads answer unreachable."""
        for name, hes in self.hes.items():
            mine = [m for m in meters if self.hes_of.get(m) == name]
            if mine:
                requests.post(f"{hes.url}/_outages", json={"meters": mine}, timeout=5).raise_for_status()

    def stop(self) -> None:
        for p in self.correlators + self.workers:
            p.stop()
        for hes in self.hes.values():
            hes.stop()
        self.adms.stop()
        self.publisher.close()

    # -- events as the alarm routes publish them ---------------------------------------------------
    def send(self, events: list[tuple[str, int, float]], hes: str = "hes-a", chunk: int = 500,
             received_late_s: float = 1.0) -> list[str]:
        """(meter, 101|102, event time) as canonical EndDeviceEvents on the route queue, ``chunk``
        per document; returns the alarm ids."""
        ids = []
        for i in range(0, len(events), chunk):
            doc_events = []
            for meter, code, at in events[i:i + chunk]:
                alarm = f"A{next(self.ids):08d}"
                ids.append(alarm)
                doc_events.append({"meter": meter, "isCode": code, "createdDateTime": iso(at),
                                   "receivedDateTime": iso(at + received_late_s), "alarmId": alarm})
            self.send_document({"noun": "EndDeviceEvents", "source": hes, "EndDeviceEvent": doc_events})
        return ids

    def send_document(self, doc, message_id: str | None = None) -> str:
        mid = message_id or f"doc-{next(self.ids)}.{ROUTE}"
        envelope = Envelope(route_id=ROUTE, source=doc.get("source", "hes-a") if isinstance(doc, dict) else "x",
                            verb="created", noun="EndDeviceEvents", message_id=mid)
        body, props, headers = task_message.build(envelope, doc)
        self.publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(ROUTE), body, props, headers)
        self.publisher.flush()
        return mid

    def send_raw(self, body: bytes, headers: dict | None = None) -> None:
        self.publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(ROUTE), body,
                               {"delivery_mode": 2}, headers or {})
        self.publisher.flush()

    # -- what the ADMS has -------------------------------------------------------------------------
    def adms_outages(self, open_only: bool = False) -> list[dict]:
        r = requests.get(f"{self.adms.url}/outages" + ("?open=1" if open_only else ""), timeout=5)
        r.raise_for_status()
        return r.json()["outages"]

    def adms_outage(self, mrid: str) -> dict:
        r = requests.get(f"{self.adms.url}/outages/{mrid}", timeout=5)
        r.raise_for_status()
        return r.json()

    def wait_adms(self, condition, timeout_s: float, what: str):
        return wait_for(lambda: condition(self.adms_outages()), timeout_s,
                        f"{what} at the ADMS (have {self.adms_summary()}; {self.log_tail()})", every_s=0.3)

    def adms_summary(self) -> list:
        try:
            return [(o.get("mRID"), kind(o), o.get("verb")) for o in self.adms_outages()]
        except Exception as exc:  # noqa: BLE001 - for a failure message only
            return [repr(exc)]

    def store(self):
        return open_outage_store(self.env["GRIDBUS_OUTAGE_STORE"])

    # -- the network -------------------------------------------------------------------------------
    def feeder(self, k: int) -> str:
        return sorted(self.topo.feeders)[k]

    def feeder_meters(self, feeder: str) -> list[str]:
        return [m for d in self.topo.feeders[feeder].dts for m in self.topo.dts[d].meters]

    def dt_meters(self, dt: str) -> list[str]:
        return list(self.topo.dts[dt].meters)


def kind(o: dict) -> str:
    """The kind of an outage as the ADMS keeps it (its latest document's)."""
    return (o.get("Outage") or {}).get("kind", "")


def now() -> float:
    return time.time()


def storm(stack: "OutageStack", t0: float) -> tuple[list[tuple[str, int, float]], set[tuple[str, str]]]:
    """Three whole feeders, four whole DTs on other feeders and ten lone meters on yet others,
    every gasp within 8 s of ``t0``, in a shuffled (seeded) order, 5 % of them sent twice;
    with the outages they must make: {(kind, equipment)}."""
    import random

    rng = random.Random(7)
    feeders = [stack.feeder(k) for k in (0, 1, 3)]
    dts = [stack.topo.feeders[stack.feeder(k)].dts[i] for k, i in ((5, 0), (5, 3), (7, 1), (9, 4))]
    lone_dts = [stack.topo.feeders[stack.feeder(k)].dts[i] for k in (2, 4) for i in range(5)]
    lone = [stack.dt_meters(d)[7] for d in lone_dts]
    meters = [m for f in feeders for m in stack.feeder_meters(f)] + [m for d in dts for m in stack.dt_meters(d)] + lone
    events = [(m, 101, t0 + rng.uniform(0, 8)) for m in meters]
    events += rng.sample(events, len(events) // 20)
    rng.shuffle(events)
    truth = {("feeder", f) for f in feeders} | {("dt", d) for d in dts} | {("single", m) for m in lone}
    return events, truth


def of(outages: list[dict], *equipment: str) -> list[dict]:
    """The outages (as the ADMS has them) of this equipment, or nested under it."""
    wanted = set(equipment)
    return [o for o in outages if o["Outage"]["Equipment"]["mRID"] in wanted
            or o["Outage"].get("feeder") in wanted]
