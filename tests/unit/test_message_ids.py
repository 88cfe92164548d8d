"""Message ids: UUIDv7, time-ordered, never repeated by forked workers."""
from __future__ import annotations

import os
import uuid

from bus.envelope import child_traceparent, new_event_id, new_message_id, new_traceparent


def test_message_ids_are_time_ordered_uuids_and_forked_workers_never_repeat_each_other():
    # Given ids made one after another  Then they are version 7 UUIDs in time order (by millisecond)
    ids = [new_message_id() for _ in range(1000)]
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
    # When a worker forks (Celery prefork)  Then the child's ids are not the parent's
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, "".join(new_message_id() for _ in range(50)).encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 100_000).decode()
    ours = "".join(new_message_id() for _ in range(50))
    assert {theirs[n:n + 36][15:] for n in range(0, len(theirs), 36)}.isdisjoint(
        {ours[n:n + 36][15:] for n in range(0, len(ours), 36)})


def test_trace_event_ids_are_time_ordered_and_traceparents_are_valid_w3c():
    # Given trace event ids made one after another  Then they are UUIDv7 in hex, in time order
    ids = [new_event_id() for _ in range(1000)]
    assert {uuid.UUID(hex=i).version for i in ids} == {7} and len(set(ids)) == 1000
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)
    # Given a new trace and a hop within it  Then both are W3C traceparents, the hop keeping the trace
    parent = new_traceparent()
    child = child_traceparent(parent)
    for value in (parent, child):
        version, trace, span, flags = value.split("-")
        assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
        assert int(trace, 16) and int(span, 16)
    assert child.split("-")[1] == parent.split("-")[1] and child.split("-")[2] != parent.split("-")[2]
