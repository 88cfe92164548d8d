"""The outage correlator's input and options: canonical EndDeviceEvents normalized into meter
events, and every rule's threshold validated when a route is loaded."""
from __future__ import annotations

import pytest

from bus.outages import MeterEvent, Options, OptionsError, from_canonical
from bus.outages.events import epoch, iso
from bus.outages.rules import max_in_window, needed, sample


def test_power_fail_and_restore_events_are_taken_from_a_canonical_document():
    # Given a canonical EndDeviceEvents document as the alarm routes publish it
    doc = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
        {"meter": "UPM00000001", "eventType": "3.26.0.85", "isCode": 101, "createdDateTime": "2026-11-01T04:45:02Z",
         "receivedDateTime": "2026-11-01T04:45:04Z", "eventClass": ["outage", "critical"], "severity": "critical",
         "alarmId": "hes-a-20261101-000001"},
        {"meter": "UPM00000002", "eventType": "3.26.0.216", "createdDateTime": "2026-11-01T05:00:00Z"},
        {"meter": "UPM00000003", "eventType": "3.26.93.219", "isCode": 51, "createdDateTime": "2026-11-01T05:00:00Z"},
        {"meter": "UPM00000004", "eventType": "3.26.0.85", "isCode": 101, "createdDateTime": "yesterday"},
        {"meter": 7, "eventType": "3.26.0.85", "isCode": 101, "createdDateTime": "2026-11-01T05:00:00Z"},
        "not an event",
    ]}
    # When normalized
    events = list(from_canonical(doc))
    # Then the gasp and the breath, with event and receipt times, HES and a stable id; others skipped
    assert events == [
        MeterEvent("UPM00000001", 101, epoch("2026-11-01T04:45:02Z"), epoch("2026-11-01T04:45:04Z"), "hes-a",
                   "hes-a:hes-a-20261101-000001"),
        MeterEvent("UPM00000002", 102, epoch("2026-11-01T05:00:00Z"), None, "hes-a",
                   f"hes-a:UPM00000002:102:{epoch('2026-11-01T05:00:00Z'):.3f}")]
    # and the same document again gives the same ids (a redelivery is recognised)
    assert [e.message_id for e in from_canonical(doc)] == [e.message_id for e in events]


def test_instants():
    assert iso(epoch("2026-11-01T04:45:02Z")) == "2026-11-01T04:45:02Z"
    assert epoch("2026-11-01T10:15:02+05:30") == epoch("2026-11-01T04:45:02Z")
    with pytest.raises(ValueError):
        epoch("2026-11-01T10:15:02")


def test_options_from_a_route_are_validated_by_name():
    o = Options.from_mapping({"dt_share": 0.7, "window_s": 30, "feeder_min_dts": 4, "verify_meters": 2})
    assert (o.dt_share, o.window_s, o.feeder_min_dts, o.verify_meters) == (0.7, 30.0, 4, 2)
    assert Options.from_mapping(None) == Options()
    for bad, word in (({"dt_shar": 0.6}, "unknown"), ({"dt_share": 0}, "dt_share"), ({"dt_share": 1.5}, "dt_share"),
                      ({"window_s": -1}, "window_s"), ({"window_s": "60"}, "number"), ({"window_s": True}, "number"),
                      ({"feeder_min_dts": 2.5}, "whole"), ({"feeder_min_dts": 1}, "feeder_min_dts"),
                      ({"allowed_lateness_s": 60}, "minutes late"), ({"verify_meters": 100}, "verify_meters"),
                      ({"restore_share": float("nan")}, "restore_share")):
        with pytest.raises(OptionsError, match=word):
            Options.from_mapping(bad)


def test_rule_helpers():
    assert needed(0.6, 100) == 60 and needed(0.6, 101) == 61 and needed(0.6, 1) == 1 and needed(0.5, 0) == 1
    assert max_in_window([0, 10, 20, 100, 105, 110, 115], 15) == (4, 100)
    assert max_in_window([], 60) == (0, 0.0)
    assert max_in_window([50, 0, 30], 60) == (3, 0)
    chosen = sample(["a", "b", "c", "d"], "OUT-1", 2)
    assert chosen == sample(["d", "c", "b", "a"], "OUT-1", 2) and len(chosen) == 2


def test_a_simulated_feeder_trip_through_the_hes_decoder_is_one_feeder_outage():
    # Given a feeder trip as HES-A's stand-in sends it (vendor alarm JSON), decoded by the
    # alarm route's own transformer into canonical EndDeviceEvents
    from bus.canonical import validate_document
    from bus.outages import MemoryTopology, OutageEngine
    from bus.transform import TransformContext
    from simulators.hes_alarms import Network, feeder_trip
    from simulators.network import NetworkModel
    from transformers.hes_alarm_json import HesAlarmJsonDecoder

    model = NetworkModel.generate(3000, seed=3, dts_per_feeder=5, feeders_per_substation=3)
    alarms = feeder_trip(Network.from_model(model), "FDR-0002", "2026-11-01T10:15:00+05:30", spread_s=20,
                         restore_after_s=1800)
    context = TransformContext("hes-a-alarms", "hes-a", "msg-1", "corr-1", options={})
    doc = validate_document(HesAlarmJsonDecoder()({"hes": "hes-a", "alarms": alarms}, context))
    # When its outage events go through the engine
    events = list(from_canonical(doc))
    assert len(events) == len(alarms) and {e.code for e in events} == {101, 102}
    engine = OutageEngine(MemoryTopology.from_model(model))
    gasps = [e for e in events if e.code == 101]
    breaths = [e for e in events if e.code == 102]
    start = min(e.at for e in gasps)
    engine.advance(start)
    out = engine.process(gasps, now=start + 30) + engine.advance(start + 120)
    engine.advance(start + 1800)
    out += engine.process(breaths, now=start + 1830) + engine.advance(start + 2000)
    # Then one feeder outage, created and closed as restored, sustained, all meters back
    story = [(d["verb"], d["Outage"]["kind"], d["Outage"]["Equipment"]["mRID"]) for d in out if d["type"] == "outage"]
    assert story == [("created", "feeder", "FDR-0002"), ("closed", "feeder", "FDR-0002")]
    closed = [d for d in out if d["type"] == "outage"][-1]["Outage"]
    assert closed["closedReason"] == "restored" and closed["durationKind"] == "sustained"
    assert closed["metersAffected"] == 0 and "nestedOutage" not in closed
    # and a redelivery of the same document changes nothing
    assert engine.process(from_canonical(doc), now=start + 2000) == []
