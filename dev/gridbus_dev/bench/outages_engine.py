"""Throughput and accuracy of the outage correlator's engine alone (issue 19): no broker, no
store, the in-memory topology of a generated network.  A quick check, not a timed unit test.

    python -m gridbus_dev.bench.outages_engine [--gasps 200000] [--consumers 100000] [--feeders 40]
                                               [--seed 1] [--batch 1000] [--store] [--json]
                                               [--plc-share 0.23] [--late-share 0.02]
                                               [--option feeder_hold_s=30 ...]

``--store`` runs the same storm once more with the engine on the network store (the network
loaded into a throw-away SQLite store first): the store's bulk lookups and caches included.

The storm (``make_storm``), from ``simulators.network.NetworkModel`` (1,000 DTs across 40
feeders by default):
* whole feeders trip (every consumer and DT meter gasps; the head meter of every other one too);
* single DTs out on feeders that did not trip (at most 2 per feeder, below the feeder rule);
* partial DTs: 20-40 % of a DT's meters (a blown LT fuse): single-customer outages, not a DT;
* noise: random single meters elsewhere;
* duplicates: meters that repeat their gasp (new alarm id, seconds later) and redeliveries of
  the same message; delivery 1-10 s after the event, PLC batches ~30 s, 2 % up to 5 min late;
* the trips within 40 s, so all the gasps within about a minute; then restorations 30 min
  later with 5 meters left out of some DTs (nested outages expected).
Ground truth is what the generator did; the report: events/s of the engine alone, precision
and recall of DT and feeder outages, false outages, singles, nested outages, declaration latency
(simulated: from the arrival of the gasp that decided it, i.e. a DT's DT meter or the meter
completing its share, a feeder's head meter or its third DT so decided, to the arrival clock at
which the engine announced it), and two engines split by feeder
against one.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bus.outages import MemoryTopology, MeterEvent, Options, OutageEngine
from bus.outages.rules import needed
from simulators.network import NetworkModel

T0 = 1_793_491_800.0   # 2026-11-01T00:10:00Z


@dataclass
class Storm:
    events: list[tuple[float, MeterEvent]]          # (arrival, event), in arrival order
    feeders: set[str] = field(default_factory=set)  # ground truth: feeder outages
    dts: set[str] = field(default_factory=set)      # DT outages (on feeders that did not trip)
    singles: set[str] = field(default_factory=set)  # meters out alone (partial DTs, noise)
    nested: set[str] = field(default_factory=set)   # DTs with meters left out at restoration
    false_dts: set[str] = field(default_factory=set)  # DTs whose DT meter alone gasped (it failed)
    dead: dict[str, list[float]] = field(default_factory=dict)  # meter -> [out from, back at]
    gasps: int = 0
    share_arrival: dict[str, float] = field(default_factory=dict)   # equipment -> arrival that decides it

    def alive(self, meter: str, at: float) -> bool:
        """What an on-demand read of ``meter`` at ``at`` finds: the HES stand-ins' answer."""
        span = self.dead.get(meter)
        return span is None or not (span[0] <= at < span[1])


