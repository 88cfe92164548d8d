"""The outage engine's state: duplicates and replays decide nothing twice, a snapshot restores
the whole engine, two engines split by feeder decide what one does, and hostile input neither
crashes it nor grows its memory without bound."""
from __future__ import annotations

import json
import math

import pytest

from bus.outages import MemoryTopology, MeterEvent, Options, OutageEngine, partition_of
from bus.outages.topology import Place
from gridbus_dev.bench.outages_engine import drive, make_storm, outcome, score
from simulators.network import NetworkModel

from tests.unit.test_outage_rules import T0, Storm, outages

_CACHE: dict = {}


def small_storm():
    """A storm on ~120 DTs over 8 feeders: trips, single DTs, partial DTs, noise, duplicates, late
    gasps, restoration with meters left out."""
    if not _CACHE:
        model = NetworkModel.generate(12_000, seed=5, dts_per_feeder=15, feeders_per_substation=4)
        _CACHE["topo"] = MemoryTopology.from_model(model)
        _CACHE["model"] = model
        _CACHE["storm"] = make_storm(model, gasps=20_000, seed=5, spurious=0)
    return _CACHE["topo"], _CACHE["storm"]


def batches(storm, size=500):
    events = storm.events
    return [events[i:i + size] for i in range(0, len(events), size)]


def feed(engine, chunks, out=None):
    """As the process will: the clock as the batch's first event arrived, the batch, the clock at
    its last; decisions collected with the clock."""
    out = [] if out is None else out
    for chunk in chunks:
        out += [(chunk[0][0], d) for d in engine.advance(chunk[0][0])]
        out += [(chunk[-1][0], d) for d in engine.process((e for _, e in chunk), now=chunk[-1][0])]
        out += [(chunk[-1][0], d) for d in engine.advance(chunk[-1][0])]
    return out


def finish(engine, out):
    out += [(0, d) for d in engine.advance(engine.watermark + 7200)]
    return out


def test_the_storm_is_correlated_as_the_ground_truth_says():
    # Given the storm and its ground truth, with 3 DT meters that fail and gasp alone
    topo, _ = small_storm()
    storm = make_storm(_CACHE["model"], gasps=20_000, seed=6, spurious=3)
    assert len(storm.false_dts) == 3
    # When one engine correlates it, its verification requests answered as the HES would
    out, _, _ = drive([OutageEngine(topo)], storm)
    # Then every feeder and DT outage is found, none false, every partial DT a set of singles,
    # and the 3 lone DT meter gasps closed as false alarms by their verification
    s = score(storm, out)
    for kind in ("feeder", "dt", "singles", "nested", "falseAlarms"):
        assert (s[kind]["precision"], s[kind]["recall"]) == (1.0, 1.0), (kind, s[kind])
    assert s["latency_s"]["p99"] <= Options().window_s + 2


def test_every_event_delivered_twice_decides_nothing_twice():
    # Given the storm with every message delivered twice in a row (same message id)
    topo, storm = small_storm()
    twice = [x for pair in zip(storm.events, storm.events) for x in pair]
    # When correlated, and the storm once
    once_out = finish(e1 := OutageEngine(topo), feed(e1, batches(storm)))
    twice_out = finish(e2 := OutageEngine(topo), feed(e2, [twice[i:i + 1000] for i in range(0, len(twice), 1000)]))
    # Then the same outages, the same messages
    assert outcome(twice_out) == outcome(once_out)
    assert [d["messageId"] for _, d in twice_out if d["type"] == "outage"] == \
        [d["messageId"] for _, d in once_out if d["type"] == "outage"]
    assert e2.stats["duplicate"] >= len(storm.events)


