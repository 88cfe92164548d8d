"""The outage engine's view of the network: the store-backed topology (a real SQLite network
store) answers as the generated network's ground truth, as of each event's time, in bulk."""
from __future__ import annotations

import pytest

from bus.network import open_store
from bus.outages import MemoryTopology, Options, OutageEngine, StoreTopology
from bus.outages.topology import CONSUMER, DT, FEEDER
from simulators.network import NetworkModel, epoch_of

from tests.unit.test_outage_rules import Storm, outages

START = "2026-11-01T00:00:00+05:30"
MOVE = "2026-11-02T00:00:00+05:30"
CONNECT = "2026-11-02T06:00:00+05:30"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """2,000 consumers (~20 DTs, 4 feeders) in a store; then 3 DTs move to another feeder."""
    model = NetworkModel.generate(2000, seed=4, dts_per_feeder=5, feeders_per_substation=2, start=START)
    before = MemoryTopology.from_model(model)
    store = open_store(tmp_path_factory.mktemp("outages") / "network.sqlite")
    result = store.apply(list(model.creates()))
    assert not result.refused
    moves = model.dt_moves(3, at=MOVE)
    assert not store.apply(moves).refused
    assert not store.apply(model.new_connections(1, at=CONNECT)).refused
    return model, store, before, [c["mrid"] for c in moves]


def test_locate_answers_as_the_ground_truth_before_and_after_a_dt_move(network):
    model, store, before, moved = network
    topo = StoreTopology(store)
    t_before, t_after = epoch_of(START) + 3600, epoch_of(MOVE) + 3600
    for dt in moved:
        meter = before.dts[dt].meters[0]
        # Given a consumer meter under a DT that moved to another feeder
        old, new = topo.locate(meter, t_before), topo.locate(meter, t_after)
        # Then as of each time it is under that DT, on the feeder of the time
        assert old.kind == new.kind == CONSUMER and old.dt == new.dt == dt
        assert old.feeder == model.where(meter, t_before)["feeder"] == before.dts[dt].feeder
        assert new.feeder == model.where(meter, t_after)["feeder"] != old.feeder


def test_dt_and_head_meters_and_unknown_serials(network):
    model, store, before, _ = network
    topo = StoreTopology(store)
    t = epoch_of(START) + 60
    assert topo.locate(model.dt_meter(0), t) == before.locate(model.dt_meter(0), t)
    assert topo.locate(model.dt_meter(0), t).kind == DT
    assert topo.locate(model.feeder_head_meter(1), t).kind == FEEDER
    assert topo.locate("NOT-A-METER", t) is None
    assert topo.locate(model.dt_meter(0), epoch_of(START) - 60) is None       # before the network existed


def test_dt_and_feeder_info_match_the_generated_network(network):
    model, store, before, moved = network
    topo = StoreTopology(store)
    t = epoch_of(START) + 60
    for dt, info in before.dts.items():
        mine = topo.dt(dt, t)
        assert (mine.feeder, mine.dt_meter, mine.meters, mine.name) == (info.feeder, info.dt_meter, info.meters,
                                                                          info.name)
    for feeder, info in before.feeders.items():
        mine = topo.feeder(feeder, t)
        assert (mine.head_meter, mine.dts, mine.name) == (info.head_meter, info.dts, info.name)
    # after the move, a moved DT's feeder lists it
    t2 = epoch_of(MOVE) + 60
    for dt in moved:
        assert dt in topo.feeder(topo.dt(dt, t2).feeder, t2).dts


def test_a_batch_of_meters_is_one_query_then_cached(network):
    model, store, before, _ = network
    topo = StoreTopology(store)
    t = epoch_of(START) + 600
    meters = list(before.places)
    # Given every meter of the network looked up before a batch
    topo.prefetch(meters, t, t + 60)
    # Then one query for the meters and one for the DTs they hang under
    assert topo.queries == 2
    # and the batch's lookups query nothing more
    places = [topo.locate(m, t + 30) for m in meters]
    assert topo.queries == 2
    assert places == [before.locate(m, t) for m in meters]
    queries = topo.queries
    for m in meters:
        topo.locate(m, t + 45)
    assert topo.queries == queries