def make_storm(model: NetworkModel, gasps: int = 200_000, seed: int = 1, trip_share: float = 0.5,
               restore: bool = True, plc_share: float = 0.23, late_share: float = 0.02,
               spurious: int = 3) -> Storm:
    """The storm and its ground truth.  ``plc_share`` of the events come ~30 s late (a PLC
    concentrator's batch), ``late_share`` 1-5 minutes late; ``spurious`` DT meters gasp alone
    (the meter failed, not the DT: verification should find the DT's meters alive)."""
    rng = random.Random(seed)
    topo = MemoryTopology.from_model(model)
    feeders = sorted(topo.feeders)
    tripped = sorted(rng.sample(feeders, max(1, round(len(feeders) * trip_share))))
    others = [f for f in feeders if f not in tripped]
    storm = Storm([])
    storm.feeders = set(tripped)
    ids = iter(range(1, 1 << 40))
    plan: list[tuple[str, float, str]] = []        # (meter, event time, equipment)
    out_meters: dict[str, float] = {}

    def fail(meters: list[str], at: float, equipment: str) -> None:
        for m in meters:
            t = at + rng.uniform(0.0, 3.0)
            plan.append((m, t, equipment))
            out_meters[m] = t

    for f in tripped:
        at = T0 + rng.uniform(0, 40)
        for d in topo.feeders[f].dts:
            fail([*topo.dts[d].meters, topo.dts[d].dt_meter], at, f)
    partial_or_noise: list[str] = []
    for f in others:
        dts = list(topo.feeders[f].dts)
        rng.shuffle(dts)
        for d in dts[:rng.choice((0, 1, 2))]:       # whole DTs out, below the feeder rule
            storm.dts.add(d)
            fail([*topo.dts[d].meters, *([topo.dts[d].dt_meter] if rng.random() < 0.5 else [])],
                 T0 + rng.uniform(0, 40), d)
        for d in dts[2:3]:                          # a partial DT: 20-40 % of its meters
            meters = list(topo.dts[d].meters)
            share = rng.uniform(0.2, 0.4)
            chosen = rng.sample(meters, max(1, min(int(len(meters) * share), needed(0.6, len(meters)) - 1)))
            fail(chosen, T0 + rng.uniform(0, 40), d)
            partial_or_noise += chosen
        for d in dts[3:]:                           # noise: now and then one meter of a DT
            if rng.random() < 0.3:
                m = rng.choice(topo.dts[d].meters)
                fail([m], T0 + rng.uniform(0, 60), d)
                partial_or_noise.append(m)
            elif len(storm.false_dts) < spurious and rng.random() < 0.2:
                storm.false_dts.add(d)               # the DT meter fails: a gasp, no outage
                plan.append((topo.dts[d].dt_meter, T0 + rng.uniform(0, 60), d))
    storm.singles = set(partial_or_noise)
    storm.dead = {m: [t, float("inf")] for m, t in out_meters.items()}

    def deliver(m: str, t: float, code: int, late_ok: bool = True) -> None:
        r = rng.random()
        if late_ok and r < late_share:
            delay = rng.uniform(60, 300)            # up to 5 minutes late
        elif r < late_share + plc_share:
            delay = rng.uniform(25, 35)             # a PLC concentrator's batch
        else:
            delay = rng.uniform(1, 10)
        e = MeterEvent(m, code, t, t + delay, "hes-a" if int(m[3:]) % 2 else "hes-b", f"ev-{next(ids)}")
        storm.events.append((t + delay, e))
        if rng.random() < 0.01:                     # the same message delivered twice
            storm.events.append((t + delay + rng.uniform(0, 20), e))

    for m, t, _ in plan:
        deliver(m, t, 101)
    storm.gasps = len(plan)
    # repeats: meters that send their last gasp again (a new alarm id) seconds later
    while len(storm.events) < gasps and plan:
        m, t, _ = plan[rng.randrange(len(plan))]
        deliver(m, t + rng.uniform(1, 8), 101)
    if restore:
        back = T0 + 1800
        left_out_dts = set(rng.sample(sorted(storm.dts), min(5, len(storm.dts)))) if storm.dts else set()
        for f in tripped:
            at = back + rng.uniform(0, 60)
            d0 = topo.feeders[f].dts[0]
            left = set(topo.dts[d0].meters[:5]) if rng.random() < 0.3 else set()
            if left:
                storm.nested.add(d0)
            for d in topo.feeders[f].dts:
                for m in [*topo.dts[d].meters, topo.dts[d].dt_meter]:
                    if m not in left and m in out_meters:
                        back_at = at + rng.uniform(0, 5)
                        storm.dead[m][1] = back_at
                        deliver(m, back_at, 102, late_ok=False)
        for d in sorted(storm.dts):
            at = back + rng.uniform(0, 60)
            left = set(topo.dts[d].meters[:5]) if d in left_out_dts else set()
            if left:
                storm.nested.add(d)
            for m in [*topo.dts[d].meters, topo.dts[d].dt_meter]:
                if m not in left and m in out_meters:
                    back_at = at + rng.uniform(0, 5)
                    storm.dead[m][1] = back_at
                    deliver(m, back_at, 102, late_ok=False)
    storm.events.sort(key=lambda x: x[0])
    # when each outage could first be decided (by arrival): a DT's at its DT meter's first gasp
    # or at the first gasp of the meter that completes its share; a feeder's at its head meter's
    # or at the third of its DTs so decided
    first: dict[str, float] = {}
    for arrival, e in storm.events:
        if e.code == 101 and e.meter not in first:
            first[e.meter] = arrival

    def decided(d: str) -> float | None:
        info = topo.dts[d]
        a = sorted(first[m] for m in info.meters if m in first)
        k = needed(0.6, len(info.meters))
        times = [t for t in (first.get(info.dt_meter), a[k - 1] if len(a) >= k else None) if t is not None]
        return min(times) if times else None
    for d in storm.dts:
        if (t := decided(d)) is not None:
            storm.share_arrival[d] = t
    for f in tripped:
        per_dt = sorted(t for d in topo.feeders[f].dts if (t := decided(d)) is not None)
        times = [t for t in (first.get(topo.feeders[f].head_meter), per_dt[2] if len(per_dt) >= 3 else None)
                 if t is not None]
        if times:
            storm.share_arrival[f] = min(times)
    return storm


