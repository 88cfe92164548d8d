"""The outage store: each partition's input log and checkpoint, the outbox of what it sends, and
the outages and their timelines for ``gridbus outages list|show``.

Why a store of its own, beside the network store: the network store's writer lock is held for a
whole GIS import (a minute for a million consumers), and a correlator must not wait a minute in a
storm.  It is a SQLite file by default ($GRIDBUS_HOME/state/outages.sqlite) or a PostgreSQL
database (``GRIDBUS_OUTAGE_STORE=postgresql://...``), through the same two database classes as the
network store (bus/network/db.py), with a lock of its own.

Crash recovery (docs/outages.md, "State that survives a crash"):

* ``outage_log``: every batch of inputs a partition's engine took (events with the clock they
  were taken at, watermark ticks, verification answers), numbered ``seq``, written in the same
  transaction as what the batch decided, before the batch is acked;
* ``outage_checkpoints``: the engine's snapshot with the ``seq`` of the last batch it includes;
  log rows up to it are then deleted;
* ``outage_messages``: the outbox.  A decision is written here (``sent_at`` null) in the batch's
  transaction and marked sent once the broker confirmed it.  The message id is the key, so a batch
  replayed after a crash decides the same messages and writes nothing twice; what was written and
  not sent is sent at restart.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bus.network.db import PostgresDb, SqliteDb
from bus.network.schema import Dialect, PostgresDialect, SqliteDialect

LOCK_KEY = 0x4F555441474553  # "OUTAGES": the outage store's writers, apart from the network store's

TABLES = [
    """CREATE TABLE IF NOT EXISTS outage_log (
        route TEXT NOT NULL, part INTEGER NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
        inputs TEXT NOT NULL, PRIMARY KEY (route, part, seq)){WITHOUT_ROWID}""",
    """CREATE TABLE IF NOT EXISTS outage_checkpoints (
        route TEXT NOT NULL, part INTEGER NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL, PRIMARY KEY (route, part))""",
    """CREATE TABLE IF NOT EXISTS outage_messages (
        message_id TEXT PRIMARY KEY, route TEXT NOT NULL, part INTEGER NOT NULL, seq BIGINT NOT NULL,
        n INTEGER NOT NULL, outage TEXT NOT NULL, kind TEXT NOT NULL, verb TEXT NOT NULL, body TEXT NOT NULL,
        made_at DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS outages (
        mrid TEXT PRIMARY KEY, route TEXT NOT NULL, part INTEGER NOT NULL, kind TEXT NOT NULL,
        feeder TEXT, equipment TEXT, equipment_name TEXT, state TEXT NOT NULL, start_at DOUBLE PRECISION,
        end_at DOUBLE PRECISION, meters_affected INTEGER, outage_kind TEXT, duration_kind TEXT,
        closed_reason TEXT, parent TEXT, updated DOUBLE PRECISION NOT NULL, document TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outage_timeline (
        outage TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, what TEXT NOT NULL, detail TEXT NOT NULL)""",
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS outage_messages_unsent ON outage_messages (route, part, seq, n) WHERE sent_at IS NULL",
    "CREATE INDEX IF NOT EXISTS outage_messages_outage ON outage_messages (outage)",
    "CREATE INDEX IF NOT EXISTS outages_state ON outages (state, feeder)",
    "CREATE INDEX IF NOT EXISTS outage_timeline_outage ON outage_timeline (outage, at)",
]


class _Schema:
    def schema(self: Dialect) -> list[str]:
        return [t.format(**self.ddl) for t in TABLES] + INDEXES


class _SqliteOutages(_Schema, SqliteDialect):
    pass


class _PostgresOutages(_Schema, PostgresDialect):
    pass


class _SqliteDb(SqliteDb):
    dialect = _SqliteOutages()


class _PostgresDb(PostgresDb):
    dialect = _PostgresOutages()
    lock_key = LOCK_KEY
    counts_writes = False


def default_location() -> str | Path:
    """$GRIDBUS_OUTAGE_STORE, else $GRIDBUS_STATE_STORE, else $GRIDBUS_HOME/state/outages.sqlite."""
    from bus.state_store import store_location

    return store_location("GRIDBUS_OUTAGE_STORE", "outages.sqlite")


def open_outage_store(location: str | Path | None = None) -> "OutageStore":
    text = str(location if location is not None else default_location())
    if text.startswith(("postgresql://", "postgres://")):
        return OutageStore(_PostgresDb(text))
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return OutageStore(_SqliteDb(Path(text)))


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class OutageStore:
    def __init__(self, db: SqliteDb | PostgresDb):
        self.db = db

    @property
    def location(self) -> str:
        return self.db.location

    @contextmanager
    def writing(self) -> Iterator["OutageStore"]:
        with self.db.writing():
            yield self

    # -- a partition's log and checkpoint ---------------------------------------------------------
    def checkpoint(self, route: str, part: int) -> tuple[int, dict] | None:
        rows = self.db.rows("SELECT seq, state FROM outage_checkpoints WHERE route = ? AND part = ?", (route, part))
        return (int(rows[0][0]), orjson.loads(rows[0][1])) if rows else None

    def log_after(self, route: str, part: int, seq: int) -> Iterator[tuple[int, list]]:
        for s, inputs in self.db.stream("SELECT seq, inputs FROM outage_log WHERE route = ? AND part = ? AND seq > ? "
                                        "ORDER BY seq", (route, part, seq)):
            yield int(s), orjson.loads(inputs)

    def last_seq(self, route: str, part: int) -> int:
        rows = self.db.rows("SELECT MAX(seq) FROM outage_log WHERE route = ? AND part = ?", (route, part))
        logged = rows[0][0] if rows and rows[0][0] is not None else 0
        cp = self.db.rows("SELECT seq FROM outage_checkpoints WHERE route = ? AND part = ?", (route, part))
        return max(int(logged), int(cp[0][0]) if cp else 0)

    def append(self, route: str, part: int, seq: int, inputs: list) -> None:
        """Inside ``writing()``: the batch ``seq`` of the partition's inputs."""
        self.db.execute("INSERT INTO outage_log VALUES (?, ?, ?, ?, ?)", (route, part, seq, time.time(), _json(inputs)))

    def save_checkpoint(self, route: str, part: int, seq: int, state: dict) -> None:
        with self.db.writing():
            self.db.execute("DELETE FROM outage_checkpoints WHERE route = ? AND part = ?", (route, part))
            self.db.execute("INSERT INTO outage_checkpoints VALUES (?, ?, ?, ?, ?)",
                            (route, part, seq, time.time(), _json(state)))
            self.db.execute("DELETE FROM outage_log WHERE route = ? AND part = ? AND seq <= ?", (route, part, seq))

    # -- the outbox -------------------------------------------------------------------------------
    def add_messages(self, route: str, part: int, seq: int, messages: Iterable[tuple[str, str, str, str, dict]]) -> int:
        """Inside ``writing()``: (message id, outage, kind, verb, body) in the order decided; a
        message id already there (a replayed batch) is left as it is.  Returns how many were new."""
        now, new = time.time(), 0
        for n, (mid, outage, kind, verb, body) in enumerate(messages):
            if self.db.rows("SELECT 1 FROM outage_messages WHERE message_id = ?", (mid,)):
                continue
            self.db.execute("INSERT INTO outage_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                            (mid, route, part, seq, n, outage, kind, verb, _json(body), now))
            new += 1
        return new

    def unsent(self, route: str, part: int) -> list[tuple[str, str, dict]]:
        """(message id, kind, body) written and not yet confirmed, in the order decided."""
        return [(mid, kind, orjson.loads(body)) for mid, kind, body in self.db.rows(
            "SELECT message_id, kind, body FROM outage_messages WHERE route = ? AND part = ? AND sent_at IS NULL "
            "ORDER BY seq, n", (route, part))]

    def mark_sent(self, message_ids: list[str]) -> None:
        if not message_ids:
            return
        now = time.time()
        with self.db.writing():
            self.db.executemany("UPDATE outage_messages SET sent_at = ? WHERE message_id = ?",
                                [(now, mid) for mid in message_ids])

    def messages(self, outage: str) -> list[dict]:
        return [{"messageId": mid, "kind": kind, "verb": verb, "made": made, "sent": sent}
                for mid, kind, verb, made, sent in self.db.rows(
                    "SELECT message_id, kind, verb, made_at, sent_at FROM outage_messages WHERE outage = ? "
                    "ORDER BY made_at, seq, n", (outage,))]

    # -- outages and their timelines --------------------------------------------------------------
    def put_outage(self, route: str, part: int, doc: dict, state: str) -> None:
        """Inside ``writing()``: the outage's latest document (created, changed or closed)."""
        o = doc
        eq = o.get("Equipment") or {}
        period = o.get("actualPeriod") or {}
        from bus.outages.events import epoch

        def t(v):
            try:
                return epoch(v) if v else None
            except ValueError:
                return None
        self.db.execute("DELETE FROM outages WHERE mrid = ?", (o["mRID"],))
        self.db.execute("INSERT INTO outages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            o["mRID"], route, part, o.get("kind", ""), o.get("feeder"), eq.get("mRID"), eq.get("name"), state,
            t(period.get("start")), t(period.get("end")), o.get("metersAffected"), o.get("outageKind"),
            o.get("durationKind"), o.get("closedReason"), o.get("parentOutage"), time.time(), _json(o)))

    def add_timeline(self, rows: Iterable[tuple[str, float, str, dict]]) -> None:
        """Inside ``writing()``: (outage, at, what, detail)."""
        self.db.executemany("INSERT INTO outage_timeline VALUES (?, ?, ?, ?)",
                            [(o, at, what, _json(detail)) for o, at, what, detail in rows])

    def outages(self, open_only: bool = False, feeder: str | None = None, limit: int = 1000) -> list[dict]:
        sql = ("SELECT mrid, kind, feeder, equipment, equipment_name, state, start_at, end_at, meters_affected, "
               "outage_kind, duration_kind, closed_reason, parent FROM outages")
        where, args = [], []
        if open_only:
            where.append("state = 'open'")
        if feeder:
            where.append("feeder = ?")
            args.append(feeder)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_at DESC, mrid LIMIT ?"
        args.append(limit)
        keys = ("mRID", "kind", "feeder", "equipment", "equipmentName", "state", "start", "end", "metersAffected",
                "outageKind", "durationKind", "closedReason", "parentOutage")
        return [dict(zip(keys, row)) for row in self.db.rows(sql, tuple(args))]

    def outage(self, mrid: str) -> dict | None:
        rows = self.db.rows("SELECT state, document FROM outages WHERE mrid = ?", (mrid,))
        if not rows:
            return None
        return {"state": rows[0][0], "document": orjson.loads(rows[0][1])}

    def timeline(self, mrid: str) -> list[dict]:
        return [{"at": at, "what": what, **orjson.loads(detail)} for at, what, detail in self.db.rows(
            "SELECT at, what, detail FROM outage_timeline WHERE outage = ? ORDER BY at, rowid"
            if isinstance(self.db, SqliteDb) else
            "SELECT at, what, detail FROM outage_timeline WHERE outage = ? ORDER BY at", (mrid,))]

    def prune(self, route: str, before: float) -> int:
        """Forget the route's outages closed before ``before`` (epoch s), with their timelines and
        messages; returns how many."""
        with self.db.writing():
            old = [r[0] for r in self.db.rows("SELECT mrid FROM outages WHERE route = ? AND state = 'closed' "
                                                "AND updated < ?", (route, before))]
            for mrid in old:
                self.db.execute("DELETE FROM outage_timeline WHERE outage = ?", (mrid,))
                self.db.execute("DELETE FROM outage_messages WHERE outage = ? AND sent_at IS NOT NULL", (mrid,))
                self.db.execute("DELETE FROM outages WHERE mrid = ?", (mrid,))
        return len(old)

    def counts(self) -> dict[str, int]:
        rows = self.db.rows("SELECT state, COUNT(*) FROM outages GROUP BY state")
        unsent = self.db.rows("SELECT COUNT(*) FROM outage_messages WHERE sent_at IS NULL")
        return {**{s: int(n) for s, n in rows}, "unsent_messages": int(unsent[0][0])}
