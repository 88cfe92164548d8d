"""A dead letter is replayed at most once per replay request, however many runs race for it.

A real store, SQLite file (WAL) or PostgreSQL database (each test runs on both), shared by
runs that each open it as `gridbus dlq replay` does; the publisher is a stand-in that records
every message handed to it (the real one, against a broker, is in
tests/integration/test_replay_once.py).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bus.deadletters import headers as dl
from bus.deadletters import replay as replays
from bus.deadletters.store import DeadLetterStore, dumps
from tests.keeper_state import DEAD_LETTER_TABLES, clean, keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

TRIALS = 20
LETTERS = 12


def _row(i: int) -> dict:
    now = time.time()
    message_id = f"msg-{i:04d}"
    return {"dl_id": f"dl-{i:04d}", "message_id": message_id, "correlation_id": f"corr-{i:04d}",
            "route": "route-a", "destination": "mdms-1", "fingerprint": "fp-1",
            "error_class": "PermanentDeliveryError", "reason": "MDMS answered 400", "traceback": "",
            "attempts": 1, "first_failure": now, "last_failure": now, "worker_host": "host-a",
            "collected_at": now, "body": f"reading {i}".encode(),
            "properties": dumps({"message_id": message_id, "correlation_id": f"corr-{i:04d}", "delivery_mode": 2}),
            "headers": dumps({"id": message_id, dl.DL_ROUTE: "route-a", dl.DL_REASON: "MDMS answered 400"})}


class Where:
    """One store for a trial: a SQLite file of its own, or the PostgreSQL tables emptied first."""

    def __init__(self, path: Path, url: str):
        self.path, self.url = path, url
        clean(url, *DEAD_LETTER_TABLES)

    def open(self) -> DeadLetterStore:
        return DeadLetterStore(self.path, url=self.url)


def _fill(where: Where, n: int = LETTERS) -> None:
    store = where.open()
    store.add(_row(i) for i in range(n))
    store.close()


class RecordingPublisher:
    """Stands in for ConfirmingPublisher; every run's publishes go into one shared list."""

    def __init__(self, sent: list, lock: threading.Lock):
        self.sent, self.lock = sent, lock

    def publish(self, exchange, routing_key, body, properties, headers, mandatory=True) -> None:
        with self.lock:
            self.sent.append({"replay_id": properties["message_id"], "from": headers[dl.REPLAYED_FROM],
                              "body": body})
        time.sleep(0)  # let the other run in between publishes

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def _race(*runs):
    """Run each ``run(ready)`` in its own thread; ``ready()`` (a barrier) releases them together
    once each opened its own store.  Returns their results (or the exceptions they raised)."""
    barrier = threading.Barrier(len(runs))
    results: list = [None] * len(runs)

    def go(i, fn):
        try:
            results[i] = fn(lambda: barrier.wait(30))
        except Exception as exc:  # a run that lost may raise; the test looks at it
            results[i] = exc
    threads = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _rows(where: Where) -> dict[str, tuple[str, str]]:
    store = where.open()
    try:
        return {m: (s, r) for m, s, r in store.db.rows("SELECT message_id, state, replay_id FROM dead_letters")}
    finally:
        store.close()


def _audited(where: Where, action: str = "replay") -> Counter:
    store = where.open()
    try:
        return Counter(e["dl_id"] for e in store.audit_trail() if e["action"] == action)
    finally:
        store.close()


