"""The same network-store behaviour on PostgreSQL (a real server, started for the session)."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from bus.network import open_store
from bus.network.model import Reason
from tests.postgres import postgres_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.broker

NOV1 = "2026-11-01T00:00:00+05:30"
NOV3 = "2026-11-03T02:00:00+05:30"


def test_postgres_network_store_validates_answers_as_of_and_fills_the_outbox(postgres_url):  # noqa: F811
    # Given a PostgreSQL network store (element names unique to this run: the database is shared)
    store = open_store(postgres_url)
    p = uuid.uuid4().hex[:8]
    n = iter(range(1, 1000))

    def change(kind, type_, mrid, parent=None, at=NOV1, **attributes):
        i = next(n)
        return {"changeId": f"{p}-{i}", "sequence": i, "effectiveFrom": at, "kind": kind, "type": type_,
                "mrid": f"{p}-{mrid}", "parent": f"{p}-{parent}" if parent else None, "attributes": attributes}

    network = [change("create", "substation", "SS"), change("create", "feeder", "F1", "SS"),
               change("create", "feeder", "F2", "SS"), change("create", "dt", "DT", "F1", dt_meter=f"{p}-DM")]
    network += [change("create", "consumer", f"C{i}", "DT", meter=f"{p}-M{i}") for i in range(3)]
    assert store.apply(network).result == "OK"
    # When a document brings a move, a bad parent, a wrong parent type and a stale change
    stale = change("update", "dt", "DT", rating_kva=25)
    result = store.apply([change("move", "dt", "DT", "F2", at=NOV3), change("create", "dt", "X", "NOPE"),
                          change("create", "consumer", "Y", "F1", meter=f"{p}-MY"), stale])
    # Then the same outcomes as on SQLite
    assert [o.code for o in result.outcomes] == [None, Reason.UNKNOWN_PARENT, Reason.WRONG_PARENT_TYPE,
                                                 Reason.STALE]
    before = dt.datetime.fromisoformat(NOV3) - dt.timedelta(seconds=1)
    assert store.feeders_of([f"{p}-DT"], before) == {f"{p}-DT": f"{p}-F1"}
    assert store.feeders_of([f"{p}-DT"]) == {f"{p}-DT": f"{p}-F2"}
    assert store.dts_of([f"{p}-M0", f"{p}-DM", "nobody"]) == {f"{p}-M0": f"{p}-DT", f"{p}-DM": f"{p}-DT"}
    assert len(store.consumers_under(f"{p}-F2")) == 3 and store.consumers_under(f"{p}-F2", before) == {}
    # and the move wrote one update per consumer, version 2, with the new path
    updates = [u for c in range(3) for u in store.updates_of(f"{p}-C{c}")]
    assert sorted((u.version, u.body["feeder"]) for u in updates) == [(1, f"{p}-F1")] * 3 + [(2, f"{p}-F2")] * 3
    mine = [u.id for u in updates]
    store.mark_published(mine)
    assert not {u.id for u in store.pending_updates(10_000)} & set(mine)
    assert [r["consumer"] for r in store.export_rows() if r["substation"] == f"{p}-SS"] == [
        f"{p}-C0", f"{p}-C1", f"{p}-C2"]
