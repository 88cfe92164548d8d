"""The durable dead-letter store operators search: SQLite under $GRIDBUS_HOME/state.

Dead letters arrive in each route's dead-letter queue; the collector moves them
here (insert, commit, then ack), byte for byte: body as a blob, properties and
headers as tagged JSON.  From then on the store is the one place a dead letter
lives, so listing reads only the store (it never consumes or reorders a queue),
and a replay or purge changes a row's state in the same place it reads it.

Row states: dead → replaying → replayed (or deleted by purge, after archiving).
The move to ``replaying`` is a compare-and-set and the lock of a replay: only
the run whose update changed the row publishes it (``mark_replaying`` says which
rows a run won).  A row stays the run's (``replay_run``) while that run lives:
each run holds an exclusive ``flock`` on a lock file of its own
(:class:`ReplayRun`), and only rows whose run no longer holds its lock can be
taken over to finish them (``run_alive``, ``take_over``).
"""
from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from bus.documents import nesting_depth

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dl_id TEXT NOT NULL UNIQUE,
    message_id TEXT, correlation_id TEXT, route TEXT NOT NULL, destination TEXT,
    fingerprint TEXT NOT NULL, error_class TEXT, reason TEXT, traceback TEXT,
    attempts INTEGER, first_failure REAL, last_failure REAL, worker_host TEXT, collected_at REAL,
    body BLOB NOT NULL, properties TEXT NOT NULL, headers TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead', replay_id TEXT, replayed_at REAL, replayed_by TEXT,
    replay_body BLOB, replay_run TEXT);
CREATE INDEX IF NOT EXISTS dl_state_route ON dead_letters (state, route, fingerprint);
CREATE INDEX IF NOT EXISTS dl_message ON dead_letters (message_id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, dl_id TEXT, action TEXT NOT NULL, who TEXT NOT NULL,
    at REAL NOT NULL, detail TEXT);
"""

COLUMNS = ("seq", "dl_id", "message_id", "correlation_id", "route", "destination", "fingerprint",
           "error_class", "reason", "traceback", "attempts", "first_failure", "last_failure",
           "worker_host", "collected_at", "body", "properties", "headers", "state", "replay_id",
           "replayed_at", "replayed_by", "replay_run")
# the states a replay may start from (the compare-and-set of ``mark_replaying``)
REPLAYABLE = ("dead",)

# What each column takes.  Anyone who may publish to a dead-letter exchange chooses the
# headers a row is made of: a table where a route's name belongs, bytes, a count beyond
# SQLite's INTEGER, a reason of 100,000 characters.  One such row failing its insert held
# every dead letter behind it (the keeper reconnected, and the same message came back
# first), so every value is made into what its column takes; the headers column keeps
# what was sent.
NAME_CHARS = 1_024   # an id, a route, a fingerprint, an error class, a host
TEXT_CHARS = 65_536  # a reason, a traceback
HEADER_DEPTH = 64    # header tables and arrays nested deeper are cut (as JSON bodies are refused)
LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: a later failure time is no time at all
_INT64 = 2 ** 63
_TEXT_COLUMNS = {"dl_id": NAME_CHARS, "message_id": NAME_CHARS, "correlation_id": NAME_CHARS,
                 "route": NAME_CHARS, "destination": NAME_CHARS, "fingerprint": NAME_CHARS,
                 "error_class": NAME_CHARS, "reason": TEXT_CHARS, "traceback": TEXT_CHARS,
                 "worker_host": NAME_CHARS}


def as_text(value: Any, limit: int = NAME_CHARS) -> str:
    """Any header value as text of at most ``limit`` characters (``""`` for none)."""
    if type(value) is not str:
        if value is None:
            return ""
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value[:limit * 4]).decode("utf-8", "replace")
        elif isinstance(value, (dict, list, tuple)):
            value = dumps(value)
        else:
            value = str(value)
    if len(value) > limit:
        note = f"... (cut: {len(value)} characters)"
        value = value[:limit - len(note)] + note
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate is no SQLite text
    return value


def as_count(value: Any) -> int | None:
    """A count SQLite's INTEGER holds, from a number or its digits; None if there is none."""
    if isinstance(value, (str, bytes)) and len(value) <= 20:
        try:
            value = int(value)
        except ValueError:
            return None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, Decimal):
        value = int(value) if value.is_finite() and abs(value) < _INT64 and value == value.to_integral_value() \
            else None
    if type(value) is not int or not -_INT64 <= value < _INT64:
        return None
    return value


def as_instant(value: Any, default: float) -> float:
    """Epoch seconds from a number, its digits or a datetime; ``default`` when that is no
    instant between 1970 and 9999 (a ``time.ctime`` of 1e308 fails)."""
    try:
        if isinstance(value, dt.datetime):
            value = value.timestamp()
        elif isinstance(value, (str, bytes)) and len(value) > 40:
            return default
        elif isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str, bytes)):
            return default
        seconds = float(value)
    except (ValueError, OverflowError, OSError):
        return default
    return seconds if 0 <= seconds <= LATEST else default  # NaN compares false too