def test_replay_after_restore_from_a_snapshot_duplicates_nothing():
    # Given an engine that took a snapshot mid-storm (stored as JSON), then went on
    topo, storm = small_storm()
    chunks = batches(storm)
    cut = len(chunks) // 3
    engine = OutageEngine(topo)
    feed(engine, chunks[:cut])
    saved = json.dumps(engine.snapshot())
    after = finish(engine, feed(engine, chunks[cut:]))
    # When it "crashed" and a new engine restores the snapshot, and the stream redelivers from a
    # few batches before the snapshot's position (events processed before and after it)
    restored = OutageEngine.restore(json.loads(saved), topo)
    replay = finish(restored, feed(restored, chunks[cut - 3:]))
    # Then it sends exactly what the first engine sent after the snapshot: same ids, same documents
    assert [(d.get("messageId"), d.get("Outage"), d.get("meters")) for _, d in replay] == \
        [(d.get("messageId"), d.get("Outage"), d.get("meters")) for _, d in after]
    mine, theirs = restored.snapshot(), engine.snapshot()
    assert mine.pop("stats")["duplicate"] > theirs.pop("stats").get("duplicate", 0)
    assert mine == theirs


def test_a_snapshot_holds_held_outages_open_verifications_and_timers():
    # Given a DT outage held for its feeder and a DT outage waiting for its verification answer
    topo = MemoryTopology.from_model(NetworkModel.generate(6000, seed=11, dts_per_feeder=6, feeders_per_substation=5))
    s = Storm()
    engine = OutageEngine(topo)
    engine.advance(T0)
    d1, d2 = topo.feeders["FDR-0001"].dts[0], topo.feeders["FDR-0002"].dts[0]
    out = engine.process([s.event(topo.dts[d1].dt_meter, 101, T0 + 1)])
    out += engine.advance(T0 + 30)
    [request] = [d for d in out if d["type"] == "verify"]
    engine.process([s.event(topo.dts[d2].dt_meter, 101, T0 + 31)])
    # When it is restored from its snapshot
    copy = OutageEngine.restore(json.loads(json.dumps(engine.snapshot())), topo)
    # Then the held outage is announced on time and the answer is taken
    assert [o["Equipment"]["mRID"] for o in outages(copy.advance(T0 + 50), "created")] == [d2]
    [closed] = outages(copy.answer(request["requestId"], {m: True for m in request["meters"]}), "closed")
    assert closed["closedReason"].startswith("false alarm")


def test_two_engines_split_by_feeder_give_the_same_outages_as_one():
    # Given the storm, fed whole to two engines that each own half the feeders
    topo, storm = small_storm()
    one = finish(e := OutageEngine(topo), feed(e, batches(storm)))
    parts = [OutageEngine(topo, partition=(k, 2)) for k in range(2)]
    outs = [finish(p, feed(p, batches(storm))) for p in parts]
    # Then each decided only its feeders, and together exactly what one engine decided
    for k, out in enumerate(outs):
        assert {partition_of(d["Outage"]["feeder"], 2) for _, d in out if d["type"] == "outage"} == {k}
    merged = {**outcome(outs[0]), **outcome(outs[1])}
    assert len(merged) == len(outcome(outs[0])) + len(outcome(outs[1]))
    assert merged == outcome(one)


def test_partition_of_is_stable_and_spreads_feeders():
    assert partition_of("FDR-0001", 1) == 0
    assert [partition_of(f"FDR-{i:04d}", 4) for i in range(1, 9)] == \
        [partition_of(f"FDR-{i:04d}", 4) for i in range(1, 9)]
    spread = {partition_of(f"FDR-{i:04d}", 4) for i in range(1, 200)}
    assert spread == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        OutageEngine(MemoryTopology({}), partition=(2, 2))


# -- hostile input -------------------------------------------------------------------------------

class NoDt(MemoryTopology):
    """A consumer meter the network puts under no DT (a store gone inconsistent)."""

    def locate(self, meter, at):
        return Place("consumer", None, "FDR-0001") if meter == "ORPHAN" else super().locate(meter, at)


@pytest.fixture
def hostile():
    topo = NoDt.from_model(NetworkModel.generate(3000, seed=2, dts_per_feeder=5, feeders_per_substation=3))
    engine = OutageEngine(topo)
    engine.advance(T0)
    return topo, engine


