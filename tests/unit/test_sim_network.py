"""The generated network (simulators.network): its shape, determinism, the change streams
replayed by the contract's rules, snapshots, and the ground truth as of a time."""
from __future__ import annotations

import collections
import csv
import datetime as dt
import json

import pytest

from simulators.hes_alarms import Network, feeder_trip
from simulators.network import (CATEGORIES, RATINGS_KVA, SNAPSHOT_HEADER, NetworkModel, change_document, documents,
                                epoch_of, main)

PARENT_TYPE = {"feeder": "substation", "dt": "feeder", "consumer": "dt"}


def small(**kw):
    return NetworkModel.generate(**{"consumers": 20_000, "seed": 7, "dts_per_feeder": 5,
                                    "feeders_per_substation": 4, **kw})


class Replay:
    """A GIS change consumer as the contract states it: parents exist and have the proper type,
    sequences and effectiveFrom never go back, retire only what has no live children."""

    def __init__(self) -> None:
        self.elements: dict[str, dict] = {}
        self.children: dict[str, set[str]] = collections.defaultdict(set)
        self.sequence, self.at = 0, 0

    def apply(self, changes):
        for c in changes:
            assert c["sequence"] > self.sequence and c["changeId"] == f"gis-{c['sequence']:06d}", c
            assert epoch_of(c["effectiveFrom"]) >= self.at, c
            self.sequence, self.at = c["sequence"], epoch_of(c["effectiveFrom"])
            mrid, kind = c["mrid"], c["kind"]
            if kind == "create":
                assert mrid not in self.elements, c
                assert ("parent" in c) == (c["type"] != "substation"), c
                self.elements[mrid] = {"type": c["type"], "parent": c.get("parent"), "name": c["name"],
                                       "attributes": dict(c["attributes"]), "live": True}
            else:
                assert self.elements[mrid]["live"] and self.elements[mrid]["type"] == c["type"], c
            element = self.elements[mrid]
            if kind == "create" and c["type"] == "substation":
                continue
            if kind in ("create", "move"):
                parent = self.elements[c["parent"]]
                assert parent["live"] and parent["type"] == PARENT_TYPE[c["type"]], c
                self.children[element["parent"]].discard(mrid)
                element["parent"] = c["parent"]
                self.children[c["parent"]].add(mrid)
            elif kind == "update":
                assert set(c["attributes"]) <= set(element["attributes"]), c
                element["attributes"].update(c["attributes"])
            else:
                assert kind == "retire" and not self.children[mrid], c
                element["live"] = False
                self.children[element["parent"]].discard(mrid)

    def snapshot(self):
        rows = set()
        for mrid, e in self.elements.items():
            if e["type"] == "consumer" and e["live"]:
                d = self.elements[e["parent"]]
                f = self.elements[d["parent"]]
                a = e["attributes"]
                rows.add((mrid, a["consumer_no"], a["meter"], a["category"], a["circle"], a["division"],
                          a["subdivision"], e["parent"], str(d["attributes"]["rating_kva"]), d["attributes"]["dt_meter"],
                          d["parent"], str(f["attributes"]["voltage_kv"]), f["attributes"]["head_meter"], f["parent"]))
        return rows