def bounded(value: Any, depth: int = HEADER_DEPTH) -> Any:
    """``value`` with tables and arrays nested deeper than ``depth`` replaced by a note."""
    if isinstance(value, (dict, list, tuple)):
        if depth <= 0:
            return {"$cut": f"nested deeper than {HEADER_DEPTH} levels"}
        if isinstance(value, dict):
            return {k: bounded(v, depth - 1) for k, v in value.items()}
        return [bounded(v, depth - 1) for v in value]
    return value


def storable(row: dict) -> dict:
    """``row`` with each value made into what its column takes (see ``as_text``)."""
    out = dict(row)
    for column, limit in _TEXT_COLUMNS.items():
        value = out.get(column)
        if value is None and column not in ("dl_id", "route", "fingerprint"):  # NULL, as before
            continue
        if type(value) is not str or len(value) > limit or not value.isascii():
            out[column] = as_text(value, limit)
    out["attempts"] = as_count(out.get("attempts"))
    collected = as_instant(out.get("collected_at"), time.time())
    out["collected_at"] = collected
    out["first_failure"] = as_instant(out.get("first_failure"), collected)
    out["last_failure"] = as_instant(out.get("last_failure"), collected)
    return out


def to_json(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals) as JSON that can be read back exactly."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    return value


def _tag(value: Any) -> Any:
    if isinstance(value, (bytes, dt.datetime, Decimal)):
        return to_json(value)
    raise TypeError(f"cannot store a header value of type {type(value).__name__}")