def drive(engines: list[OutageEngine], storm: Storm, batch: int = 1000, tick_s: float = 1.0,
          lag_s: float = 0.0, answer: bool = True) -> tuple[list[tuple[float, dict]], float, float]:
    """Feed the storm as a process would: in arrival order, a batch being what arrived within
    ``tick_s`` (at most ``batch`` events); the watermark moved to the arrival clock (minus
    ``lag_s``) before and after each batch, and every ``tick_s`` while nothing arrives.  Every
    engine gets every event (each keeps its own partition).  Returns (clock, decision) pairs and
    the engine's seconds spent: wall clock and CPU (this process's: on a busy machine the wall
    clock counts other processes' turns).  With ``answer``, each verification request is
    answered at once as the HES stand-ins would (``Storm.alive``)."""
    found: list[tuple[float, dict]] = []
    spent = cpu = 0.0

    class Out:
        """The decisions, each verification request answered as it comes."""

        def __iadd__(self, pairs: list[tuple[float, dict]]) -> "Out":
            for clock, d in pairs:
                found.append((clock, d))
                if answer and d["type"] == "verify":
                    replies = {m: storm.alive(m, clock) for m in d["meters"]}
                    self += [(clock, r) for r in current.answer(d["requestId"], replies)]
            return self
    out = Out()
    current = engines[0]
    events = storm.events
    n, i, clock = len(events), 0, None
    while i < n:
        first = events[i][0]
        j = i
        while j < n and j - i < batch and events[j][0] < first + tick_s:
            j += 1
        chunk = events[i:j]
        started, started_cpu = time.perf_counter(), time.process_time()
        for engine in engines:
            current = engine
            t = first if clock is None else clock + tick_s
            while t < first:                  # quiet seconds: the clock still ticks
                out += [(t, d) for d in engine.advance(t - lag_s)]
                t += tick_s
            # the clock as the first of the batch arrived, the batch, the clock at its last:
            # the watermark never passes an event that arrived and was not processed
            out += [(first, d) for d in engine.advance(first - lag_s)]
            out += [(chunk[-1][0], d) for d in engine.process((e for _, e in chunk), now=chunk[-1][0])]
            out += [(chunk[-1][0], d) for d in engine.advance(chunk[-1][0] - lag_s)]
        spent += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        clock, i = chunk[-1][0], j
    end = events[-1][0] + 3600 if events else T0
    started, started_cpu = time.perf_counter(), time.process_time()
    for engine in engines:
        current = engine
        t = (clock or end) + tick_s
        while t < end:
            out += [(t, d) for d in engine.advance(t)]
            t += 10 * tick_s
        out += [(end, d) for d in engine.advance(end)]
    spent += time.perf_counter() - started
    cpu += time.process_time() - started_cpu
    return found, spent, cpu


