"""The bulk path (a create-only document into an empty store) against the ordinary path: the same
document gives the same outcomes, rows and outbox either way, across chunk boundaries."""
from __future__ import annotations

import pytest

from bus.network import apply as apply_module
from bus.network import open_store
from bus.network.model import parse_time
from bus.network.snapshot_apply import import_snapshot
from bus.network.store import iso
from simulators.network import NetworkModel

NOV1 = "2026-11-01T00:00:00+05:30"


def _document(model: NetworkModel) -> list[dict]:
    changes = list(model.creates())
    seq = changes[-1]["sequence"]
    first_consumer = next(c for c in changes if c["type"] == "consumer")
    last_dt = [c for c in changes if c["type"] == "dt"][-1]
    extra = [
        dict(changes[5]),                                                         # a change id applied before
        dict(first_consumer, changeId="x-1", sequence=seq + 1),                   # a create of a known consumer
        dict(first_consumer, changeId="x-2", sequence=seq + 2, mrid="CON-NEW-1"),  # its meter, on another
        dict(first_consumer, changeId="x-3", sequence=seq + 3, mrid="CON-NEW-2",
             attributes={**first_consumer["attributes"], "meter": "UPM-NEW-2"}),  # a good one
        {"changeId": "x-4", "sequence": seq + 4, "effectiveFrom": "2026-11-02T00:00:00+05:30", "kind": "move",
         "type": "dt", "mrid": first_consumer["parent"], "parent": last_dt["parent"]},  # ends the bulk path
    ]
    consumers = [i for i, c in enumerate(changes) if c["type"] == "consumer"]
    middle = consumers[len(consumers) // 2]
    a_consumer, a_dt, a_feeder = changes[middle], last_dt, last_dt["parent"]

    def hostile(n, **fields):
        return dict(a_consumer, changeId=f"h-{n}", sequence=seq + 10 + n, **fields)

    def meter(serial):
        return {**a_consumer["attributes"], "meter": serial}

    # next to ordinary consumer creates, in the same chunk: the short path must refuse or defer
    # exactly as the ordinary path does
    within = [
        hostile(1, mrid="CON-TWICE", attributes=meter("UPM-T1")),
        hostile(2, mrid="CON-TWICE", attributes=meter("UPM-T2")),           # the same mRID again
        hostile(3, mrid="CON-M1", attributes=meter("UPM-SHARED")),
        hostile(4, mrid="CON-M2", attributes=meter("UPM-SHARED")),          # the same meter again
        hostile(5, mrid="CON-ID1", attributes=meter("UPM-ID1")),
        dict(hostile(5, mrid="CON-ID2", attributes=meter("UPM-ID2")), sequence=seq + 30),  # the same change id
        hostile(6, mrid="CON-UNDER-FEEDER", parent=a_feeder, attributes=meter("UPM-F")),
        hostile(7, mrid="CON-UNDER-NOTHING", parent="DT-NOWHERE", attributes=meter("UPM-N")),
        hostile(8, mrid=a_dt["mrid"], attributes=meter("UPM-DT")),           # a DT's mRID
        hostile(9, mrid="CON-EARLY", effectiveFrom="2020-01-01T00:00:00Z", attributes=meter("UPM-E")),
        hostile(10, mrid="CON-NULL", attributes={**meter("UPM-NULL"), "category": None}),
        hostile(11, mrid="CON-PARENT", attributes=meter("UPM-P")),
        hostile(12, mrid="CON-CHILD", parent="CON-PARENT", attributes=meter("UPM-C")),  # under a consumer
        hostile(13, mrid="CON-METER-OF-DT", attributes=meter(a_dt["attributes"]["dt_meter"])),
    ]
    return changes[:middle] + within + changes[middle:] + extra


@pytest.mark.parametrize("chunk", [700, 20_000])
def test_a_create_only_load_into_an_empty_store_equals_the_ordinary_path(tmp_path, monkeypatch, chunk):
    # Given a generated network's creates with a duplicate, an existing mRID, a taken meter and a DT
    # move at the end, and chunks small enough that they span several
    monkeypatch.setattr(apply_module, "BULK_CHUNK", chunk)
    monkeypatch.setattr(apply_module, "CHUNK", chunk)
    document = _document(NetworkModel.generate(2_000, seed=5))
    empty = open_store(tmp_path / "empty.sqlite")
    ordinary = open_store(tmp_path / "ordinary.sqlite")
    assert not ordinary.apply([{"changeId": "seed", "sequence": 0, "effectiveFrom": NOV1, "kind": "create",
                                "type": "substation", "mrid": "SS-ELSEWHERE", "attributes": {}}]).refused
    # When the document is applied to the empty store (bulk path) and to the other (ordinary path)
    bulk_result = empty.apply(document)
    ordinary_result = ordinary.apply(document)
    # Then the outcomes are the same, change by change, with the expected refusals
    assert [o.as_dict() for o in bulk_result.outcomes] == [o.as_dict() for o in ordinary_result.outcomes]
    assert [o.code.value for o in bulk_result.outcomes[-5:] if o.code] == ["DUPLICATE", "EXISTS", "METER_IN_USE"]
    hostile = {o.change_id: o.code.value if o.code else o.status for o in bulk_result.outcomes
               if (o.change_id or "").startswith("h-")}
    assert hostile == {"h-1": "applied", "h-2": "EXISTS", "h-3": "applied", "h-4": "METER_IN_USE",
                       "h-5": "DUPLICATE", "h-6": "WRONG_PARENT_TYPE", "h-7": "UNKNOWN_PARENT", "h-8": "EXISTS",
                       "h-9": "UNKNOWN_PARENT", "h-10": "applied", "h-11": "applied", "h-12": "WRONG_PARENT_TYPE",
                       "h-13": "METER_IN_USE"}
    assert bulk_result.updates == ordinary_result.updates
    # and so are the rows, the outbox, and the indexes are back
    rows = "SELECT mrid, version, parent, meter, valid_from, valid_to FROM elements WHERE mrid <> 'SS-ELSEWHERE' " \
           "ORDER BY mrid, version"
    assert empty.db.rows(rows) == ordinary.db.rows(rows)
    outbox = "SELECT consumer, version, body FROM outbox ORDER BY id"
    assert empty.db.rows(outbox) == ordinary.db.rows(outbox)
    versions = "SELECT consumer, version FROM path_versions ORDER BY consumer"
    assert empty.db.rows(versions) == ordinary.db.rows(versions)
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    assert empty.db.rows(indexes) == ordinary.db.rows(indexes)
    assert not (tmp_path / "empty.sqlite-wal").exists() or (tmp_path / "empty.sqlite-wal").stat().st_size == 0


def test_a_snapshot_imported_into_an_empty_store_equals_the_ordinary_path(tmp_path):
    # Given a generated network's snapshot, and an instant whose ISO text (microseconds) rounds up
    model = NetworkModel.generate(3_000, seed=9)
    model.write_snapshot(tmp_path / "day-1.csv")
    at = next(t for t in (1_764_900_000.0 + i / 7 for i in range(100)) if parse_time(iso(t)) > t)
    empty = open_store(tmp_path / "empty.sqlite")
    ordinary = open_store(tmp_path / "ordinary.sqlite")
    assert not ordinary.apply([{"changeId": "seed", "sequence": 0, "effectiveFrom": NOV1, "kind": "create",
                                "type": "substation", "mrid": "SS-ELSEWHERE", "attributes": {}}]).refused
    # When it is imported into the empty store (the consumers' short path) and into the other
    bulk = import_snapshot(empty, tmp_path / "day-1.csv", at)
    ordinary_outcome = import_snapshot(ordinary, tmp_path / "day-1.csv", at)
    # Then every change applies on both, and the rows and outbox bodies are the same
    assert bulk.status == ordinary_outcome.status == "applied"
    assert bulk.result.count("applied") == 3_000 + model.dts + model.feeders + model.substations
    rows = "SELECT mrid, version, type, parent, meter, attributes, valid_from, valid_to, change_id FROM elements " \
           "WHERE mrid <> 'SS-ELSEWHERE' ORDER BY mrid, version"
    assert empty.db.rows(rows) == ordinary.db.rows(rows)
    outbox = "SELECT consumer, version, change_id, effective_from, body FROM outbox ORDER BY id"
    assert empty.db.rows(outbox) == ordinary.db.rows(outbox)
    changes = "SELECT change_id, sequence, mrid, kind, type, effective_from FROM changes " \
              "WHERE change_id <> 'seed' ORDER BY sequence"
    assert empty.db.rows(changes) == ordinary.db.rows(changes)
    versions = "SELECT consumer, version FROM path_versions ORDER BY consumer"
    assert empty.db.rows(versions) == ordinary.db.rows(versions) and len(empty.db.rows(versions)) == 3_000