def dumps(value: Any) -> str:
    """``json.dumps(to_json(value))`` without walking plain JSON values in Python; tables
    nested deeper than ``HEADER_DEPTH`` are cut, so that reading the row back (``from_json``
    recurses) never fails.  Counting brackets first keeps the usual headers off the walk."""
    try:
        text = json.dumps(value, default=_tag)
    except RecursionError:
        return json.dumps(bounded(value), default=_tag)
    if text.count("{") + text.count("[") > HEADER_DEPTH and nesting_depth(text) > HEADER_DEPTH + 1:
        return json.dumps(bounded(value), default=_tag)  # + 1: a tagged value is an object
    return text


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, raw), = value.items()
            if tag == "$bytes":
                return base64.b64decode(raw)
            if tag == "$datetime":
                return dt.datetime.fromisoformat(raw)
            if tag == "$decimal":
                return Decimal(raw)
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


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
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a dead letter acked off the queue must survive a crash
        self.db.executescript(SCHEMA)
        self._add_column("replay_run", "TEXT")  # stores made before replay runs held their rows
        self.runs_dir = path.parent / (path.name + ".replay-runs")

    def _add_column(self, name: str, kind: str) -> None:
        if name in {r[1] for r in self.db.execute("PRAGMA table_info(dead_letters)")}:
            return
        try:
            self.db.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise

    def transaction(self):
        return _Transaction(self.db)

    def add(self, rows: Iterable[dict]) -> int:
        """Insert collected dead letters; one already stored (same dl_id) is skipped,
        so a message redelivered after a crash between commit and ack is not doubled."""
        cur = self.db.executemany(
            "INSERT OR IGNORE INTO dead_letters (dl_id, message_id, correlation_id, route, destination, "
            "fingerprint, error_class, reason, traceback, attempts, first_failure, last_failure, "
            "worker_host, collected_at, body, properties, headers) VALUES "
            "(:dl_id, :message_id, :correlation_id, :route, :destination, :fingerprint, :error_class, "
            ":reason, :traceback, :attempts, :first_failure, :last_failure, :worker_host, :collected_at, "
            ":body, :properties, :headers)", [storable(r) for r in rows])
        return cur.rowcount

    def select(self, ids: list[str] | None = None, route: str | None = None,
               fingerprint: str | None = None, states: tuple[str, ...] = REPLAYABLE,
               limit: int | None = None) -> list[DeadLetter]:
        where, args = [f"state IN ({','.join('?' * len(states))})"], list(states)
        if ids:
            where.append(f"(dl_id IN ({','.join('?' * len(ids))}) OR message_id IN ({','.join('?' * len(ids))}))")
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
        return [DeadLetter.from_row(r) for r in self.db.execute(sql, args)]

    def summary(self, route: str | None = None, group: bool = False) -> list[dict]:
        """Counts per route (or per route and fingerprint) with the oldest failure, from the index."""
        keys = "route, fingerprint" if group else "route"
        sql = (f"SELECT {keys}, COUNT(*), MIN(last_failure), MIN(error_class), MIN(reason) "
               f"FROM dead_letters WHERE state = 'dead'" + (" AND route = ?" if route else "") +
               f" GROUP BY {keys} ORDER BY COUNT(*) DESC")
        rows = self.db.execute(sql, [route] if route else [])
        out = []
        for row in rows:
            if group:
                r, fp, n, oldest, cls, reason = row
            else:
                (r, n, oldest, cls, reason), fp = row, None
            out.append({"route": r, "fingerprint": fp, "count": n, "oldest": oldest,
                        "error_class": cls, "reason": reason})
        return out

    def replay_run(self) -> "ReplayRun":
        """A new replay run: hold it (``with``) from before the first row it marks until the end."""
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
            cur = self.db.execute(
                "UPDATE dead_letters SET state='replaying', replay_id=?, replayed_by=?, replay_body=?, "
                f"replay_run=? WHERE dl_id=? AND state IN ({','.join('?' * len(REPLAYABLE))})",
                (rid, who, body, run, dl_id, *REPLAYABLE))
            if cur.rowcount == 1:
                won.append(dl_id)
        return won

    def replay_states(self, dl_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """{dl_id: (state, replay_id)} of the rows still stored."""
        out = {}
        for start in range(0, len(dl_ids), 500):
            chunk = dl_ids[start:start + 500]
            out.update({d: (s, r) for d, s, r in self.db.execute(
                f"SELECT dl_id, state, replay_id FROM dead_letters WHERE dl_id IN ({','.join('?' * len(chunk))})",
                chunk)})
        return out

    def run_alive(self, run: str | None) -> bool:
        """Whether the replay run ``run`` still holds its lock (is still running).
        Rows marked before runs held locks (``run`` None) belong to no live run."""
        if not run or "/" in run:
            return False
        path = self.runs_dir / f"{run}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # the run ended (its rows, if any are left, are orphans)
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            path.unlink(missing_ok=True)  # the run was killed: its lock file is litter
            return False
        finally:
            os.close(fd)

    def take_over(self, dl_ids: list[str], from_run: str | None, run: str) -> list[str]:
        """Compare-and-set of a ``replaying`` row from a run that is gone to ``run``; returns
        the dl_ids won (one of two runs finishing the same orphans gets each row).
        Call it inside ``transaction()``, after ``run_alive(from_run)`` said False."""
        won = []
        for dl_id in dl_ids:
            cur = self.db.execute("UPDATE dead_letters SET replay_run=? WHERE dl_id=? AND state='replaying' "
                                  "AND replay_run IS ?", (run, dl_id, from_run))
            if cur.rowcount == 1:
                won.append(dl_id)
        return won

    def replay_body(self, dl_id: str) -> bytes | None:
        row = self.db.execute("SELECT replay_body FROM dead_letters WHERE dl_id=?", (dl_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def mark_replayed(self, dl_ids: list[str], run: str) -> list[str]:
        """``replaying`` → ``replayed`` for the rows ``run`` holds; returns the dl_ids marked."""
        now, done = time.time(), []
        for dl_id in dl_ids:
            cur = self.db.execute("UPDATE dead_letters SET state='replayed', replayed_at=? WHERE dl_id=? "
                                  "AND state='replaying' AND replay_run=?", (now, dl_id, run))
            if cur.rowcount == 1:
                done.append(dl_id)
        return done

    def delete(self, dl_ids: list[str]) -> None:
        self.db.executemany("DELETE FROM dead_letters WHERE dl_id=?", [(d,) for d in dl_ids])

    def audit(self, dl_id: str | None, action: str, who: str, detail: dict | None = None) -> None:
        self.db.execute("INSERT INTO audit (dl_id, action, who, at, detail) VALUES (?, ?, ?, ?, ?)",
                        (dl_id, action, who, time.time(), json.dumps(detail or {})))

    def audit_trail(self, dl_id: str | None = None) -> list[dict]:
        sql = "SELECT dl_id, action, who, at, detail FROM audit" + (" WHERE dl_id = ?" if dl_id else "")
        return [{"dl_id": d, "action": a, "who": w, "at": t, "detail": json.loads(x or "{}")}
                for d, a, w, t, x in self.db.execute(sql + " ORDER BY seq", [dl_id] if dl_id else [])]


class ReplayRun:
    """One replay run's hold on the rows it marks ``replaying``: an exclusive ``flock`` on
    ``<runs_dir>/<token>.lock`` from creation to ``close()``.  The kernel drops the lock when
    the process dies, however it dies (SIGKILL included), so ``run_alive`` tells a run that
    is still publishing its rows from one that was killed half-way.  (The store is SQLite in
    WAL mode, which works only for processes on one host, so a lock on that host is enough.)"""

    def __init__(self, runs_dir: Path):
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = runs_dir / f"{self.token}.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        # held before any row names this token, so whoever finds the token in a row finds it locked
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # then unlock: a checker that still opened it sees the run gone
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ReplayRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