def test_unknown_meters_times_far_off_and_a_meter_without_dt_are_counted_not_fatal(hostile):
    topo, engine = hostile
    s = Storm()
    events = [s.event("NOPE-1", 101, T0), s.event("", 101, T0), s.event("x" * 100_000, 102, T0),
              s.event("ORPHAN", 101, T0),
              s.event(topo.dts["DT-000001"].meters[0], 101, T0 + 10 * 365 * 86400),     # ten years ahead
              s.event(topo.dts["DT-000001"].meters[1], 101, T0 - 20 * 365 * 86400),     # twenty years ago
              s.event(topo.dts["DT-000001"].meters[2], 101, math.nan),
              s.event(topo.dts["DT-000001"].meters[3], 101, -5.0),
              s.event(topo.dts["DT-000001"].meters[5], 101, math.inf),
              s.event(topo.dts["DT-000001"].meters[4], 102, T0 + 1)]                    # back, never out
    out = engine.process(events) + engine.advance(T0 + 600)
    assert outages(out) == []
    assert engine.stats["unknown_meter"] == 3 and engine.stats["no_dt"] == 1 and engine.stats["future"] == 1
    assert engine.stats["too_late"] == 1 and engine.stats["bad_time"] == 3 and engine.stats["breath_not_out"] == 1
    assert engine.out == {} and engine.pending == {}
    # and garbage answers to verification requests are ignored
    assert engine.answer("no-such-request", {"a": True}) == [] and engine.answer(None, None) == []


def test_a_hundred_thousand_gasps_of_one_meter_keep_memory_bounded(hostile):
    # Given an engine whose memory of message ids is capped at 10,000
    topo, _ = hostile
    engine = OutageEngine(topo, Options(max_seen_ids=10_000))
    engine.advance(T0)
    meter = topo.dts["DT-000002"].meters[0]
    # When one meter sends 100,000 gasps, each with its own id, over ten minutes
    s = Storm()
    out = []
    for i in range(0, 100_000, 5000):
        out += engine.process(s.event(meter, 101, T0 + (i + j) * 0.006) for j in range(5000))
        out += engine.advance(T0 + (i + 5000) * 0.006)
    out += engine.advance(T0 + 900)
    # Then one single-customer outage, one meter out, and at most 10,000 ids remembered
    assert [o["kind"] for o in outages(out, "created")] == ["single"]
    size = engine.size()
    assert size["out"] == 1 and size["seen"] <= 10_000 and size["timers"] <= 1
    # And once the allowed lateness has passed, the ids are forgotten altogether
    engine.advance(T0 + 3600)
    assert engine.size()["seen"] == 0
    assert len(json.dumps(engine.snapshot())) < 20_000


def test_snapshot_of_another_version_is_refused(hostile):
    topo, engine = hostile
    state = engine.snapshot()
    state["version"] = 99
    with pytest.raises(ValueError):
        OutageEngine.restore(state, topo)


def by_equipment(decisions) -> dict[tuple, list]:
    """Each outage by kind and equipment: the verbs, and for DT and feeder outages the whole story."""
    out: dict[tuple, list] = {}
    for mrid, story in outcome(decisions).items():
        kind, equipment = story[0][1], story[0][2]
        out.setdefault((kind, equipment), []).append(story if kind in ("dt", "feeder") else [s[0] for s in story])
    return out


def test_events_processed_in_any_batch_cut_decide_the_same():
    # Given the storm cut into batches of 37 and of 5,000 events (the clock ticking at other moments)
    topo, storm = small_storm()
    results = []
    for size in (37, 5000):
        e = OutageEngine(topo)
        results.append(by_equipment(finish(e, feed(e, batches(storm, size)))))
    # Then the same outages: the same DT and feeder outages with the same times, and the same
    # single-customer ones (numbered in the order their holds ran out, which the ticks decide)
    assert results[0] == results[1]


def test_watermark_never_goes_back():
    engine = OutageEngine(MemoryTopology({}))
    engine.advance(T0 + 100)
    engine.advance(T0)
    assert engine.watermark == T0 + 100
    assert engine.advance(math.nan) == [] and engine.watermark == T0 + 100


def test_meter_events_make_ids_from_their_content():
    e = MeterEvent("UPM1", 101, T0, None, "hes-a")
    assert e.message_id == f"hes-a:UPM1:101:{T0:.3f}"
    assert MeterEvent.from_dict(e.to_dict()) == e