def snapshot_set(model, tmp_path, name="s.csv", fraction=1.0):
    rows = model.write_snapshot(tmp_path / name, fraction)
    with open(tmp_path / name, newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == SNAPSHOT_HEADER
        out = {tuple(r) for r in reader}
    assert len(out) == rows
    return out


def test_the_network_has_the_shape_of_a_distribution_network():
    # Given a generated network of 20,000 consumers
    m = small()
    creates = list(m.creates())
    by_type = collections.Counter(c["type"] for c in creates)

    # Then about one DT per 100 consumers, 5 DTs per feeder, 4 feeders per substation
    assert by_type == {"substation": 10, "feeder": 40, "dt": 200, "consumer": 20_000}
    dts = [c for c in creates if c["type"] == "dt"]
    assert {d["attributes"]["rating_kva"] for d in dts} <= set(RATINGS_KVA)
    per_dt = collections.Counter(c["parent"] for c in creates if c["type"] == "consumer")
    assert min(per_dt.values()) >= 20 and max(per_dt.values()) <= 200
    # roughly proportional to the rating: the mean count grows with it
    mean = {r: sum(per_dt[d["mrid"]] for d in dts if d["attributes"]["rating_kva"] == r) /
            max(1, sum(1 for d in dts if d["attributes"]["rating_kva"] == r)) for r in RATINGS_KVA}
    present = [mean[r] for r in RATINGS_KVA if mean[r]]
    assert present == sorted(present)

    # And meters are UPM%08d in a row, every feeder and DT has its own meter, mostly domestic
    consumers = [c for c in creates if c["type"] == "consumer"]
    assert [c["attributes"]["meter"] for c in consumers] == [f"UPM{n:08d}" for n in range(1, 20_001)]
    assert len({c["attributes"]["head_meter"] for c in creates if c["type"] == "feeder"}) == 40
    assert len({d["attributes"]["dt_meter"] for d in dts}) == 200
    categories = collections.Counter(c["attributes"]["category"] for c in consumers)
    assert set(categories) <= set(CATEGORIES) and categories["domestic"] > 0.7 * len(consumers)

    # And a feeder's consumers share one subdivision, a subdivision one division and circle
    feeder_of = {d["mrid"]: d["parent"] for d in dts}
    codes_by_feeder = collections.defaultdict(set)
    for c in consumers:
        a = c["attributes"]
        codes_by_feeder[feeder_of[c["parent"]]].add((a["circle"], a["division"], a["subdivision"]))
        assert a["subdivision"].startswith(a["division"]) and a["division"].startswith(a["circle"])
    assert all(len(codes) == 1 for codes in codes_by_feeder.values())
    assert len({c for codes in codes_by_feeder.values() for c in codes}) == 5


def test_generation_is_deterministic_for_a_seed():
    a, b, c = small(), small(), small(seed=8)
    assert list(a.creates()) == list(b.creates()) != list(c.creates())
    assert a.dt_moves(5) == b.dt_moves(5) and a.drift(0.01) == b.drift(0.01)


def test_the_network_and_every_stream_replay_by_the_rules_into_the_snapshot(tmp_path):
    # Given the generated network replayed as a GIS consumer would
    m, store = small(), Replay()
    store.apply(m.creates())

    # When every stream runs, one after the other
    streams = [m.new_connections(30), m.meter_replacements(40), m.dt_moves(12), m.retirements(2),
               m.dt_moves(3, from_feeder="FDR-0002", to_feeder="FDR-0001"), m.drift(0.01)]
    for changes in streams:
        store.apply(changes)

    # Then each was valid (parents exist, proper types, sequences grow) and the replayed
    # store gives exactly the model's snapshot
    kinds = [{(c["kind"], c["type"]) for c in s} for s in streams]
    assert kinds[:4] == [{("create", "consumer")}, {("update", "consumer")}, {("move", "dt")},
                         {("retire", "consumer"), ("retire", "dt")}]
    assert store.snapshot() == snapshot_set(m, tmp_path)
    assert len(store.snapshot()) == len(m) == 20_000 + 30 - sum(1 for c in streams[3] if c["type"] == "consumer")
    # retirements take the consumers first, then their emptied DT
    assert [c["type"] for c in streams[3]][-1] == "dt"
    # a default reconfiguration keeps each DT within its substation
    moved = {c["mrid"]: c["parent"] for c in streams[2]}
    assert all(m.where(m.meter_of(m.consumers_of_dt(m.index_of(d)[1])[0]))["substation"] ==
               f"SS-{m.feeder_substation[m.index_of(f)[1]] + 1:03d}" for d, f in moved.items())


def test_a_drifted_copy_changes_exactly_one_percent_and_a_truncated_snapshot_has_half(tmp_path):
    # Given a network and a copy in which 1 % of consumers changed
    m = small()
    before = snapshot_set(m, tmp_path, "before.csv")
    changed = m.copy()
    drift = changed.drift(0.01)
    after = snapshot_set(changed, tmp_path, "after.csv")

    # Then the rows differing are exactly those of the changed consumers, the original untouched
    differing = {r[0] for r in before ^ after}
    assert differing == {c["mrid"] for c in drift} and len(drift) == 200
    assert snapshot_set(m, tmp_path, "again.csv") == before
    assert collections.Counter(c["kind"] for c in drift) == {"update": 160, "move": 40}

    # And a truncated export holds half the rows
    assert len(snapshot_set(m, tmp_path, "half.csv", fraction=0.5)) == 10_000


def test_the_ground_truth_answers_as_of_a_time():
    m = small()
    t0 = "2026-11-01T00:00:00+05:30"
    # Given a DT moved at 02:00 on 3 Nov, a meter replaced and a DT retired after it
    [move] = m.dt_moves(1, at="2026-11-03T02:00:00+05:30")
    d = m.index_of(move["mrid"])[1]
    meter = m.meter_of(m.consumers_of_dt(d)[0])
    old_feeder = m.where(meter, "2026-11-03T01:59:59+05:30")["feeder"]
    [replace] = m.meter_replacements(consumers=[m.where("UPM00000005")["consumer"]])
    retired = m.retirements(1)

    # Then before the move the meter hangs under the old feeder, after it under the new one
    assert old_feeder != move["parent"] and m.where(meter)["feeder"] == move["parent"]
    assert m.where(meter, "2026-11-03T02:00:00+05:30")["dt"] == move["mrid"]
    # a replaced meter is gone after the replacement, its successor there
    assert m.where("UPM00000005", t0)["consumer"] == replace["mrid"] and m.where("UPM00000005") is None
    assert m.where(replace["attributes"]["meter"])["consumer"] == replace["mrid"]
    assert m.where(replace["attributes"]["meter"], t0) is None
    # and at the very instant of the replacement, the new meter is the consumer's, the old one no one's
    assert m.where(replace["attributes"]["meter"], replace["effectiveFrom"])["consumer"] == replace["mrid"]
    assert m.where("UPM00000005", replace["effectiveFrom"]) is None
    # a retired consumer's meter is nowhere now, and its path says retired
    gone = next(c["mrid"] for c in retired if c["type"] == "consumer")
    path = m.consumer_path(gone)
    assert path["retired"] and m.where(path["meter"]) is None and not m.consumer_path(gone, t0)["retired"]
    assert m.where("UPM99999999") is None


def test_the_alarm_generator_takes_its_network_from_the_model_or_its_snapshot(tmp_path):
    # Given the generated network, moved a little, and its snapshot
    m = small(consumers=3000)
    m.dt_moves(2)
    m.write_snapshot(tmp_path / "s.csv")

    # When the alarm network is built from the model and from the snapshot
    from_model, from_csv = Network.from_model(m), Network.load(tmp_path / "s.csv")

    # Then both hang every meter where the ground truth says, and a trip hits exactly a feeder's meters
    assert from_model.feeders == from_csv.feeders and len(from_model) == 3000
    for meter in from_model.meters[::97]:
        assert (from_model.feeder_of(meter), from_model.dt_of(meter)) == (m.where(meter)["feeder"], m.where(meter)["dt"])
    at = dt.datetime(2026, 11, 4, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    gasps = feeder_trip(from_model, "FDR-0002", at)
    assert {a["meter"] for a in gasps} == {mt for d in m.dts_of_feeder(1) for mt in map(m.meter_of, m.consumers_of_dt(d))}


def test_documents_cut_changes_in_order_and_the_command_line_writes_files(tmp_path):
    m = small(consumers=500)
    docs = list(documents(m.creates(), batch=200))
    assert [len(d["Payload"]["changes"]) for d in docs] == [200, 200, 107]       # 1 substation, 1 feeder, 5 DTs, 500 consumers
    assert docs[0]["Header"] == change_document(list(m.creates())[:200])["Header"]
    assert main(["snapshot", "--consumers", "500", "--out", str(tmp_path / "s.csv"), "--drift", "0.02"]) == 0
    assert main(["document", "--consumers", "500", "--out", str(tmp_path / "full.json")]) == 0
    assert main(["stream", "--stream", "dt-moves", "--count", "2", "--consumers", "5000",
                 "--out", str(tmp_path / "moves.json")]) == 0
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 501
    assert len(json.loads((tmp_path / "full.json").read_text())["Payload"]["changes"]) == 507
    assert [c["kind"] for c in json.loads((tmp_path / "moves.json").read_text())["Payload"]["changes"]] == ["move"] * 2


def test_impossible_requests_are_refused():
    m = small(consumers=500)
    with pytest.raises(ValueError):
        NetworkModel.generate(10)
    with pytest.raises(ValueError, match="forward in time"):
        m.new_connections(1, at="2020-01-01T00:00:00+05:30")
    with pytest.raises(ValueError, match="unknown stream"):
        m.stream("teleport")
    with pytest.raises(KeyError):
        m.index_of("XYZ-1")