@pytest.mark.parametrize("batch", [500, 3])
def test_two_replays_of_the_same_dead_letters_racing_publish_each_once(tmp_path, monkeypatch, batch, state_url):
    monkeypatch.setenv("GRIDBUS_USER", "operator-a")
    monkeypatch.setattr(replays, "BATCH", batch)  # 3: the two runs interleave batch by batch
    for trial in range(TRIALS):
        # Given dead letters, and two operators' shells that both listed them as dead
        where = Where(tmp_path / f"trial-{trial}" / "dead-letters.sqlite", state_url)
        _fill(where)
        sent, lock = [], threading.Lock()

        def shell(ready):
            store = where.open()
            listed = store.select()
            assert len(listed) == LETTERS
            ready()
            # When both replay them at the same moment
            try:
                return replays.replay(store, RecordingPublisher(sent, lock), listed)
            finally:
                store.close()
        results = _race(shell, shell)
        # Then each dead letter was published once in total
        per_letter = Counter(m["from"] for m in sent)
        assert per_letter == Counter({f"msg-{i:04d}": 1 for i in range(LETTERS)}), (trial, per_letter)
        # and the store keeps that one replay id, and the audit one replay per letter
        rows = _rows(where)
        assert {m["from"]: ("replayed", m["replay_id"]) for m in sent} == rows
        assert _audited(where) == Counter({f"dl-{i:04d}": 1 for i in range(LETTERS)})
        # and what one run did not send, it reports as replayed by the other, with the other's id
        assert not [r for r in results if isinstance(r, Exception)], results
        done = [x.dl_id for r in results for x, _ in r.done]
        assert sorted(done) == [f"dl-{i:04d}" for i in range(LETTERS)]
        for result in results:
            for lost in result.lost:
                assert lost.state in ("replaying", "replayed")
                assert lost.replay_id == rows[lost.letter.message_id][1]
                assert "by another run (replay id replay-" in lost.why()
        assert sum(len(r.lost) for r in results) == LETTERS


def test_an_edited_replay_racing_a_plain_replay_sends_one_of_them(tmp_path, monkeypatch, state_url):
    monkeypatch.setenv("GRIDBUS_USER", "operator-a")
    for trial in range(TRIALS):
        # Given one dead letter, listed by two shells
        where = Where(tmp_path / f"trial-{trial}" / "dead-letters.sqlite", state_url)
        _fill(where, 1)
        sent, lock = [], threading.Lock()

        def shell(edit: bool):
            def run(ready):
                store = where.open()
                [letter] = store.select()
                ready()
                # When one replays it as it is and the other replays an edited copy, at the same moment
                try:
                    if edit:
                        return replays.replay_edited(store, RecordingPublisher(sent, lock), letter, b"edited")
                    return replays.replay(store, RecordingPublisher(sent, lock), [letter])
                finally:
                    store.close()
            return run
        plain_result, edited_result = _race(shell(False), shell(True))
        # Then it was published once, and the store holds the id of the one that was sent
        assert len(sent) == 1, (trial, sent)
        assert _rows(where) == {"msg-0000": ("replayed", sent[0]["replay_id"])}
        edits = _audited(where, "edit")
        if sent[0]["body"] == b"edited":
            # the edited copy won: the plain run says it did not send it, and audits nothing
            assert edited_result == sent[0]["replay_id"]
            assert not plain_result.done
            [lost] = plain_result.lost
            assert lost.state in ("replaying", "replayed") and lost.replay_id == edited_result
            assert edits == Counter({"dl-0000": 1}) and _audited(where) == Counter()
        else:
            # the plain replay won: the edit was not sent, says so, and is not audited
            assert isinstance(edited_result, replays.ReplayLost), edited_result
            assert "the edited body was not sent" in str(edited_result)
            assert plain_result.done[0][1] == sent[0]["replay_id"]
            assert edits == Counter() and _audited(where) == Counter({"dl-0000": 1})


class StuckPublisher:
    """A publisher that hangs on the first message: a run caught in the middle of publishing."""

    def __init__(self, publishing):
        self.publishing = publishing

    def publish(self, *args, **kwargs) -> None:
        self.publishing.set()
        time.sleep(3600)

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def _replay_and_hang(path: str, url: str, publishing) -> None:
    os.environ["GRIDBUS_USER"] = "operator-a"
    store = DeadLetterStore(Path(path), url=url)
    replays.replay(store, StuckPublisher(publishing), store.select())


