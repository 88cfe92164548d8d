"""The outage correlator's rules (bus/outages), pure Python: the engine against the in-memory
topology of a generated NetworkModel, time driven by event time and ``advance``."""
from __future__ import annotations

import itertools

import pytest

from bus.outages import MeterEvent, MemoryTopology, Options, OutageEngine
from bus.outages.rules import needed
from simulators.network import NetworkModel

T0 = 1_793_491_800.0          # 2026-11-01T00:10:00Z


class Storm:
    """Events as the HES deliver them: each with its own id, received a few seconds after."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)

    def event(self, meter: str, code: int, at: float, late_s: float = 3.0) -> MeterEvent:
        return MeterEvent(meter, code, at, at + late_s, "hes-a", f"hes-a:{next(self.ids)}")

    def gasps(self, meters, at: float, spread_s: float = 20.0, late_s: float = 3.0) -> list[MeterEvent]:
        meters = list(meters)
        return [self.event(m, 101, at + spread_s * i / max(len(meters), 1), late_s) for i, m in enumerate(meters)]

    def breaths(self, meters, at: float, spread_s: float = 10.0) -> list[MeterEvent]:
        meters = list(meters)
        return [self.event(m, 102, at + spread_s * i / max(len(meters), 1)) for i, m in enumerate(meters)]


_MODEL: list[NetworkModel] = []


def model() -> NetworkModel:
    """~60 DTs over 10 feeders (6 DTs each), 6,000 consumers."""
    if not _MODEL:
        _MODEL.append(NetworkModel.generate(6000, seed=11, dts_per_feeder=6, feeders_per_substation=5))
    return _MODEL[0]


def topology() -> MemoryTopology:
    return MemoryTopology.from_model(model())


def outages(decisions, verb=None, kind=None) -> list[dict]:
    """The Outage documents of the decisions (of one verb, one kind)."""
    return [d["Outage"] for d in decisions if d["type"] == "outage" and (verb is None or d["verb"] == verb)
            and (kind is None or d["Outage"]["kind"] == kind)]


def run(engine: OutageEngine, events, until: float) -> list[dict]:
    out = engine.process(events)
    return out + engine.advance(until)


@pytest.fixture
def topo():
    return topology()


@pytest.fixture
def engine(topo):
    e = OutageEngine(topo, Options())
    e.advance(T0)
    return e


@pytest.fixture
def storm():
    return Storm()


def feeder_meters(topo, feeder):
    return [m for d in topo.feeders[feeder].dts for m in topo.dts[d].meters]


def test_a_feeder_trip_is_one_feeder_outage_not_one_per_dt(engine, topo, storm):
    # Given feeder FDR-0002 with its DTs
    feeder = topo.feeders["FDR-0002"]
    assert len(feeder.dts) >= 3
    # When every consumer meter and DT meter under it gasps within 30 s (head meter silent)
    meters = feeder_meters(topo, "FDR-0002") + [topo.dts[d].dt_meter for d in feeder.dts]
    out = run(engine, storm.gasps(meters, T0 + 1, spread_s=30), T0 + 200)
    # Then the ADMS hears of one outage: the feeder's, with every meter under it
    created = outages(out, "created")
    assert [o["kind"] for o in created] == ["feeder"]
    assert created[0]["Equipment"] == {"mRID": "FDR-0002", "name": feeder.name, "kind": "Feeder"}
    assert created[0]["metersAffected"] == created[0]["originalMetersAffected"] == len(feeder_meters(topo, "FDR-0002"))
    assert created[0]["actualPeriod"] == {"start": "2026-11-01T00:10:01Z", "end": None}
    assert created[0]["outageKind"] == "estimated"
    # and no DT outage was announced then withdrawn
    assert outages(out, "closed") == []
    # and one verification request for it
    verify = [d for d in out if d["type"] == "verify"]
    assert len(verify) == 1 and verify[0]["outage"] == created[0]["mRID"] and len(verify[0]["meters"]) == 3


def test_a_head_meter_gasp_is_a_feeder_outage_at_once(engine, topo, storm):
    # Given a feeder whose head meter is a bellwether
    head = topo.feeders["FDR-0003"].head_meter
    # When only the head meter gasps
    out = engine.process([storm.event(head, 101, T0 + 5)])
    # Then the feeder outage is announced without waiting
    assert [(o["kind"], o["Equipment"]["mRID"]) for o in outages(out, "created")] == [("feeder", "FDR-0003")]


def test_one_dt_out_is_a_dt_outage_after_the_feeder_hold(engine, topo, storm):
    # Given one DT of FDR-0004
    dt = topo.feeders["FDR-0004"].dts[1]
    meters = topo.dts[dt].meters
    # When 70 % of its meters gasp within 20 s
    gasps = storm.gasps(meters[:int(len(meters) * 0.7) + 1], T0 + 10)
    out = engine.process(gasps)
    # Then it is decided but held for the feeder's other DTs (feeder_hold_s)...
    assert outages(out) == []
    last = max(g.at for g in gasps)
    assert outages(engine.advance(last + 5)) == []
    # ...and announced once the hold has passed, as a DT outage of all its meters
    out = engine.advance(last + 16)
    [doc] = outages(out, "created")
    assert doc["kind"] == "dt" and doc["Equipment"]["mRID"] == dt and doc["Equipment"]["kind"] == "PowerTransformer"
    assert doc["metersAffected"] == len(meters) and doc["metersReported"] == len(gasps)


def test_a_dt_meter_gasp_is_a_dt_outage(engine, topo, storm):
    # Given a DT meter
    dt = topo.feeders["FDR-0005"].dts[0]
    # When it alone gasps
    out = run(engine, [storm.event(topo.dts[dt].dt_meter, 101, T0 + 1)], T0 + 20)
    # Then its DT is out, every consumer meter affected
    [doc] = outages(out, "created")
    assert doc["kind"] == "dt" and doc["Equipment"]["mRID"] == dt and doc["metersAffected"] == len(topo.dts[dt].meters)


def test_a_partial_dt_below_the_share_stays_single_customer_outages_after_the_hold(engine, topo, storm):
    # Given a DT and fewer of its meters than the 60 % share
    dt = topo.feeders["FDR-0006"].dts[2]
    meters = topo.dts[dt].meters
    few = meters[:needed(0.6, len(meters)) - 1]
    # When they gasp within the window
    out = run(engine, storm.gasps(few, T0 + 1, spread_s=30), T0 + 100)
    # Then nothing before the hold (120 s) has passed
    assert outages(out) == []
    # And then one single-customer outage per meter, no DT outage
    out = engine.advance(T0 + 160)
    created = outages(out, "created")
    assert len(created) == len(few) and {o["kind"] for o in created} == {"single"}
    assert sorted(o["Equipment"]["mRID"] for o in created) == sorted(few)
    assert all(o["Equipment"]["kind"] == "UsagePoint" and o["metersAffected"] == 1 for o in created)
    # and no verification for single-customer outages
    assert [d for d in out if d["type"] == "verify"] == []


def test_singles_that_reach_the_share_with_later_gasps_are_absorbed_into_the_dt_outage(engine, topo, storm):
    # Given 50 % of a DT's meters out as single-customer outages
    dt = topo.feeders["FDR-0006"].dts[3]
    meters = topo.dts[dt].meters
    half = meters[:len(meters) // 2]
    singles = outages(run(engine, storm.gasps(half, T0 + 1, spread_s=10), T0 + 140), "created")
    assert len(singles) == len(half)
    # When gasps within the window of the first, 4 minutes late, bring it past 60 %
    rest = storm.gasps(meters[len(half):needed(0.6, len(meters)) + 2], T0 + 20, spread_s=20, late_s=240)
    out = run(engine, rest, T0 + 300)
    # Then the singles close as absorbed into one DT outage
    [dt_doc] = outages(out, "created", "dt")
    closed = outages(out, "closed")
    assert sorted(o["mRID"] for o in closed) == sorted(o["mRID"] for o in singles)
    assert {(o["closedReason"], o["absorbedInto"]) for o in closed} == {("absorbed", dt_doc["mRID"])}
    assert dt_doc["actualPeriod"]["start"] == "2026-11-01T00:10:01Z"


def test_a_late_gasp_four_minutes_late_joins_its_outage(engine, topo, storm):
    # Given a DT outage announced
    dt = topo.feeders["FDR-0007"].dts[0]
    meters = topo.dts[dt].meters
    out = run(engine, storm.gasps(meters[:-1], T0 + 1), T0 + 60)
    [doc] = outages(out, "created", "dt")
    # When the last meter's gasp of the same failure arrives 4 minutes late
    late = storm.event(meters[-1], 101, T0 + 2, late_s=240)
    out = run(engine, [late], T0 + 242)
    # Then it joins that outage: no new outage
    assert outages(out, "created") == []
    assert engine.out[meters[-1]][1] == doc["mRID"]
    assert engine.outages[doc["mRID"]].gasped[meters[-1]] == T0 + 2
    # And a whole DT's gasps 4 minutes late still make its outage
    dt2 = topo.feeders["FDR-0008"].dts[0]
    out = run(engine, storm.gasps(topo.dts[dt2].meters, T0 + 5, late_s=240), T0 + 280)
    assert [o["Equipment"]["mRID"] for o in outages(out, "created")] == [dt2]


def test_gasps_later_than_the_allowed_lateness_make_no_outage(engine, topo, storm):
    # Given the watermark 20 minutes on
    engine.advance(T0 + 1200)
    dt = topo.feeders["FDR-0009"].dts[0]
    # When a whole DT's gasps of 15 minutes ago arrive (allowed lateness 10 min)
    out = run(engine, storm.gasps(topo.dts[dt].meters, T0 + 300), T0 + 1500)
    # Then no outage: they are counted as too late
    assert outages(out) == []
    assert engine.stats["too_late"] == len(topo.dts[dt].meters)


def test_restoration_with_five_meters_left_out_closes_it_and_opens_a_nested_outage_of_five(engine, topo, storm):
    # Given a DT outage of a whole DT, its DT meter included
    dt = topo.feeders["FDR-0010"].dts[1]
    info = topo.dts[dt]
    out = run(engine, storm.gasps([info.dt_meter, *info.meters], T0 + 1), T0 + 100)
    [doc] = outages(out, "created")
    # When, 40 minutes later, the DT meter and all but 5 meters breathe
    back = T0 + 2400
    engine.advance(back)
    out = run(engine, storm.breaths([info.dt_meter, *info.meters[:-5]], back, spread_s=20), back + 30)
    # Then nothing closes while stragglers may still report (restore_wait_s)
    assert outages(out, "closed") == []
    out = engine.advance(back + 100)
    # And then the outage closes, restored at the first breath, sustained...
    [closed] = outages(out, "closed")
    assert closed["mRID"] == doc["mRID"] and closed["closedReason"] == "restored"
    assert closed["actualPeriod"] == {"start": "2026-11-01T00:10:01Z", "end": "2026-11-01T00:50:00Z"}
    assert closed["durationKind"] == "sustained"
    assert closed["customersRestored"] == len(info.meters) - 5 and closed["metersAffected"] == 5
    # ...with a nested outage of the 5, backdated to the parent's start
    [nested] = outages(out, "created")
    assert nested["kind"] == "nested" and nested["parentOutage"] == doc["mRID"]
    assert nested["metersAffected"] == nested["originalMetersAffected"] == 5
    assert sorted(nested["meters"]) == sorted(info.meters[-5:])
    assert nested["actualPeriod"]["start"] == "2026-11-01T00:10:01Z"
    assert closed["nestedOutage"] == nested["mRID"]
    # When 3 of the 5 come back, then the other 2
    engine.advance(back + 600)
    out = run(engine, storm.breaths(info.meters[-5:-2], back + 600), back + 700)
    changed = outages(out, "changed")
    assert [(c["customersRestored"], c["metersAffected"]) for c in changed] == [(1, 4), (2, 3), (3, 2)]
    engine.advance(back + 900)
    out = run(engine, storm.breaths(info.meters[-2:], back + 900), back + 1000)
    [done] = outages(out, "closed")
    assert done["mRID"] == nested["mRID"] and done["closedReason"] == "restored" and done["metersAffected"] == 0


def test_a_feeder_restored_with_meters_left_out_nests_them_per_dt(engine, topo, storm):
    # Given a feeder outage
    feeder = topo.feeders["FDR-0001"]
    meters = feeder_meters(topo, "FDR-0001")
    out = run(engine, [storm.event(feeder.head_meter, 101, T0)] + storm.gasps(meters, T0 + 1), T0 + 100)
    [doc] = outages(out, "created", "feeder")
    # When the head meter and all but 2 meters of each of two DTs breathe
    d1, d2 = feeder.dts[0], feeder.dts[1]
    left = topo.dts[d1].meters[:2] + topo.dts[d2].meters[:2]
    engine.advance(T0 + 3600)
    out = run(engine, storm.breaths([feeder.head_meter] + [m for m in meters if m not in left], T0 + 3600),
              T0 + 3800)
    # Then it closes and one nested outage per DT holds the meters left out
    [closed] = outages(out, "closed")
    assert closed["mRID"] == doc["mRID"] and closed["metersAffected"] == 4
    nested = outages(out, "created")
    assert sorted((n["Equipment"]["mRID"], n["metersAffected"]) for n in nested) == [(d1, 2), (d2, 2)]
    assert sorted(closed["nestedOutages"]) == sorted(n["mRID"] for n in nested)


def test_a_forty_second_interruption_is_momentary(engine, topo, storm):
    # Given a DT whose meters all gasp
    dt = topo.feeders["FDR-0003"].dts[2]
    info = topo.dts[dt]
    # When it is back 40 s later
    events = storm.gasps([info.dt_meter, *info.meters], T0 + 1, spread_s=5) + \
        storm.breaths([info.dt_meter, *info.meters], T0 + 41, spread_s=5)
    out = run(engine, events, T0 + 300)
    # Then the ADMS gets it created and closed, momentary (IEEE 1366: < 5 min)
    assert [(d["verb"], d["Outage"]["kind"]) for d in out if d["type"] == "outage"] == [("created", "dt"),
                                                                                         ("closed", "dt")]
    [closed] = outages(out, "closed")
    assert closed["durationKind"] == "momentary"
    assert closed["actualPeriod"] == {"start": "2026-11-01T00:10:01Z", "end": "2026-11-01T00:10:41Z"}


def test_an_open_outage_older_than_five_minutes_is_sustained(engine, topo, storm):
    # Given a DT outage
    dt = topo.feeders["FDR-0003"].dts[3]
    out = run(engine, [storm.event(topo.dts[dt].dt_meter, 101, T0 + 1)], T0 + 20)
    assert outages(out, "created")[0]["durationKind"] is None
    # When 6 minutes have passed and the verification answers come
    engine.advance(T0 + 400)
    [request] = [d for d in out if d["type"] == "verify"]
    out = engine.answer(request["requestId"], {m: False for m in request["meters"]})
    # Then it is verified and sustained
    [changed] = outages(out, "changed")
    assert changed["outageKind"] == "verified" and changed["durationKind"] == "sustained"


def test_verification_finding_the_meters_alive_closes_it_as_a_false_alarm(engine, topo, storm):
    # Given a DT outage from a DT meter's gasp alone (the DT meter failed, not the DT)
    dt = topo.feeders["FDR-0004"].dts[3]
    out = run(engine, [storm.event(topo.dts[dt].dt_meter, 101, T0 + 1)], T0 + 20)
    [doc] = outages(out, "created")
    [request] = [d for d in out if d["type"] == "verify"]
    assert request["outage"] == doc["mRID"] and set(request["meters"]) <= set(topo.dts[dt].meters)
    # When the meters asked answer (alive)
    out = engine.answer(request["requestId"], {m: True for m in request["meters"]})
    # Then the outage is closed as a false alarm, with its reason
    [closed] = outages(out, "closed")
    assert closed["mRID"] == doc["mRID"] and closed["closedReason"].startswith("false alarm: 3 of 3")
    assert closed["verification"]["alive"] == sorted(request["meters"])
    assert engine.outages == {} and engine.out == {}
    # And the same answer again changes nothing
    assert engine.answer(request["requestId"], {m: True for m in request["meters"]}) == []


def test_verification_finding_the_meters_dead_verifies_it(engine, topo, storm):
    # Given a DT outage by share
    dt = topo.feeders["FDR-0005"].dts[2]
    out = run(engine, storm.gasps(topo.dts[dt].meters, T0 + 1), T0 + 60)
    [request] = [d for d in out if d["type"] == "verify"]
    # the meters asked first are meters that reported out
    assert set(request["meters"]) <= set(topo.dts[dt].meters)
    # When two of three do not answer
    answers = dict(zip(request["meters"], (False, False, True)))
    out = engine.answer(request["requestId"], answers)
    # Then it is verified
    [changed] = outages(out, "changed")
    assert changed["outageKind"] == "verified" and changed["verification"]["dead"] == sorted(request["meters"][:2])


def test_a_meter_back_before_the_hold_is_a_blip_not_an_outage(engine, topo, storm):
    # Given one meter's gasp
    meter = topo.dts[topo.feeders["FDR-0002"].dts[0]].meters[0]
    # When it breathes 30 s later, and its gasp is repeated (another id) within seconds
    events = [storm.event(meter, 101, T0 + 1), storm.event(meter, 101, T0 + 3), storm.event(meter, 102, T0 + 31)]
    out = run(engine, events, T0 + 600)
    # Then no outage
    assert outages(out) == []
    assert engine.stats["blips"] == 1 and engine.stats["repeat"] == 1


def test_a_single_customer_outage_closes_on_its_first_breath(engine, topo, storm):
    meter = topo.dts[topo.feeders["FDR-0002"].dts[1]].meters[3]
    [created] = outages(run(engine, [storm.event(meter, 101, T0 + 1)], T0 + 200), "created")
    engine.advance(T0 + 1000)
    out = run(engine, [storm.event(meter, 102, T0 + 1000)], T0 + 1100)
    [closed] = outages(out, "closed")
    assert closed["mRID"] == created["mRID"] and closed["durationKind"] == "sustained"
    assert closed["customersRestored"] == 1 and closed["metersAffected"] == 0


def test_gasps_of_an_outage_already_closed_do_not_reopen_it(engine, topo, storm):
    # Given a momentary DT outage, closed
    dt = topo.feeders["FDR-0009"].dts[2]
    info = topo.dts[dt]
    run(engine, [storm.event(info.dt_meter, 101, T0 + 1), storm.event(info.dt_meter, 102, T0 + 30)], T0 + 200)
    # When gasps of that interruption arrive afterwards (late PLC gasps)
    out = run(engine, storm.gasps(info.meters, T0 + 2, spread_s=10, late_s=200), T0 + 260)
    # Then no new outage
    assert outages(out) == []
    assert engine.stats["gasp_of_closed_outage"] == len(info.meters)


def test_outage_ids_are_per_feeder_and_stable(engine, topo, storm):
    dt = topo.feeders["FDR-0006"].dts[0]
    out = run(engine, [storm.event(topo.dts[dt].dt_meter, 101, T0 + 1)], T0 + 20)
    assert outages(out)[0]["mRID"] == "OUT-FDR-0006-000001"
    assert [d["messageId"] for d in out if d["type"] == "outage"] == ["OUT-FDR-0006-000001/1"]


def test_a_dt_failing_again_while_its_restoration_settles_closes_the_first_and_opens_a_second(engine, topo, storm):
    # Given a DT outage whose DT meter has just breathed (restoration waiting for stragglers)
    dt = topo.feeders["FDR-0008"].dts[2]
    info = topo.dts[dt]
    [first] = outages(run(engine, [storm.event(info.dt_meter, 101, T0 + 1)], T0 + 600), "created")
    run(engine, [storm.event(info.dt_meter, 102, T0 + 600)], T0 + 610)
    # When the DT meter gasps again 20 s later
    out = run(engine, [storm.event(info.dt_meter, 101, T0 + 620)], T0 + 700)
    # Then the first outage is closed as restored, and a second one is opened
    assert [(d["verb"], d["Outage"]["mRID"]) for d in out if d["type"] == "outage"] == [
        ("closed", first["mRID"]), ("created", "OUT-FDR-0008-000002")]
    assert outages(out, "closed")[0]["actualPeriod"]["end"] == "2026-11-01T00:20:00Z"
    assert engine.dt_outage == {dt: "OUT-FDR-0008-000002"}


def test_one_consumer_breath_does_not_restore_a_dt_outage_its_dt_meter_reported(engine, topo, storm):
    # Given a DT outage from its DT meter's gasp alone
    dt = topo.feeders["FDR-0009"].dts[3]
    info = topo.dts[dt]
    [doc] = outages(run(engine, [storm.event(info.dt_meter, 101, T0 + 1)], T0 + 60), "created")
    # When one of its consumer meters (that never reported out) breathes
    engine.advance(T0 + 900)
    out = run(engine, [storm.event(info.meters[0], 102, T0 + 900)], T0 + 1200)
    # Then it stays open; two more consumer breaths restore it
    assert outages(out) == [] and doc["mRID"] in engine.outages
    out = run(engine, storm.breaths(info.meters[1:3], T0 + 1210), T0 + 1400)
    [closed] = outages(out, "closed")
    # (restored at the first breath of the cluster that made the share, not the lone one before)
    assert closed["closedReason"] == "restored" and closed["actualPeriod"]["end"] == "2026-11-01T00:30:10Z"


def test_a_feeder_outage_is_verified_on_meters_that_reported_out(engine, topo, storm):
    # Given two consumer gasps, then the head meter's: a feeder outage
    feeder = topo.feeders["FDR-0005"]
    reported = topo.dts[feeder.dts[0]].meters[:2]
    out = run(engine, storm.gasps(reported, T0 + 1, spread_s=1) + [storm.event(feeder.head_meter, 101, T0 + 2)],
              T0 + 10)
    # Then the meters asked are those that reported out, then DT meters of the feeder
    [request] = [d for d in out if d["type"] == "verify"]
    assert set(request["meters"][:2]) == set(reported)
    assert request["meters"][2] in {topo.dts[d].dt_meter for d in feeder.dts}
    # When they do not answer (dead)
    [changed] = outages(engine.answer(request["requestId"], {m: False for m in request["meters"]}), "changed")
    # Then the feeder outage is verified
    assert changed["kind"] == "feeder" and changed["outageKind"] == "verified"
    assert changed["verification"]["dead"] == sorted(request["meters"])


def test_an_earlier_copy_of_a_gasp_arriving_later_moves_the_meter_into_the_window(engine, topo, storm):
    # Given a DT's meters gasping at T0+1 .. T0+21, except one whose first copy says T0+90
    dt = topo.feeders["FDR-0010"].dts[0]
    meters = topo.dts[dt].meters
    k = needed(0.6, len(meters))
    early = storm.gasps(meters[:k - 1], T0 + 1)
    out = run(engine, early + [storm.event(meters[k - 1], 101, T0 + 90)], T0 + 100)
    # Then it is not yet a DT outage (the 60th gasp is outside the 60 s window)
    assert outages(out) == [] and not engine.dt_outage
    # When the same meter's earlier copy (T0+5) arrives
    out = run(engine, [storm.event(meters[k - 1], 101, T0 + 5)], T0 + 130)
    # Then the share is reached within the window: a DT outage, no single-customer outages
    assert [(o["kind"], o["Equipment"]["mRID"]) for o in outages(out, "created")] == [("dt", dt)]


def test_a_dt_meter_gasping_alone_does_not_make_a_feeder_outage_with_two_real_dts(engine, topo, storm):
    # Given two DTs of a feeder out (their consumer meters gasp) and a third DT's meter failing
    # (it gasps alone, its consumers are fine), all within the window
    feeder = topo.feeders["FDR-0007"]
    d1, d2, d3 = feeder.dts[1], feeder.dts[2], feeder.dts[3]
    events = storm.gasps(topo.dts[d1].meters, T0 + 1) + storm.gasps(topo.dts[d2].meters, T0 + 5) + \
        [storm.event(topo.dts[d3].dt_meter, 101, T0 + 10)]
    out = run(engine, events, T0 + 60)
    # Then three DT outages, no feeder outage
    assert sorted(o["Equipment"]["mRID"] for o in outages(out, "created")) == [d1, d2, d3]
    # and the lone one's verification finds its meters alive: a false alarm
    [request] = [d for d in out if d["type"] == "verify" and d["equipment"] == d3]
    [closed] = outages(engine.answer(request["requestId"], {m: True for m in request["meters"]}), "closed")
    assert closed["Equipment"]["mRID"] == d3 and closed["closedReason"].startswith("false alarm")


def test_a_feeder_trip_whose_dt_meters_report_first_is_still_one_feeder_outage(engine, topo, storm):
    # Given every DT meter of a feeder gasping first, its consumer meters 20 s later
    feeder = topo.feeders["FDR-0008"]
    events = [storm.event(topo.dts[d].dt_meter, 101, T0 + 1) for d in feeder.dts] + \
        storm.gasps([m for d in feeder.dts for m in topo.dts[d].meters], T0 + 2, late_s=20)
    out = run(engine, events, T0 + 100)
    # Then one feeder outage
    assert [(o["kind"], o["Equipment"]["mRID"]) for o in outages(out, "created")] == [("feeder", feeder.mrid)]


class MovedTopology(MemoryTopology):
    """The fixed network, except that ``dt`` is on ``feeder`` from ``at`` on (switched to restore it)."""

    def __init__(self, base: MemoryTopology, dt: str, feeder: str, at: float):
        self.__dict__.update(base.__dict__)
        self.moved = (set(base.dts[dt].meters), dt, feeder, at)

    def locate(self, meter, at):
        meters, dt, feeder, when = self.moved
        if meter in meters and at >= when:
            from bus.outages.topology import CONSUMER, Place
            return Place(CONSUMER, dt, feeder)
        return super().locate(meter, at)


def test_a_dt_switched_onto_a_feeder_of_another_partition_restores_in_the_partition_it_failed_in(topo, storm):
    from bus.outages.rules import partition_of

    # Given a DT outage in partition 0 of 2, and a feeder of partition 1
    feeder = next(f for f in sorted(topo.feeders) if partition_of(f, 2) == 0)
    other = next(f for f in sorted(topo.feeders) if partition_of(f, 2) == 1)
    dt = topo.feeders[feeder].dts[0]
    meters = list(topo.dts[dt].meters)
    moved = MovedTopology(topo, dt, other, T0 + 600)
    engine = OutageEngine(moved, Options(), partition=(0, 2))
    engine.advance(T0)
    out = run(engine, storm.gasps(meters, T0 + 10), T0 + 200)
    [created] = outages(out, "created", "dt")
    # When the DT is switched onto that other feeder and all but 5 of its meters breathe there
    engine.advance(T0 + 690)
    out = run(engine, storm.breaths(meters[:-5], T0 + 700), T0 + 900)
    # Then the outage closes restored in partition 0 (the breaths are not "another partition's"),
    # and the 5 left out are a nested outage that closes when they breathe
    [closed] = [o for o in outages(out, "closed") if o["mRID"] == created["mRID"]]
    assert closed["closedReason"] == "restored"
    [nested] = outages(out, "created", "nested")
    out = run(engine, storm.breaths(meters[-5:], T0 + 1000), T0 + 1100)
    assert [o["mRID"] for o in outages(out, "closed")] == [nested["mRID"]]
    assert engine.stats.get("other_partition", 0) == 0 and engine.stats["breath_moved"] == len(meters)
    # And a partition-1 engine, which gets the same breaths, makes no outage of them
    mine = OutageEngine(moved, Options(), partition=(1, 2))
    mine.advance(T0 + 690)
    assert outages(run(mine, storm.breaths(meters, T0 + 700), T0 + 1100)) == []
