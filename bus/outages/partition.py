"""One partition of a correlate route: its engine, fed from its partition queue, with its state in
the outage store so that a kill -9 loses, duplicates and reopens nothing.

Every input of the engine arrives on the partition queue, in one order: the router's event
batches, the watermark's ticks (``gridbus outages run`` publishes one every ``tick_s``) and the
replies to its verifications (their ``reply_to`` is this queue).  For each batch of deliveries:

1. the inputs are applied to the engine (events with the clock they were taken at, ticks,
   answers), which decides;
2. in **one transaction**: the inputs are appended to the partition's log (``seq``), the
   decisions written to the outbox, the outages table and the timelines;
3. the batch is acked (the consumer does it when ``handle`` returns), after
4. the outbox is published with confirms (Outage documents to the destination, verification
   requests on the verify route) and marked sent;
5. every ``checkpoint_s`` the engine's snapshot is saved with its ``seq``, and the log up to it
   deleted.

A restart (or a standby taking the partition over) restores the checkpoint, replays the log after
it (the engine is deterministic: the same inputs decide the same messages, with the same ids,
already in the outbox), and sends what the outbox holds unsent.  A batch redelivered because its
ack was lost is applied again and decides nothing: its event ids are in the engine's ``seen``,
a tick never moves the watermark back, and an answered verification is not answered twice.
If anything fails between 1 and 2 the engine is dropped and rebuilt from the store before the
next batch, so the engine is never ahead of what the store holds.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Callable

import orjson

from bus import hooks, naming, registry
from bus.deadletters import headers as dl
from bus.errors import BrokerError
from bus.messaging import ConfirmingPublisher, Delivery
from bus.outages import names, verify
from bus.outages.engine import OID, OutageEngine
from bus.outages.events import MeterEvent
from bus.outages.rules import Options
from bus.outages.store import OutageStore
from bus.outages.topology import Topology
from bus.routes.model import Route

log = logging.getLogger("gridbus.outages")
EVENTS, TICK, ANSWER = "ev", "tick", "ans"
TIMELINE_METERS = 50  # meters named per "joined" line of a timeline (the count is always whole)


class BadInput(ValueError):
    """A delivery on a partition queue that is no input of the correlator."""


def event_row(e: MeterEvent) -> list:
    return [e.meter, e.code, e.at, e.received, e.hes, e.message_id]


def event_of(row: Any) -> MeterEvent:
    if not (isinstance(row, list) and len(row) == 6 and isinstance(row[0], str) and row[1] in (101, 102)
            and isinstance(row[2], (int, float)) and (row[3] is None or isinstance(row[3], (int, float)))):
        raise BadInput(f"not an event row: {str(row)[:200]}")
    return MeterEvent(row[0], int(row[1]), float(row[2]), None if row[3] is None else float(row[3]),
                      str(row[4] or ""), str(row[5] or ""))


class PartitionCorrelator:
    def __init__(self, route: Route, partition: int, store: OutageStore, topology_of: Callable[[], Topology],
                 publisher: ConfirmingPublisher, verify_route: Route | None = None,
                 clock: Callable[[], float] = time.time):
        self.route, self.partition, self.store = route, partition, store
        self.topology_of = topology_of
        self.options = Options.from_mapping(route.options)
        self.n = route.correlate.partitions
        self.publisher, self.verify_route, self.clock = publisher, verify_route, clock
        self.destination = route.destinations[0]
        self.connector = registry.connector(self.destination.connector)
        self.queue = names.partition_queue(route.id, partition)
        self.engine: OutageEngine | None = None
        self.seq = 0
        self.last_checkpoint = 0.0
        self.last_prune = 0.0
        self.counts: dict[str, int] = defaultdict(int)

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """The engine as the store has it: the checkpoint, then the log after it; then the outbox."""
        started = time.monotonic()
        cp = self.store.checkpoint(self.route.id, self.partition)
        if cp is None:
            seq, engine = 0, OutageEngine(self.topology_of(), self.options, (self.partition, self.n))
        else:
            seq, state = cp
            engine = OutageEngine.restore(state, self.topology_of(), self.options)
        replayed = 0
        self.engine = engine
        for seq, inputs in self.store.log_after(self.route.id, self.partition, seq):
            decisions = self._apply(inputs)
            if decisions:  # normally already in the outbox: written with the batch that decided them
                with self.store.writing():
                    self._record(seq, inputs, decisions, None)
            replayed += 1
        self.seq = max(seq, self.store.last_seq(self.route.id, self.partition))
        self.last_checkpoint = time.monotonic()
        log.info("%s/%d: state loaded (checkpoint %s, %d logged batch(es) replayed, %.2f s)", self.route.id,
                 self.partition, "none" if cp is None else cp[0], replayed, time.monotonic() - started)
        self.send_unsent()

    # -- one batch -------------------------------------------------------------------------------
    def handle(self, batch: list[Delivery]) -> None:
        if self.engine is None:
            self.load()
        inputs, bad = [], []
        now = self.clock()
        for d in batch:
            try:
                inputs.extend(self._inputs(d, now))
            except BadInput as exc:
                bad.append((d, str(exc)))
        inputs = _merge_ticks(inputs)
        if bad:
            self._dead_letter(bad)
        if inputs:
            try:
                decisions = self._apply(inputs)
                self.seq += 1
                with self.store.writing():
                    self.store.append(self.route.id, self.partition, self.seq,
                                      [{k: v for k, v in i.items() if k != "_events"} for i in inputs])
                    self._record(self.seq, inputs, decisions, batch)
            except BaseException:
                self.engine = None  # it is ahead of the store: rebuilt from the store before the next batch
                raise
            self._trace(inputs)
        self.send_unsent()
        if time.monotonic() - self.last_checkpoint >= self.route.correlate.checkpoint_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.engine is None:
            return
        self.store.save_checkpoint(self.route.id, self.partition, self.seq, self.engine.snapshot())
        self.last_checkpoint = time.monotonic()
        if self.partition == 0 and self.last_checkpoint - self.last_prune >= 3600:  # one partition prunes, hourly
            self.last_prune = self.last_checkpoint
            pruned = self.store.prune(self.route.id, self.clock() - self.route.correlate.keep_days * 86400)
            if pruned:
                log.info("%s: %d outage(s) closed more than %g days ago forgotten", self.route.id, pruned,
                         self.route.correlate.keep_days)

    def _inputs(self, d: Delivery, now: float) -> list[dict]:
        props, headers = d.properties, d.headers
        if verify.is_reply(props, headers):
            try:
                request_id, answers = verify.answers_of(props, headers, d.body)
            except ValueError as exc:
                raise BadInput(f"a verification reply that cannot be read: {exc}") from exc
            if answers is None:  # the HES could not be asked: the outage stays estimated
                return [{"t": ANSWER, "id": request_id, "a": None}]
            return [{"t": ANSWER, "id": request_id, "a": {m: bool(v) for m, v in answers.items()}}]
        try:
            body = orjson.loads(d.body)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadInput("not a JSON object")
        kind = body.get("t")
        if kind == TICK:
            w = body.get("w")
            if type(w) not in (int, float) or not (0 <= w < 1e11):
                raise BadInput(f"a tick without a usable watermark: {str(w)[:50]}")
            return [{"t": TICK, "w": float(min(w, now))}]  # a tick from a clock ahead of ours waits for ours
        if kind == EVENTS:
            rows = body.get("ev")
            if not isinstance(rows, list):
                raise BadInput("an events message without its list of events")
            src = body.get("src")
            if src is None:  # a router of before: one route message per partition message
                src = [[str(body.get("msg") or ""), len(rows)]]
            elif not (isinstance(src, list) and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                                                     and type(x[1]) is int and x[1] >= 0 for x in src)
                      and sum(x[1] for x in src) == len(rows)):
                raise BadInput("an events message whose src does not account for its rows")
            # each row checked before the batch is taken, and read once ("_events" is not logged)
            return [{"t": EVENTS, "now": now, "src": src, "ev": rows, "_events": [event_of(row) for row in rows]}]
        raise BadInput(f"unknown input type {str(kind)[:40]!r}")

    def _apply(self, inputs: list[dict]) -> list[dict]:
        """The inputs in order; consecutive event messages are one call of the engine (one
        prefetch of the network for all of them), as the log's replay groups them too."""
        engine, out, events, now = self.engine, [], [], None
        for inp in inputs + [{"t": None}]:
            t = inp["t"]
            if t == EVENTS and (now is None or inp["now"] == now):
                got = inp.get("_events")
                events += got if got is not None else [event_of(r) for r in inp["ev"]]
                now = inp["now"]
                continue
            if events:
                out += engine.process(events, now)
                events, now = [], None
            if t == EVENTS:  # taken at another clock (another batch's, in a replay): a call of its own
                got = inp.get("_events")
                events, now = (got if got is not None else [event_of(r) for r in inp["ev"]]), inp["now"]
            elif t == TICK:
                out += engine.advance(inp["w"])
            elif t == ANSWER and inp["a"] is not None:
                out += engine.answer(inp["id"], inp["a"])
        return out

    def _record(self, seq: int, inputs: list[dict], decisions: list[dict], batch) -> None:
        """Inside the batch's transaction: the outbox, the outages and the timelines."""
        messages, timeline = [], []
        at = self.engine.watermark or self.clock()
        for d in decisions:
            if d["type"] == "outage":
                doc = d["Outage"]
                messages.append((d["messageId"], doc["mRID"], "outage", d["verb"], d))
                self.store.put_outage(self.route.id, self.partition, doc, "closed" if d["verb"] == "closed" else "open")
                timeline.append((doc["mRID"], at, d["verb"], {
                    "messageId": d["messageId"], "metersAffected": doc.get("metersAffected"),
                    "outageKind": doc.get("outageKind"), "durationKind": doc.get("durationKind"),
                    **({"closedReason": doc["closedReason"]} if doc.get("closedReason") else {})}))
            elif d["type"] == "verify":
                messages.append((d["requestId"], d["outage"], "verify", "ask", d))
                timeline.append((d["outage"], at, "verification asked", {"meters": d["meters"]}))
        if batch is not None:  # what the inputs did (not on a replay: it was written the first time)
            for inp in inputs:
                if inp["t"] == ANSWER:
                    mrid = inp["id"].rsplit("/", 1)[0]
                    timeline.append((mrid, at, "verification answered" if inp["a"] is not None else
                                     "verification not answered", {"answers": inp["a"]}))
            for mrid, meters in self._joined(inputs).items():
                timeline.append((mrid, at, "gasps joined", {"count": len(meters), "meters": meters[:TIMELINE_METERS]}))
        self.store.add_messages(self.route.id, self.partition, seq, messages)
        self.store.add_timeline(timeline)

    def _joined(self, inputs: list[dict]) -> dict[str, list[str]]:
        """outage → meters whose gasp in ``inputs`` it holds now (pending gasps join later)."""
        out, joined = self.engine.out, defaultdict(list)
        for inp in inputs:
            if inp["t"] == EVENTS:
                for row in inp["ev"]:
                    rec = out.get(row[0]) if row[1] == 101 else None
                    if rec is not None and rec[OID] is not None:
                        joined[rec[OID]].append(row[0])
        return joined

    def _trace(self, inputs: list[dict]) -> None:
        """Per source message: which outage each meter's gasp is in (``gridbus trace --meter``)."""
        out = self.engine.out
        for inp in inputs:
            if inp["t"] != EVENTS:
                continue
            rows, at = inp["ev"], 0
            for mid, n in inp["src"]:
                by_outage: dict[str, list[str]] = defaultdict(list)
                for row in rows[at:at + n]:
                    rec = out.get(row[0]) if row[1] == 101 else None
                    by_outage[(rec[OID] or "pending") if rec is not None else "no outage"].append(row[0])
                at += n
                if not mid:
                    continue
                for outage, meters in by_outage.items():
                    hooks.emit("outage.correlated", message_id=mid, route=self.route.id, outage=outage,
                               partition=self.partition, meters=meters)

    # -- sending ---------------------------------------------------------------------------------
    def send_unsent(self) -> int:
        unsent = self.store.unsent(self.route.id, self.partition)
        if not unsent:
            return 0
        sent = []
        for mid, kind, body in unsent:
            if kind == "outage":
                payload = orjson.dumps(body)
                self.publisher.publish(*self.connector.message(
                    self.destination, payload, mid, "application/json",
                    {"gridbus-route": self.route.id, "gridbus-verb": body["verb"], "gridbus-noun": "Outage"}))
            elif kind == "verify" and self.verify_route is not None:
                self.publisher.publish(*verify.verify_message(self.verify_route, body, self.queue))
            sent.append(mid)
        self.publisher.flush()
        self.store.mark_sent(sent)
        self.counts["sent"] += len(sent)
        return len(sent)

    def _dead_letter(self, bad: list[tuple[Delivery, str]]) -> None:
        for d, why in bad:
            headers = {**d.headers, **dl.reason_headers(self.route.id, self.destination.system, "BadInput",
                                                         why[:2000], attempts=1, grouped_by=why[:80])}
            properties = {k: v for k, v in d.properties.items() if k != "delivery_mode"}
            self.publisher.publish("", naming.dead_letter_queue_name(self.route.id), d.body[:1_000_000],
                                   {**properties, "delivery_mode": 2}, headers)
            log.error("%s/%d: dead-lettered a delivery that is no input: %s", self.route.id, self.partition, why)
        self.publisher.flush()
        self.counts["dead_lettered"] += len(bad)


def _merge_ticks(inputs: list[dict]) -> list[dict]:
    """Consecutive ticks are one (the latest): the watermark only moves forward."""
    merged: list[dict] = []
    for inp in inputs:
        if inp["t"] == TICK and merged and merged[-1]["t"] == TICK:
            merged[-1] = {"t": TICK, "w": max(merged[-1]["w"], inp["w"])}
        else:
            merged.append(inp)
    return merged


def tick_message(route_id: str, partition: int, watermark: float) -> tuple:
    """(exchange, routing key, body, properties, headers) of a watermark tick: it expires after
    10 s, so ticks do not pile up while no process owns the partition."""
    return (names.EXCHANGE, names.partition_key(route_id, partition),
            orjson.dumps({"t": TICK, "w": watermark}), {"delivery_mode": 2, "expiration": "10000"}, {})


__all__ = ["PartitionCorrelator", "BadInput", "tick_message", "event_row", "event_of", "BrokerError"]
