"""The outage store on SQLite and on PostgreSQL: a partition's log, checkpoint and outbox, and
the outages and timelines `gridbus outages list|show` read."""
from __future__ import annotations

import uuid

import pytest

from bus.outages.store import open_outage_store
from tests.postgres import postgres_url  # noqa: F401  (fixture)


def _doc(mrid: str, verb: str = "created", feeder: str = "FDR-1") -> dict:
    return {"type": "outage", "verb": verb, "messageId": f"{mrid}/1", "Outage": {
        "mRID": mrid, "kind": "dt", "feeder": feeder, "Equipment": {"mRID": "DT-1", "name": "DT one", "kind": "PowerTransformer"},
        "actualPeriod": {"start": "2026-12-05T00:00:00Z", "end": None}, "metersAffected": 80,
        "outageKind": "estimated", "durationKind": None}}


def check(store, route: str) -> None:
    # Given nothing for the partition
    assert store.checkpoint(route, 0) is None and store.last_seq(route, 0) == 0
    # When two batches are logged with what they decided
    with store.writing():
        store.append(route, 0, 1, [{"t": "tick", "w": 1.0}])
        assert store.add_messages(route, 0, 1, [("OUT-1/1", "OUT-1", "outage", "created", _doc("OUT-1"))]) == 1
        store.put_outage(route, 0, _doc("OUT-1")["Outage"], "open")
        store.add_timeline([("OUT-1", 1.0, "created", {"messageId": "OUT-1/1"})])
    with store.writing():
        store.append(route, 0, 2, [{"t": "tick", "w": 2.0}])
        # a replayed batch decides the same message again: written once
        assert store.add_messages(route, 0, 2, [("OUT-1/1", "OUT-1", "outage", "created", _doc("OUT-1"))]) == 0
    # Then the log replays in order and the outbox holds the message unsent
    assert [s for s, _ in store.log_after(route, 0, 0)] == [1, 2] and store.last_seq(route, 0) == 2
    assert [m for m, _, _ in store.unsent(route, 0)] == ["OUT-1/1"]
    store.mark_sent(["OUT-1/1"])
    assert store.unsent(route, 0) == [] and store.messages("OUT-1")[0]["sent"] is not None
    # When a checkpoint is saved at seq 2, the log up to it goes, and the seq stays
    store.save_checkpoint(route, 0, 2, {"watermark": 2.0})
    assert store.checkpoint(route, 0) == (2, {"watermark": 2.0})
    assert list(store.log_after(route, 0, 0)) == [] and store.last_seq(route, 0) == 2
    # And the outage is listed and shown
    assert [o["mRID"] for o in store.outages(open_only=True, feeder="FDR-1")] == ["OUT-1"]
    assert store.outages(feeder="FDR-9") == []
    assert store.outage("OUT-1")["state"] == "open" and store.outage("nope") is None
    assert [r["what"] for r in store.timeline("OUT-1")] == ["created"]
    assert store.counts() == {"open": 1, "unsent_messages": 0}
    # And a closed outage is forgotten once older than the retention, an open one never
    with store.writing():
        store.put_outage(route, 0, _doc("OUT-2", "closed")["Outage"], "closed")
    assert store.prune(route, before=0) == 0
    assert store.prune(route, before=9e9) == 1
    assert store.outage("OUT-2") is None and store.outage("OUT-1") is not None


def test_the_outage_store_on_sqlite(tmp_path):
    check(open_outage_store(tmp_path / "state" / "outages.sqlite"), "r1")


def test_the_outage_store_on_postgresql(postgres_url):  # noqa: F811
    check(open_outage_store(postgres_url), f"r-{uuid.uuid4().hex[:8]}")


def test_the_network_stores_version_moves_when_the_gis_writes_on_postgresql(postgres_url):  # noqa: F811
    from bus.network import open_store
    from tests.support import wait_for

    # Given the network store on PostgreSQL and the version a correlator's topology last saw
    store = open_store(postgres_url)
    seen = store.db.data_version()
    # When a change is applied
    assert not store.apply([{"changeId": f"v-{uuid.uuid4().hex[:8]}", "sequence": 1, "kind": "create",
                             "type": "substation", "mrid": f"SS-{uuid.uuid4().hex[:6]}", "parent": None,
                             "effectiveFrom": "2026-11-01T00:00:00Z", "attributes": {}}]).refused
    # Then the version moves (the statistics reach the view within a second or so)
    wait_for(lambda: store.db.data_version() != seen, 10, "the version to move")
