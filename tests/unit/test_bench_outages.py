"""The pure parts of `gridbus bench outages`: the storm as documents, restorations compressed,
the ADMS's outages scored against the ground truth, the route file the bench writes."""
from __future__ import annotations

from collections import Counter

from bus.outages.events import from_canonical
from gridbus_dev.bench.outages import (DOC_MAX, DOC_SLOT_S, RAW_ROUTE, ROUTE, compress_restorations,
                                       decisions_at_adms, distinct_events, documents, outcome, write_routes)
from gridbus_dev.bench.outages_engine import T0, Storm, make_storm, score
from simulators.network import NetworkModel

_STORM: list = []


def storm() -> Storm:
    if not _STORM:
        model = NetworkModel.generate(4000, seed=3, dts_per_feeder=5, feeders_per_substation=8)
        _STORM.append(make_storm(model, gasps=6000, seed=3, spurious=0))
    return _STORM[0]


def test_every_event_of_the_storm_is_in_one_document_of_its_hes_moved_to_start_at_t0():
    s = storm()
    t0 = 2_000_000_000.0
    docs = documents(s, t0)
    # Then every event is in exactly one document, with its alarm id and its own HES as the source
    ids = Counter(e["alarmId"] for _, d, _ in docs for e in d["EndDeviceEvent"])
    assert ids == Counter(e.message_id for _, e in s.events)
    by_id = {e.message_id: e for _, e in s.events}
    for offset, doc, arrivals in docs:
        assert len(doc["EndDeviceEvent"]) == len(arrivals) <= DOC_MAX
        # a document is what one HES got within 100 ms of its first event
        assert max(arrivals) - min(arrivals) < DOC_SLOT_S
        assert abs(offset - (min(arrivals) - s.events[0][0])) < 1e-6
        for ev, (event,) in zip(doc["EndDeviceEvent"], ([e] for e in from_canonical(doc))):
            original = by_id[ev["alarmId"]]
            assert doc["source"] == original.hes
            # event times moved by t0 - T0, in whole seconds as the canonical form has them
            assert event.at == int(original.at + t0 - T0)
            assert event.code == original.code
    # And the documents are in arrival order, the first at offset 0
    offsets = [o for o, _, _ in docs]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_restorations_are_brought_forward_and_the_gasps_left_where_they_were():
    s = make_storm(NetworkModel.generate(4000, seed=3, dts_per_feeder=5, feeders_per_substation=8), gasps=6000,
                   seed=3, spurious=0)
    gasps = sorted((e.message_id, e.at) for _, e in s.events if e.code == 101)
    breaths = {e.message_id: e.at for _, e in s.events if e.code == 102}
    compress_restorations(s, 360)
    assert sorted((e.message_id, e.at) for _, e in s.events if e.code == 101) == gasps
    moved = {e.message_id: e.at for _, e in s.events if e.code == 102}
    assert moved.keys() == breaths.keys()
    assert all(abs(moved[k] - (breaths[k] - 1440)) < 1e-6 for k in moved)
    assert min(moved.values()) >= T0 + 360
    arrivals = [a for a, _ in s.events]
    assert arrivals == sorted(arrivals)


def _adms(mrid, kind, equipment, created_at, closed_at=None, reason=None, meters=10):
    doc = {"mRID": mrid, "kind": kind, "Equipment": {"mRID": equipment}, "originalMetersAffected": meters,
           **({"closedReason": reason} if reason else {})}
    messages = [{"verb": "created", "messageId": f"{mrid}/1", "receivedAt": created_at}]
    if closed_at is not None:
        messages.append({"verb": "closed", "messageId": f"{mrid}/2", "receivedAt": closed_at})
    return {"mRID": mrid, "verb": messages[-1]["verb"], "open": closed_at is None, "Outage": doc, "messages": messages}


def test_the_adms_outages_are_scored_against_the_truth_with_latency_from_the_deciding_gasp():
    truth = Storm([], feeders={"F1"}, dts={"D1", "D2"}, singles={"M1"})
    truth.share_arrival = {"F1": 100.0, "D1": 100.0, "D2": 104.0}
    adms = [_adms("O1", "feeder", "F1", 117.0, 400.0, "restored"),
            _adms("O2", "dt", "D1", 118.0, 400.0, "restored"),
            _adms("O3", "dt", "D9", 119.0, 119.5, "absorbed"),     # announced, then absorbed by its feeder
            _adms("O4", "single", "M1", 230.0)]
    acc = score(truth, decisions_at_adms(adms))
    # Then the absorbed DT outage is no DT outage; D2 is missed, nothing is false
    assert (acc["feeder"]["precision"], acc["feeder"]["recall"]) == (1.0, 1.0)
    assert (acc["dt"]["precision"], acc["dt"]["recall"]) == (1.0, 0.5) and acc["dt"]["missed"] == ["D2"]
    assert acc["absorbedAnnounced"] == 1
    assert acc["singles"]["recall"] == 1.0
    # And the latency runs from the deciding gasp's arrival to the ADMS's receivedAt of `created`
    assert acc["latency_feeder_s"]["p50"] == 17.0 and acc["latency_dt_s"]["max"] == 18.0
    # And a DT outage the truth does not have is a false one
    acc = score(truth, decisions_at_adms(adms + [_adms("O5", "dt", "D7", 120.0)]))
    assert acc["dt"]["false"] == ["D7"] and acc["dt"]["precision"] == 0.5


def test_two_runs_are_compared_without_their_mrids():
    one = [_adms("OUT-A-000001", "feeder", "F1", 1.0, 2.0, "restored"), _adms("OUT-A-000002", "single", "M1", 1.0)]
    two = [_adms("OUT-B-000007", "single", "M1", 5.0), _adms("OUT-B-000003", "feeder", "F1", 6.0, 7.0, "restored")]
    assert outcome(one) == outcome(two)
    assert outcome(one) != outcome(two[:1])


def test_the_raw_route_store_keeps_one_event_per_meter_type_and_second():
    doc = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
        {"meter": "M1", "eventType": "3.26.0.85", "createdDateTime": "2026-12-05T08:00:00Z", "alarmId": "a"},
        {"meter": "M1", "eventType": "3.26.0.85", "createdDateTime": "2026-12-05T08:00:00Z", "alarmId": "b"},
        {"meter": "M1", "eventType": "3.26.0.216", "createdDateTime": "2026-12-05T08:00:00Z", "alarmId": "c"}]}
    assert distinct_events([(0.0, doc, [])]) == 2


def test_the_bench_route_file_has_the_production_options_without_verification(tmp_path):
    from bus.routes.loader import load_routes

    route = write_routes(tmp_path / "routes.yaml", checkpoint_s=3600)
    table = load_routes([tmp_path / "routes.yaml"], env={"ADMS_URL": "http://127.0.0.1:1"})
    correlate = table.get(ROUTE)
    assert correlate.options["verify_meters"] == 0 and correlate.options["window_s"] == 60
    assert correlate.correlate.verify_route is None and correlate.correlate.checkpoint_s == 3600
    assert correlate.correlate.partitions == 4
    assert route["options"]["feeder_hold_s"] == 15
    raw = table.get(RAW_ROUTE)
    assert raw.transform == ("to_mdms_json",) and raw.destinations[0].connector == "rest"