def test_finishing_interrupted_replays_leaves_a_live_run_alone_and_completes_a_killed_one_once(
        tmp_path, monkeypatch, state_url):
    monkeypatch.setenv("GRIDBUS_USER", "operator-b")
    where = Where(tmp_path / "dead-letters.sqlite", state_url)
    _fill(where)
    # Given a replay run (another process) that marked every dead letter `replaying` and is publishing
    ctx = multiprocessing.get_context("fork")
    publishing = ctx.Event()
    live = ctx.Process(target=_replay_and_hang, args=(str(where.path), state_url, publishing))
    live.start()
    try:
        assert publishing.wait(30), "the first run to start publishing"
        marked = _rows(where)
        assert {s for s, _ in marked.values()} == {"replaying"}
        # When another run starts, and finishes what it finds `replaying`
        sent, lock = [], threading.Lock()
        other = where.open()
        resumed = replays.finish_interrupted(other, RecordingPublisher(sent, lock))
        # Then it publishes nothing of the live run's, and leaves its rows as they are
        assert sent == [] and resumed.done == [] and resumed.busy == LETTERS
        assert _rows(where) == marked
        other.close()
        # When the live run is killed half-way (SIGKILL), and two runs then finish it at the same moment
        os.kill(live.pid, signal.SIGKILL)
        live.join(10)
        def finisher(ready):
            store = where.open()
            ready()
            try:
                return replays.finish_interrupted(store, RecordingPublisher(sent, lock))
            finally:
                store.close()
        results = _race(finisher, finisher)
    finally:
        if live.is_alive():
            os.kill(live.pid, signal.SIGKILL)
            live.join(10)
    # Then each dead letter is published once more, with the replay id it was marked with
    assert Counter(m["from"] for m in sent) == Counter({f"msg-{i:04d}": 1 for i in range(LETTERS)})
    assert {m["from"]: ("replayed", m["replay_id"]) for m in sent} == {
        k: ("replayed", rid) for k, (_, rid) in marked.items()}
    assert sum(len(r.done) for r in results) == LETTERS
    # and the audit has one replay per letter, in the name of the operator who asked for it
    store = where.open()
    trail = [e for e in store.audit_trail() if e["action"] == "replay"]
    assert Counter(e["dl_id"] for e in trail) == Counter({f"dl-{i:04d}": 1 for i in range(LETTERS)})
    assert {e["who"] for e in trail} == {"operator-a"}
    assert {e["detail"]["completed_by"] for e in trail} == {"operator-b"}
    # and no lock of the killed run is left (its lock file on SQLite; PostgreSQL dropped its session's)
    if not store.shared:
        assert list(store.runs_dir.iterdir()) == []
    store.close()


def test_a_store_from_before_replay_runs_opens_and_its_half_way_replays_are_completed(tmp_path):
    # Given a store written by the previous version (no replay_run column), with a row left `replaying`
    path = tmp_path / "dead-letters.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO audit (dl_id, action, who, at, detail) VALUES ('dl-old', 'edit', 'operator-a', 1, '{}')")
    db.execute("INSERT INTO dead_letters (dl_id, message_id, route, fingerprint, body, properties, headers, "
               "state, replay_id, replayed_by) VALUES ('dl-old', 'msg-old', 'route-a', 'fp', x'00', '{}', "
               "'{\"id\": \"msg-old\"}', 'replaying', 'replay-old', 'operator-a')")
    db.commit()
    db.close()
    # When it is opened and interrupted replays are finished
    store = DeadLetterStore(path, url="")
    sent = []
    resumed = replays.finish_interrupted(store, RecordingPublisher(sent, threading.Lock()))
    # Then the row is published with its replay id and marked replayed
    assert [m["replay_id"] for m in sent] == ["replay-old"] and len(resumed.done) == 1
    assert _rows(Where(path, "")) == {"msg-old": ("replayed", "replay-old")}
    # and its audit (table ``audit`` then, ``dead_letter_audit`` now) is kept and goes on
    assert [(e["action"], e["who"]) for e in store.audit_trail("dl-old")] == [("edit", "operator-a"),
                                                                              ("replay", "operator-a")]


# the schema of the version before replay runs held their rows (and before the audit's rename)
OLD_SCHEMA = """
CREATE TABLE dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, dl_id TEXT NOT NULL UNIQUE,
    message_id TEXT, correlation_id TEXT, route TEXT NOT NULL, destination TEXT,
    fingerprint TEXT NOT NULL, error_class TEXT, reason TEXT, traceback TEXT,
    attempts INTEGER, first_failure REAL, last_failure REAL, worker_host TEXT, collected_at REAL,
    body BLOB NOT NULL, properties TEXT NOT NULL, headers TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead', replay_id TEXT, replayed_at REAL, replayed_by TEXT, replay_body BLOB);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, dl_id TEXT, action TEXT NOT NULL, who TEXT NOT NULL,
    at REAL NOT NULL, detail TEXT);
"""
