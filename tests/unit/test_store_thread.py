"""The gateway's store thread: group commits, and each piece of work's error kept to itself."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import contextmanager

import pytest

from bus.requests.store import RequestStore
from connectors.http_push.store_thread import NotCommitted, StoreThread
from tests.state_stores import postgres_url, state_url  # noqa: F401 - run on both databases


def new(store, request_id, client_key):
    return store.create(id=request_id, system="billing-1", requested_by="alice", kind="commands",
                        route="billing-1-commands", client_key=client_key, action="disconnect", meters=1,
                        state="requested", expires=None, reply_address=None, correlation_id=None,
                        document={"Request": {"commandId": client_key}})


def fails_after_writing(store, request_id):
    new(store, request_id, f"key-{request_id}")
    raise ValueError(f"{request_id} went wrong after writing")


@pytest.fixture
def store(tmp_path, state_url):
    store = RequestStore(tmp_path / "requests.sqlite", url=state_url)
    yield store
    store.close()


def test_concurrent_work_is_committed_in_batches_and_an_error_undoes_only_its_own_writes(store, tmp_path, state_url):
    # Given a store thread whose batches are counted, held up so that work queues behind the first
    batches, gate = [], threading.Event()

    @contextmanager
    def counted_batch():
        gate.wait(5)
        with store.batch() as db:
            batches.append(1)
            yield db

    stored = StoreThread(counted_batch)

    async def scenario():
        # When 40 requests are stored at once, one of which fails after its insert
        calls = [stored(new, store, f"r{n}", f"key-{n}") for n in range(40)]
        calls.append(stored(fails_after_writing, store, "bad"))
        pending = asyncio.gather(*calls, return_exceptions=True)
        await asyncio.sleep(0.05)
        gate.set()
        return await pending

    try:
        outcomes = asyncio.run(scenario())
    finally:
        stored.close()
    # Then every good one is stored, the bad one's error reaches its caller and its insert is undone
    assert [o.id for o in outcomes[:40]] == [f"r{n}" for n in range(40)]
    assert isinstance(outcomes[40], ValueError)
    other = RequestStore(tmp_path / "requests.sqlite", url=state_url)  # another process: only what was committed
    assert len(other.listing(limit=100)) == 40 and other.get("bad") is None
    other.close()
    # and they took fewer commits than requests
    assert len(batches) < 41


def test_a_batch_that_cannot_commit_tells_every_caller_with_what_its_work_returned(store):
    # Given a store whose commit fails (a full disk, say)
    @contextmanager
    def failing_batch():
        with store.batch() as db:
            yield db
        raise sqlite3.OperationalError("database or disk is full")

    stored = StoreThread(failing_batch)

    async def scenario():
        return await asyncio.gather(stored(new, store, "r1", "k1"), return_exceptions=True)

    try:
        # When a request is stored
        (outcome,) = asyncio.run(scenario())
    finally:
        stored.close()
    # Then its caller hears it was not committed, and gets back what the work returned to undo its side effects
    assert isinstance(outcome, NotCommitted)
    assert "disk is full" in str(outcome)
    assert outcome.result.id == "r1"


def test_a_caller_that_gave_up_does_not_stop_the_others(store):
    # Given a store thread held up, and a caller that gives up (its client hung up) while it waits
    gate = threading.Event()

    @contextmanager
    def held_batch():
        gate.wait(5)
        with store.batch() as db:
            yield db

    stored = StoreThread(held_batch)

    async def scenario():
        impatient = asyncio.ensure_future(stored(new, store, "r1", "k1"))
        patient = asyncio.ensure_future(stored(new, store, "r2", "k2"))
        await asyncio.sleep(0.02)
        impatient.cancel()
        gate.set()
        return await patient

    try:
        # When the batch completes  Then the patient caller has its request
        assert asyncio.run(scenario()).id == "r2"
    finally:
        stored.close()
    # and the work of the one that gave up was done all the same (stored, so its reply can be polled)
    assert store.get("r1") is not None



def test_work_alone_in_its_batch_that_fails_after_writing_leaves_nothing_behind(store):
    # Given a store thread with nothing else to do
    stored = StoreThread(store.batch)

    async def scenario():
        return await asyncio.gather(stored(fails_after_writing, store, "lone"), return_exceptions=True)

    try:
        # When a piece of work writes a request and then fails
        (outcome,) = asyncio.run(scenario())
    finally:
        stored.close()
    # Then its caller gets its error and the request is not stored
    assert isinstance(outcome, ValueError)
    assert store.get("lone") is None
