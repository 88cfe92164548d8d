"""The durable dead-letter store operators search: a SQLite file under $GRIDBUS_HOME/state, or the
shared PostgreSQL state store (``GRIDBUS_STATE_STORE``) that keepers and operators on every host use.

Dead letters arrive in each route's dead-letter queue; the collector moves them
here (insert, commit, then ack), byte for byte: body as a blob, properties and
headers as tagged JSON.  From then on the store is the one place a dead letter
lives, so listing reads only the store (it never consumes or reorders a queue),
and a replay or purge changes a row's state in the same place it reads it.

Row states: dead → replaying → replayed (or deleted by purge, after archiving).
The move to ``replaying`` is a compare-and-set and the lock of a replay: only
the run whose update changed the row publishes it (``mark_replaying`` says which
rows a run won).  A row stays the run's (``replay_run``) while that run lives
(bus/deadletters/runs.py: a flock on SQLite, an advisory lock on PostgreSQL),
and only rows whose run no longer holds its lock can be taken over to finish
them (``run_alive``, ``take_over``).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bus.deadletters.runs import PostgresReplayRun, ReplayRun, flock_run_alive, postgres_run_alive
from bus.deadletters.values import (HEADER_DEPTH, NAME_CHARS, TEXT_CHARS, as_count, as_instant,  # noqa: F401
                                    as_text, bounded, dumps, from_json, storable, to_json)
from bus.state_store import PostgresStateDb, StateStoreError, open_state_db

# the header values' functions stay importable from here, where they were before values.py
__all__ = ["COLUMNS", "REPLAYABLE", "SCHEMA", "DeadLetter", "DeadLetterStore", "ReplayRun", "HEADER_DEPTH",
           "NAME_CHARS", "TEXT_CHARS", "as_count", "as_instant", "as_text", "bounded", "dumps", "from_json",
           "storable", "to_json"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS dead_letters (
    seq {ID_KEY},
    dl_id TEXT NOT NULL UNIQUE,
    message_id TEXT, correlation_id TEXT, route TEXT NOT NULL, destination TEXT,
    fingerprint TEXT NOT NULL, error_class TEXT, reason TEXT, traceback TEXT,
    attempts {BIGINT}, first_failure {REAL}, last_failure {REAL}, worker_host TEXT, collected_at {REAL},
    body {BLOB} NOT NULL, properties TEXT NOT NULL, headers TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead', replay_id TEXT, replayed_at {REAL}, replayed_by TEXT,
    replay_body {BLOB}, replay_run TEXT)""",
    "CREATE INDEX IF NOT EXISTS dl_state_route ON dead_letters (state, route, fingerprint)",
    "CREATE INDEX IF NOT EXISTS dl_message ON dead_letters (message_id)",
    # not ``audit``: the request store, in the same PostgreSQL database, has one
    """CREATE TABLE IF NOT EXISTS dead_letter_audit (
    seq {ID_KEY}, dl_id TEXT, action TEXT NOT NULL, who TEXT NOT NULL, at {REAL} NOT NULL, detail TEXT)""",
]

COLUMNS = ("seq", "dl_id", "message_id", "correlation_id", "route", "destination", "fingerprint",
           "error_class", "reason", "traceback", "attempts", "first_failure", "last_failure",
           "worker_host", "collected_at", "body", "properties", "headers", "state", "replay_id",
           "replayed_at", "replayed_by", "replay_run")
_INSERTED = ("dl_id", "message_id", "correlation_id", "route", "destination", "fingerprint", "error_class",
             "reason", "traceback", "attempts", "first_failure", "last_failure", "worker_host",
             "collected_at", "body", "properties", "headers")
# the states a replay may start from (the compare-and-set of ``mark_replaying``)
REPLAYABLE = ("dead",)


def _marks(n: int) -> str:
    return ",".join("?" * n)


@dataclass
class DeadLetter:
    seq: int
    dl_id: str
    message_id: str
    correlation_id: str
    route: str
    destination: str
    fingerprint: str
    error_class: str
    reason: str
    traceback: str
    attempts: int
    first_failure: float
    last_failure: float
    worker_host: str
    collected_at: float
    body: bytes
    properties: dict
    headers: dict
    state: str
    replay_id: str | None
    replayed_at: float | None
    replayed_by: str | None
    replay_run: str | None = None  # the run that holds (or held) the row while ``replaying``

    @classmethod
    def from_row(cls, row: tuple) -> "DeadLetter":
        values = dict(zip(COLUMNS, row))
        values["properties"] = from_json(json.loads(values["properties"]))
        values["headers"] = from_json(json.loads(values["headers"]))
        values["body"] = bytes(values["body"])
        return cls(**values)


