"""The snapshot file drop's core, against a real SQLite store and the generated network (no
broker): a snapshot diffed against the store emits only the real changes; one that would retire
too much is held, then approved or discarded; hostile rows are rejected by line."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from bus.cli.network import network
from bus.network import open_store
from bus.network.snapshot import SnapshotError, diff_snapshot
from bus.network.snapshot_apply import import_snapshot
from bus.operators import OperatorStore, operators_path
from simulators.network import SNAPSHOT_HEADER, NetworkModel

CONSUMERS = 3_000


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return NetworkModel.generate(CONSUMERS, seed=7)


@pytest.fixture
def store(tmp_path, model):
    store = open_store(tmp_path / "network.sqlite")
    assert not store.apply(model.creates()).refused
    return store


def _later(seconds: float = 0) -> float:
    return time.time() + seconds


def test_a_snapshot_equal_to_the_store_emits_nothing(store, model, tmp_path):
    # Given the store loaded from the generated network and that network's snapshot
    model.write_snapshot(tmp_path / "same.csv")
    # When the snapshot is diffed and imported
    outcome = import_snapshot(store, tmp_path / "same.csv", _later())
    # Then every row is accepted and no change is emitted or applied
    assert outcome.status == "unchanged"
    assert (outcome.diff.rows, outcome.diff.accepted, outcome.diff.total) == (CONSUMERS, CONSUMERS, 0)
    assert store.stats()["changesApplied"] == CONSUMERS + model.dts + model.feeders + model.substations


def test_a_snapshot_with_one_percent_changed_emits_exactly_those_changes(store, model, tmp_path):
    # Given a copy of the network drifted by 1 % (the generator's ground truth of what changed)
    drifted = model.copy()
    truth = drifted.drift(0.01)
    drifted.write_snapshot(tmp_path / "drift.csv")
    before = store.last_sequence()
    # When the drifted snapshot is diffed
    with diff_snapshot(store, tmp_path / "drift.csv", _later()) as diff:
        changes = list(diff.changes())
    # Then the changes are the ground truth's: same consumers, kinds, new DTs and attributes
    assert sorted((c["kind"], c["mrid"], c.get("parent")) for c in changes) == \
        sorted((c["kind"], c["mrid"], c.get("parent")) for c in truth)
    ours = {c["mrid"]: c["attributes"] for c in changes}
    for c in truth:
        assert ours[c["mrid"]] == c.get("attributes", {}), c
    # and they carry ids from the checksum and sequences above the store's
    assert all(c["changeId"].startswith(f"snap-{diff.checksum[:16]}-") for c in changes)
    assert [c["sequence"] for c in changes] == list(range(before + 1, before + 1 + len(changes)))
    # When it is imported, then all apply, one path update each, and the store equals the GIS again
    outcome = import_snapshot(store, tmp_path / "drift.csv", _later(1))
    assert outcome.status == "applied" and outcome.result.updates == len(truth)
    again = import_snapshot(store, tmp_path / "drift.csv", _later(2))
    assert again.status == "unchanged"


def test_a_truncated_snapshot_is_held_then_approved_or_discarded(store, model, tmp_path, monkeypatch):
    # Given an approver and half of the network's snapshot (a truncated export)
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    monkeypatch.setenv("GRIDBUS_HOME", str(home))
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(home / "none.env"))
    monkeypatch.setenv("GRIDBUS_NETWORK_STORE", store.location)
    monkeypatch.setenv("GRIDBUS_OPERATOR_PASSWORD", "correct horse battery")
    OperatorStore(operators_path(home / "state")).add("bob", "approver", "correct horse battery")
    model.write_snapshot(tmp_path / "half.csv", fraction=0.5)
    runner = CliRunner()
    # When it is imported
    result = runner.invoke(network, ["snapshot", str(tmp_path / "half.csv"), "--json"])
    # Then nothing is retired: it is held, and listed with its reason
    assert result.exit_code == 0, result.output
    assert store.counts()["consumer"] == CONSUMERS
    held = runner.invoke(network, ["held", "--json"])
    [doc] = __import__("json").loads(held.output)
    assert "would retire 1,500 of 3,000 consumers" in doc["reason"] and doc["counts"]["rowsRead"] == CONSUMERS // 2
    # When someone who is no approver tries to approve it, then it is refused and still held
    refused = runner.invoke(network, ["approve", doc["id"], "--user", "mallory"])
    assert refused.exit_code == 1 and store.held()
    # When bob approves it, then half of the consumers are retired, and it is no longer held
    approved = runner.invoke(network, ["approve", doc["id"], "--user", "bob"])
    assert approved.exit_code == 0, approved.output
    assert store.counts(_later(5))["consumer"] == CONSUMERS // 2 and not store.held()
    assert store.held(doc["id"], state=None)[0]["decidedBy"] == "bob"


def test_a_discarded_held_snapshot_changes_nothing(store, model, tmp_path):
    # Given a truncated snapshot held
    model.write_snapshot(tmp_path / "half.csv", fraction=0.5)
    outcome = import_snapshot(store, tmp_path / "half.csv", _later())
    assert outcome.status == "held"
    from bus.network.snapshot_apply import discard_held
    # When it is discarded
    discard_held(store, outcome.held_id, "bob")
    # Then nothing is held, the store still has every consumer, and discarding again is refused
    assert store.held() == [] and store.counts(_later(5))["consumer"] == CONSUMERS
    with pytest.raises(Exception, match="no held snapshot"):
        discard_held(store, outcome.held_id, "bob")
    # When the same file is dropped again, then it is held again
    assert import_snapshot(store, tmp_path / "half.csv", _later(6)).status == "held"
    assert [d["id"] for d in store.held()] == [outcome.held_id]


def test_hostile_rows_are_rejected_by_line_with_a_reason_and_never_retire(store, model, tmp_path):
    # Given the network's snapshot with hostile lines mixed in
    lines = list(model.snapshot_lines())
    good = dict(zip(SNAPSHOT_HEADER, lines[0].split(",")))
    row = dict(good, consumer="CON-NEW-1", meter="UPM-NEW-1", consumer_no="X1")
    bad = [
        ",".join(lines[1].split(",")[:5]),                                  # 3: missing columns
        ",".join(dict(row, consumer="").values()),                          # 4: blank id
        lines[0],                                                           # 5: a consumer twice
        ",".join(dict(row, meter=good["meter"]).values()),                  # 6: a meter on two consumers
        ",".join(dict(row, category="x" * 5000).values()),                  # 7: a huge field
        None,                                                               # 8: not UTF-8 (below)
        ",".join(dict(row, consumer="CON-NEW-3", meter="UPM-NEW-3", dt=good["dt"], feeder="FDR-OTHER").values()),
    ]
    body = [",".join(SNAPSHOT_HEADER), lines[0]] + bad + lines[1:]
    latin = ",".join(dict(row, consumer="CON-NEW-2", meter="UPM-NEW-2", category="\xe9lec").values()).encode("latin-1")
    data = b"\n".join(latin if line is None else line.encode() for line in body)
    (tmp_path / "hostile.csv").write_bytes(data + b"\n" + b"A" * 100_000 + b"\n")
    # When it is diffed
    with diff_snapshot(store, tmp_path / "hostile.csv", _later()) as diff:
        changes = list(diff.changes())
    # Then each hostile line is rejected with its number and why; the good rows emit nothing
    reasons = dict(diff.rejected_lines)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, len(body) + 1]
    assert "fields" in reasons[3] and "consumer is blank" in reasons[4]
    assert "on line 2 already" in reasons[5] and f"meter {good['meter']} is on line 2" in reasons[6]
    assert "5,000 characters" in reasons[7] and "not UTF-8" in reasons[8]
    assert "FDR-OTHER" in reasons[9] and "longer than" in reasons[len(body) + 1]
    assert diff.accepted == CONSUMERS and changes == []  # the consumer of the short line 3 is not retired


def test_a_file_without_the_snapshot_header_is_refused_whole(store, tmp_path):
    # Given a CSV whose header lacks the DT column
    (tmp_path / "wrong.csv").write_text("consumer,meter\nC-1,M-1\n")
    # When it is diffed, then it is refused as a whole, naming the missing columns
    with pytest.raises(SnapshotError, match="lacks consumer_no"):
        diff_snapshot(store, tmp_path / "wrong.csv", _later())


def test_a_snapshot_into_an_empty_store_creates_the_network_parents_first(tmp_path, model):
    # Given an empty store and the generated network's snapshot
    store = open_store(tmp_path / "empty.sqlite")
    model.write_snapshot(tmp_path / "all.csv")
    # When it is imported
    outcome = import_snapshot(store, tmp_path / "all.csv", _later())
    # Then every element is created and none refused; the export equals the snapshot's rows
    assert outcome.status == "applied", outcome.report()["refusedChanges"][:3]
    assert store.counts() == {"substation": model.substations, "feeder": model.feeders, "dt": model.dts,
                              "consumer": CONSUMERS}
    exported = sorted(tuple(r.values()) for r in store.export_rows())
    assert exported == sorted(tuple(r.values()) for r in model.snapshot_rows())
