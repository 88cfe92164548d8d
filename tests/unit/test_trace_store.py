"""The trace store alone: what `gridbus trace` reads (no broker)."""
from __future__ import annotations

import time

from bus.cli.trace import render_tree
from bus.tracing.store import SqliteTraceStore as TraceStore


def ev(kind, message_id, at, **extra):
    return {"event_id": f"{message_id}-{kind}-{at}", "kind": kind, "at": at, "message_id": message_id,
            "correlation_id": extra.pop("correlation_id", "corr-1"), "route": "r1", "attempt": 1, **extra}


def test_meter_search_finds_the_batches_that_touched_the_meter_and_only_those(tmp_path):
    # Given two batches, each touching its own meters
    store = TraceStore(tmp_path / "t.sqlite")
    now = time.time()
    store.add([ev("transformed", "m1", now, meters=["UPM1", "UPM2"]), ev("delivered", "m1", now + 1),
               ev("transformed", "m2", now + 2, meters=["UPM3"])])
    # When searching by meter  Then only the batch holding it is found, with all its events
    assert store.messages_for_meter("UPM2") == ["m1"]
    assert [e["kind"] for e in store.events_of(store.messages_for_meter("UPM2"))] == ["transformed", "delivered"]
    assert store.messages_for_meter("UPM9") == []
    # and the time window applies
    assert store.messages_for_meter("UPM3", since=now + 10) == []


def test_a_conversation_follows_replays_and_renders_as_a_tree(tmp_path):
    # Given a message dead-lettered and then replayed under a new id
    store = TraceStore(tmp_path / "t.sqlite")
    now = time.time()
    store.add([ev("consumed", "m1", now), ev("dead-lettered", "m1", now + 1, reason="400"),
               ev("replayed", "r1", now + 5, causation_id="m1", replayed_from="m1"),
               ev("delivered", "r1", now + 6, causation_id="m1", destination="mdms-1", status="200",
                  duration_s=0.01)])
    # When the original is traced
    events = store.conversation("m1")
    # Then the replay is part of it, drawn under the original
    assert [e["message_id"] for e in events] == ["m1", "m1", "r1", "r1"]
    lines = render_tree(events)
    assert lines[0].startswith("message m1") and any(line.strip().startswith("└─ message r1") for line in lines)


def test_retention_prunes_old_events_and_their_meter_index(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    old, new = time.time() - 3600, time.time()
    store.add([ev("transformed", "old", old, meters=["UPM1"]), ev("transformed", "new", new, meters=["UPM1"])])
    assert store.prune(older_than_s=60) == 1
    assert store.messages_for_meter("UPM1") == ["new"]


def test_dropped_events_are_counted(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    store.add([ev("consumed", "m1", time.time(), dropped_before=7)])
    assert store.dropped_total() == 7