class DeadLetterStore:
    """``path``: the SQLite file, used when no shared state store is set (``url``: as
    ``open_state_db`` takes it; None reads ``GRIDBUS_STATE_STORE``).  ``wait_s``: how long a
    call waits for a PostgreSQL connection before it fails (30 s unless given)."""

    def __init__(self, path: Path, url: str | None = None, wait_s: float | None = None):
        self.path = path
        if path.exists():
            _migrate_sqlite(path)
        # synchronous=FULL: a dead letter acked off the queue must survive a crash (on SQLite;
        # PostgreSQL commits durably by default)
        self.db = open_state_db("dead-letters", SCHEMA, path, synchronous="FULL", url=url, wait_s=wait_s)
        self.runs_dir = path.parent / (path.name + ".replay-runs")

    @property
    def shared(self) -> bool:
        """Whether keepers and operators on other hosts see these rows."""
        return self.db.shared

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        """One transaction (nested: a savepoint): committed, or rolled back on any error."""
        return self.db.writing()

    def add(self, rows: Iterable[dict]) -> None:
        """Insert collected dead letters; one already stored (same dl_id) is skipped,
        so a message redelivered after a crash between commit and ack is not doubled."""
        values = [tuple(r[c] for c in _INSERTED) for r in map(storable, rows)]
        self.db.executemany(f"INSERT INTO dead_letters ({', '.join(_INSERTED)}) VALUES ({_marks(len(_INSERTED))}) "
                            "ON CONFLICT (dl_id) DO NOTHING", values)

    def select(self, ids: list[str] | None = None, route: str | None = None,
               fingerprint: str | None = None, states: tuple[str, ...] = REPLAYABLE,
               limit: int | None = None) -> list[DeadLetter]:
        where, args = [f"state IN ({_marks(len(states))})"], list(states)
        if ids:
            where.append(f"(dl_id IN ({_marks(len(ids))}) OR message_id IN ({_marks(len(ids))}))")
            args += ids + ids
        if route:
            where.append("route = ?")
            args.append(route)
        if fingerprint:
            where.append("fingerprint = ?")
            args.append(fingerprint)
        sql = f"SELECT {', '.join(COLUMNS)} FROM dead_letters WHERE {' AND '.join(where)} ORDER BY seq"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [DeadLetter.from_row(r) for r in self.db.rows(sql, args)]

    def summary(self, route: str | None = None, group: bool = False) -> list[dict]:
        """Counts per route (or per route and fingerprint) with the oldest failure, from the index."""
        keys = "route, fingerprint" if group else "route"
        sql = (f"SELECT {keys}, COUNT(*), MIN(last_failure), MIN(error_class), MIN(reason) "
               f"FROM dead_letters WHERE state = 'dead'" + (" AND route = ?" if route else "") +
               f" GROUP BY {keys} ORDER BY COUNT(*) DESC, {keys}")
        out = []
        for row in self.db.rows(sql, [route] if route else []):
            if group:
                r, fp, n, oldest, cls, reason = row
            else:
                (r, n, oldest, cls, reason), fp = row, None
            out.append({"route": r, "fingerprint": fp, "count": n, "oldest": oldest,
                        "error_class": cls, "reason": reason})
        return out

    def replay_run(self) -> ReplayRun:
        """A new replay run: hold it (``with``) from before the first row it marks until the end."""
        if isinstance(self.db, PostgresStateDb):
            return PostgresReplayRun(self.db)
        return ReplayRun(self.runs_dir)

    def mark_replaying(self, pairs: list[tuple[str, str]], who: str, run: str,
                       body: bytes | None = None) -> list[str]:
        """Compare-and-set ``dead`` → ``replaying`` (with this run's replay id), row by row;
        returns the dl_ids this run won.  A row another run moved first (it is ``replaying``
        or ``replayed`` now, or purged) is left exactly as it is: that run publishes it, not
        this one.  Call it inside ``transaction()``.
        ``body``: an edited body, kept so an interrupted edited replay resumes with it."""
        won = []
        for dl_id, rid in pairs:
            changed = self.db.execute(
                "UPDATE dead_letters SET state='replaying', replay_id=?, replayed_by=?, replay_body=?, "
                f"replay_run=? WHERE dl_id=? AND state IN ({_marks(len(REPLAYABLE))})",
                (rid, who, body, run, dl_id, *REPLAYABLE))
            if changed == 1:
                won.append(dl_id)
        return won

    def replay_states(self, dl_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """{dl_id: (state, replay_id)} of the rows still stored."""
        out = {}
        for start in range(0, len(dl_ids), 500):
            chunk = dl_ids[start:start + 500]
            out.update({d: (s, r) for d, s, r in self.db.rows(
                f"SELECT dl_id, state, replay_id FROM dead_letters WHERE dl_id IN ({_marks(len(chunk))})", chunk)})
        return out

    def run_alive(self, run: str | None) -> bool:
        """Whether the replay run ``run`` still holds its lock (is still running).
        Rows marked before runs held locks (``run`` None) belong to no live run."""
        if not run:
            return False
        if isinstance(self.db, PostgresStateDb):
            return postgres_run_alive(self.db, run)
        return flock_run_alive(self.runs_dir, run)

    def take_over(self, dl_ids: list[str], from_run: str | None, run: str) -> list[str]:
        """Compare-and-set of a ``replaying`` row from a run that is gone to ``run``; returns
        the dl_ids won (one of two runs finishing the same orphans gets each row).
        Call it inside ``transaction()``, after ``run_alive(from_run)`` said False."""
        owner = "replay_run IS NULL" if from_run is None else "replay_run = ?"
        won = []
        for dl_id in dl_ids:
            changed = self.db.execute(f"UPDATE dead_letters SET replay_run=? WHERE dl_id=? AND state='replaying' "
                                      f"AND {owner}", (run, dl_id) + (() if from_run is None else (from_run,)))
            if changed == 1:
                won.append(dl_id)
        return won

    def replay_body(self, dl_id: str) -> bytes | None:
        rows = self.db.rows("SELECT replay_body FROM dead_letters WHERE dl_id=?", (dl_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def mark_replayed(self, dl_ids: list[str], run: str) -> list[str]:
        """``replaying`` → ``replayed`` for the rows ``run`` holds; returns the dl_ids marked."""
        now, done = time.time(), []
        for dl_id in dl_ids:
            changed = self.db.execute("UPDATE dead_letters SET state='replayed', replayed_at=? WHERE dl_id=? "
                                      "AND state='replaying' AND replay_run=?", (now, dl_id, run))
            if changed == 1:
                done.append(dl_id)
        return done

    def delete(self, dl_ids: list[str]) -> None:
        self.db.executemany("DELETE FROM dead_letters WHERE dl_id=?", [(d,) for d in dl_ids])

    def audit(self, dl_id: str | None, action: str, who: str, detail: dict | None = None) -> None:
        self.db.execute("INSERT INTO dead_letter_audit (dl_id, action, who, at, detail) VALUES (?, ?, ?, ?, ?)",
                        (dl_id, action, who, time.time(), json.dumps(detail or {})))

    def audit_trail(self, dl_id: str | None = None) -> list[dict]:
        sql = "SELECT dl_id, action, who, at, detail FROM dead_letter_audit" + (" WHERE dl_id = ?" if dl_id else "")
        return [{"dl_id": d, "action": a, "who": w, "at": t, "detail": json.loads(x or "{}")}
                for d, a, w, t, x in self.db.rows(sql + " ORDER BY seq", [dl_id] if dl_id else [])]


def _migrate_sqlite(path: Path) -> None:
    """Bring a file an earlier version wrote up to this schema, in one write transaction (two
    processes opening it at once: the second finds it done).  ``audit`` became
    ``dead_letter_audit``; ``replay_run`` came with replay runs holding their rows."""
    try:
        _migrate(sqlite3.connect(str(path), timeout=60, isolation_level=None))
    except sqlite3.Error as exc:
        raise StateStoreError(f"state store {path} (bringing it up to date): {exc}") from exc


def _migrate(db: sqlite3.Connection) -> None:
    try:
        db.execute("BEGIN IMMEDIATE")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "audit" in tables and "dead_letter_audit" not in tables:
            db.execute("ALTER TABLE audit RENAME TO dead_letter_audit")
        if "dead_letters" in tables and "replay_run" not in {
                r[1] for r in db.execute("PRAGMA table_info(dead_letters)")}:
            db.execute("ALTER TABLE dead_letters ADD COLUMN replay_run TEXT")
        db.execute("COMMIT")
    finally:
        db.close()