def score(storm: Storm, decisions: list[tuple[float, dict]]) -> dict[str, Any]:
    created: dict[str, tuple[float, dict]] = {}
    absorbed, false_alarms = set(), set()
    for clock, d in decisions:
        if d["type"] != "outage":
            continue
        doc = d["Outage"]
        if d["verb"] == "created":
            created[doc["mRID"]] = (clock, doc)
        elif d["verb"] == "closed" and doc.get("closedReason") == "absorbed":
            absorbed.add(doc["mRID"])
        elif d["verb"] == "closed" and doc.get("closedReason", "").startswith("false alarm"):
            false_alarms.add(doc["mRID"])
    by_kind: dict[str, dict[str, float]] = {"feeder": {}, "dt": {}, "single": {}, "nested": {}}
    for mrid, (clock, doc) in created.items():
        if (mrid in absorbed and doc["kind"] != "single") or mrid in false_alarms:
            continue
        by_kind[doc["kind"]].setdefault(doc["Equipment"]["mRID"], clock)

    def pr(found: set, truth: set) -> dict[str, Any]:
        hit = len(found & truth)
        return {"found": len(found), "truth": len(truth), "precision": hit / len(found) if found else 1.0,
                "recall": hit / len(truth) if truth else 1.0, "false": sorted(found - truth)[:10],
                "missed": sorted(truth - found)[:10]}
    def latency(kinds: tuple[str, ...]) -> dict[str, float | None]:
        found = sorted(by_kind[k][eq] - storm.share_arrival[eq] for k in kinds for eq in by_kind[k]
                       if eq in storm.share_arrival)

        def pct(p: float) -> float | None:
            return round(found[min(len(found) - 1, int(p * len(found)))], 2) if found else None
        return {"p50": pct(0.5), "p99": pct(0.99), "max": round(found[-1], 2) if found else None}
    nested_dts = {doc["Equipment"]["mRID"] for _, doc in created.values() if doc["kind"] == "nested"}
    return {"feeder": pr(set(by_kind["feeder"]), storm.feeders), "dt": pr(set(by_kind["dt"]), storm.dts),
            "singles": pr(set(by_kind["single"]), storm.singles),
            "nested": pr(nested_dts, storm.nested),
            "absorbedAnnounced": len([m for m in absorbed if created.get(m, (0, {}))[1].get("kind") != "single"]),
            "falseAlarms": pr({created[m][1]["Equipment"]["mRID"] for m in false_alarms if m in created},
                              storm.false_dts),
            "latency_s": latency(("feeder", "dt")), "latency_feeder_s": latency(("feeder",)),
            "latency_dt_s": latency(("dt",))}


def outcome(decisions: list[tuple[float, dict]]) -> dict[str, tuple]:
    """Each outage's messages (verb, kind, equipment, start, end, meters), for comparing runs."""
    out: dict[str, list] = {}
    for _, d in decisions:
        if d["type"] == "outage":
            doc = d["Outage"]
            out.setdefault(doc["mRID"], []).append((d["verb"], doc["kind"], doc["Equipment"]["mRID"],
                                                    doc["actualPeriod"]["start"], doc["actualPeriod"]["end"],
                                                    doc["metersAffected"], doc.get("closedReason")))
    return {k: tuple(v) for k, v in out.items()}


