"""The bulk path (a create-only document into an empty store) against the ordinary path: the same
document gives the same outcomes, rows and outbox either way, across chunk boundaries."""
from __future__ import annotations

import pytest

from bus.network import apply as apply_module
from bus.network import open_store
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
    return changes + extra


@pytest.mark.parametrize("chunk", [700])
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
    assert bulk_result.updates == ordinary_result.updates
    # and so are the rows, the outbox, and the indexes are back
    rows = "SELECT mrid, version, parent, meter, valid_from, valid_to FROM elements WHERE mrid <> 'SS-ELSEWHERE' " \
           "ORDER BY mrid, version"
    assert empty.db.rows(rows) == ordinary.db.rows(rows)
    outbox = "SELECT consumer, version, body FROM outbox ORDER BY id"
    assert empty.db.rows(outbox) == ordinary.db.rows(outbox)
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    assert empty.db.rows(indexes) == ordinary.db.rows(indexes)
    assert not (tmp_path / "empty.sqlite-wal").exists() or (tmp_path / "empty.sqlite-wal").stat().st_size == 0
