"""The same trace-store behaviour on PostgreSQL (a real server, started for the session)."""
from __future__ import annotations

import time
import uuid

import pytest

from bus.tracing.store import open_store
from tests.postgres import postgres_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.broker


def ev(kind, message_id, at, **extra):
    return {"event_id": uuid.uuid4().hex, "kind": kind, "at": at, "message_id": message_id,
            "correlation_id": "corr", "route": "r1", "attempt": 1, **extra}


def test_postgres_store_answers_like_the_sqlite_one(postgres_url):  # noqa: F811
    # Given a PostgreSQL trace store with a delivered batch, a dead letter and its replay
    store = open_store(postgres_url)
    now = time.time()
    m1, m2, r2 = (f"m-{uuid.uuid4().hex[:8]}" for _ in range(3))
    store.add([ev("transformed", m1, now, meters=["PGM1", "PGM2"]), ev("delivered", m1, now + 1),
               ev("dead-lettered", m2, now + 2, reason="400", meters=None),
               ev("replayed", r2, now + 3, causation_id=m2), ev("delivered", r2, now + 4, causation_id=m2),
               ev("consumed", m1, now + 5, dropped_before=3)])
    # Then meter search, conversations with replays, and failed-route queries work the same
    assert store.messages_for_meter("PGM2") == [m1]
    assert [e["kind"] for e in store.events_of([m1])] == ["transformed", "delivered", "consumed"]
    assert {e["message_id"] for e in store.conversation(m2)} == {m2, r2}
    assert [e["message_id"] for e in store.route_events("r1", now - 1, ("dead-lettered",))] == [m2]
    assert store.dropped_total() >= 3
    # and the same event twice is stored once
    again = store.events_of([m1])[0]
    store.add([{**again, "meters": None}])
    assert len(store.events_of([m1])) == 3