def test_the_engine_on_the_store_decides_as_on_the_memory_topology(network):
    model, store, before, _ = network
    t0 = float(epoch_of(START) + 7200)
    feeder = sorted(before.feeders)[0]
    meters = [m for d in before.feeders[feeder].dts for m in before.dts[d].meters]
    results = []
    for topo in (before, StoreTopology(store)):
        s = Storm()
        engine = OutageEngine(topo, Options())
        engine.advance(t0)
        out = engine.process(s.gasps(meters, t0 + 1, spread_s=30)) + engine.advance(t0 + 120)
        results.append([(o["kind"], o["Equipment"], o["metersAffected"]) for o in outages(out)])
    assert results[0] == results[1] == [("feeder", {"mRID": feeder, "name": before.feeders[feeder].name,
                                                    "kind": "Feeder"}, len(meters))]


def test_a_meter_unknown_then_connected_is_looked_up_as_of_each_time(network):
    # Given a meter connected at 06:00 (a new connection), looked up first before it existed
    model, store, before, _ = network
    meter = model.meter_of(len(model.consumer_dt) - 1)
    topo = StoreTopology(store)
    t = float(epoch_of(CONNECT))
    assert topo.locate(meter, t - 1) is None
    # Then the cached "unknown" does not hide it once it is connected
    place = topo.locate(meter, t)
    assert place is not None and place.dt == model.where(meter, t + 1)["dt"]
    assert topo.locate(meter, t - 1) is None and topo.locate(meter, t + 5) == place


def test_a_meter_added_to_the_store_after_it_was_looked_up_is_found_once_the_store_changed(tmp_path):
    # Given a store without a network, and a topology that looked a meter up (unknown)
    model = NetworkModel.generate(1000, seed=5, dts_per_feeder=5, feeders_per_substation=2, start=START)
    store = open_store(tmp_path / "network.sqlite")
    writer = open_store(tmp_path / "network.sqlite")  # the GIS import: another connection
    clock = [0.0]
    topo = StoreTopology(store, check_s=1, clock=lambda: clock[0])
    meter, t = model.meter_of(3), epoch_of(START) + 7200
    topo.prefetch([meter], t, t)
    assert topo.locate(meter, t) is None
    # When the GIS loads the network (written through another connection, as by another process)
    import threading
    done = threading.Thread(target=lambda: writer.apply(list(model.creates())))
    done.start()
    done.join()
    # Then within check_s the cached answer stands, and after it the meter is found
    clock[0] = 0.5
    topo.prefetch([meter], t, t)
    assert topo.locate(meter, t) is None
    clock[0] = 1.5
    topo.prefetch([meter], t, t)
    assert topo.locate(meter, t) is not None and topo.locate(meter, t).dt == model.where(meter, t)["dt"]
    # And with no write since, nothing is dropped: the next batch's lookups are cached
    queries = topo.queries
    clock[0] = 9
    topo.prefetch([meter], t, t)
    assert topo.locate(meter, t) is not None and topo.queries == queries


def test_feeders_over_names_every_feeder_a_meter_was_under_in_the_range(network):
    model, store, before, moved = network
    topo = StoreTopology(store)
    dt = moved[0]
    meter = before.dts[dt].meters[0]
    old = before.dts[dt].feeder
    new = model.where(meter, epoch_of(MOVE) + 60)["feeder"]
    # Given a DT that moved to another feeder at MOVE
    got = topo.feeders_over([meter], epoch_of(MOVE) - 3600, epoch_of(MOVE) + 60)
    # Then over a range across the move both feeders are named, before it only the old one
    assert got == {meter: {old, new}}
    assert topo.feeders_over([meter], epoch_of(START) + 60, epoch_of(MOVE) - 60) == {meter: {old}}
    assert topo.feeders_over(["NOT-A-METER"], epoch_of(START), epoch_of(MOVE)) == {"NOT-A-METER": set()}