def bench(gasps: int, consumers: int, feeders: int, seed: int, batch: int, store_dir: str | None = None,
          plc_share: float = 0.23, late_share: float = 0.02, options: Options | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    dts = max(1, round(consumers / 100))
    model = NetworkModel.generate(consumers, seed=seed, dts_per_feeder=max(1, dts // feeders),
                                  feeders_per_substation=10)
    topo = MemoryTopology.from_model(model)
    storm = make_storm(model, gasps, seed, plc_share=plc_share, late_share=late_share)
    setup = time.perf_counter() - started
    options = options or Options()
    engine = OutageEngine(topo, options)
    one, spent, cpu = drive([engine], storm, batch)
    two_engines = [OutageEngine(topo, options, partition=(k, 2)) for k in range(2)]
    two, spent_two, _ = drive(two_engines, storm, batch)
    n = len(storm.events)
    on_store: dict[str, Any] | None = None
    if store_dir is not None:
        from pathlib import Path

        from bus.network.store import open_store
        from bus.outages import StoreTopology

        store = open_store(Path(store_dir) / "network.sqlite")
        loading = time.perf_counter()
        store.apply(model.creates())
        loaded = time.perf_counter() - loading
        store_topo = StoreTopology(store)
        on, spent_store, cpu_store = drive([OutageEngine(store_topo, options)], storm, batch)
        on_store = {"load_s": round(loaded, 1), "engine_s": round(spent_store, 2),
                    "events_per_s": round(n / spent_store), "events_per_cpu_s": round(n / cpu_store),
                    "queries": store_topo.queries,
                    "same_outages_as_memory": outcome(on) == outcome(one)}
    return {"on_store": on_store,"network": {"feeders": len(topo.feeders), "dts": len(topo.dts), "meters": len(topo.places)},
            "events": n, "gasps": sum(1 for _, e in storm.events if e.code == 101),
            "breaths": sum(1 for _, e in storm.events if e.code == 102),
            "setup_s": round(setup, 1), "engine_s": round(spent, 2), "events_per_s": round(n / spent),
            "engine_cpu_s": round(cpu, 2), "events_per_cpu_s": round(n / cpu),
            "two_engines_s": round(spent_two, 2),
            "accuracy": score(storm, one),
            "two_engines_same_outages": outcome(one) == outcome(two),
            "messages": sum(1 for _, d in one if d["type"] == "outage"),
            "verify_requests": sum(1 for _, d in one if d["type"] == "verify"),
            "engine_stats": engine.stats, "state_left": engine.size()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gridbus_dev.bench.outages_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--gasps", type=int, default=200_000)
    p.add_argument("--consumers", type=int, default=100_000)
    p.add_argument("--feeders", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--plc-share", type=float, default=0.23, help="share of events ~30 s late (PLC batches)")
    p.add_argument("--late-share", type=float, default=0.02, help="share of events 1-5 minutes late")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an engine option (docs/outages.md), e.g. feeder_hold_s=30; repeatable")
    p.add_argument("--store", action="store_true",
                   help="also run the engine on the network store (SQLite, the network loaded first)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    options = Options.from_mapping({k: float(v) for k, _, v in (o.partition("=") for o in a.option)})
    kw = {"plc_share": a.plc_share, "late_share": a.late_share, "options": options}
    if a.store:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="gridbus-bench-outages-") as work:
            r = bench(a.gasps, a.consumers, a.feeders, a.seed, a.batch, work, **kw)
    else:
        r = bench(a.gasps, a.consumers, a.feeders, a.seed, a.batch, **kw)
    if a.json:
        json.dump(r, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    acc = r["accuracy"]
    print(f"network: {r['network']['feeders']} feeders, {r['network']['dts']} DTs, {r['network']['meters']:,} meters")
    print(f"storm: {r['events']:,} events ({r['gasps']:,} gasps, {r['breaths']:,} breaths)")
    print(f"engine alone: {r['events_per_s']:,} events/s of wall clock ({r['engine_s']} s), "
          f"{r['events_per_cpu_s']:,} events per CPU second ({r['engine_cpu_s']} s)")
    print(f"two engines split by feeder (each fed every event, keeping its feeders): {r['two_engines_s']} s in all; "
          f"same outages as one engine: {r['two_engines_same_outages']}")
    if r["on_store"]:
        st = r["on_store"]
        print(f"on the network store (SQLite, loaded in {st['load_s']} s): {st['events_per_s']:,} events/s "
              f"of wall clock, {st['events_per_cpu_s']:,} per CPU second ({st['engine_s']} s, {st['queries']:,} "
              f"queries); same outages as in memory: "
              f"{st['same_outages_as_memory']}")
    for kind in ("feeder", "dt", "singles", "nested"):
        k = acc[kind]
        print(f"{kind:>8}: found {k['found']:>5} truth {k['truth']:>5}  precision {k['precision']:.3f}  "
              f"recall {k['recall']:.3f}" + (f"  false {k['false']}" if k["false"] else "")
              + (f"  missed {k['missed']}" if k["missed"] else ""))
    fa = acc["falseAlarms"]
    print(f"DT outages announced then absorbed into a feeder: {acc['absorbedAnnounced']}")
    print(f"false alarms (a DT meter gasping alone), closed after verification: {fa['found']} of "
          f"{fa['truth']}, precision {fa['precision']:.3f} recall {fa['recall']:.3f}")
    for what, key in (("DT and feeder", "latency_s"), ("feeder", "latency_feeder_s"), ("DT", "latency_dt_s")):
        lat = acc[key]
        print(f"declaration latency, {what} outages (simulated s): p50 {lat['p50']}, p99 {lat['p99']}, "
              f"max {lat['max']}")
    print(f"messages: {r['messages']:,} outage, {r['verify_requests']:,} verify; state left: {r['state_left']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
