"""The trace store: SQLite by default (embedded, nothing to install).

Business keys get their own table keyed (meter, message): a search by one
serial is an index range scan whatever the store's size, and a batch that
touched 1,000 meters is found from any of them.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL, message_id TEXT,
    correlation_id TEXT, causation_id TEXT, route TEXT, attempt INTEGER, traceparent TEXT,
    host TEXT, duration_s REAL, detail TEXT);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id, at);
CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id, at);
CREATE INDEX IF NOT EXISTS events_causation ON events (causation_id);
CREATE INDEX IF NOT EXISTS events_route_at ON events (route, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS meters (
    meter TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (meter, message_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meters_at ON meters (at);
CREATE TABLE IF NOT EXISTS dropped (at REAL NOT NULL, host TEXT, count INTEGER NOT NULL);
"""
_COMMON = ("event_id", "kind", "at", "message_id", "correlation_id", "causation_id", "route",
           "attempt", "traceparent", "host", "duration_s")


class TraceStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a trace is evidence, not data: WAL + NORMAL is enough
        self.db.executescript(SCHEMA)

    def add(self, events: Iterable[dict]) -> int:
        rows, meters, dropped = [], [], []
        for e in events:
            detail = {k: v for k, v in e.items() if k not in _COMMON and k not in ("meters", "dropped_before")}
            if e.get("meters"):
                detail["meter_count"] = len(e["meters"])  # the serials themselves go to the meters index
            rows.append(tuple(e.get(k) for k in _COMMON) + (json.dumps(detail, default=str),))
            for meter in e.get("meters") or ():
                meters.append((meter, e.get("message_id"), e["at"]))
            if e.get("dropped_before"):
                dropped.append((e["at"], e.get("host"), e["dropped_before"]))
        self.db.execute("BEGIN")
        try:
            self.db.executemany(f"INSERT OR IGNORE INTO events VALUES ({','.join('?' * 12)})", rows)
            self.db.executemany("INSERT OR IGNORE INTO meters VALUES (?, ?, ?)", meters)
            self.db.executemany("INSERT INTO dropped VALUES (?, ?, ?)", dropped)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(rows)

    def prune(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        self.db.execute("BEGIN")
        n = self.db.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
        self.db.execute("DELETE FROM meters WHERE at < ?", (cutoff,))
        self.db.execute("DELETE FROM dropped WHERE at < ?", (cutoff,))
        self.db.execute("COMMIT")
        return n

    # -- queries ----------------------------------------------------------
    def _events(self, where: str, args: list) -> list[dict]:
        cols = _COMMON + ("detail",)
        out = []
        for row in self.db.execute(f"SELECT {', '.join(cols)} FROM events WHERE {where} ORDER BY at", args):
            e = dict(zip(cols, row))
            e.update(json.loads(e.pop("detail") or "{}"))
            out.append(e)
        return out

    def conversation(self, ident: str) -> list[dict]:
        """Every event of the message or correlation ``ident``, and of replays caused by it."""
        events = self._events("message_id = ? OR correlation_id = ?", [ident, ident])
        if not events:
            return []
        seen = {e["message_id"] for e in events}
        frontier = list(seen)
        while frontier:  # follow causation: replays of replays
            marks = ",".join("?" * len(frontier))
            children = self._events(f"causation_id IN ({marks})", frontier)
            frontier = [e["message_id"] for e in children if e["message_id"] not in seen]
            seen.update(frontier)
            events += [e for e in children if e["event_id"] not in {x["event_id"] for x in events}]
        # the file-level events of the same correlation give the context of a chunk
        corr = {e["correlation_id"] for e in events if e.get("correlation_id")}
        for c in corr - {ident}:
            events += [e for e in self._events("correlation_id = ? AND message_id IS NULL", [c])]
        return sorted(events, key=lambda e: e["at"])

    def messages_for_meter(self, meter: str, since: float | None = None, until: float | None = None) -> list[str]:
        sql = "SELECT message_id FROM meters WHERE meter = ?"
        args: list = [meter]
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND at <= ?"
            args.append(until)
        return [r[0] for r in self.db.execute(sql + " ORDER BY at", args)]

    def events_of(self, message_ids: list[str]) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(message_ids), 500):
            part = message_ids[i:i + 500]
            out += self._events(f"message_id IN ({','.join('?' * len(part))})", part)
        return sorted(out, key=lambda e: e["at"])

    def route_events(self, route: str | None, since: float | None, kinds: tuple[str, ...] | None = None) -> list[dict]:
        where, args = ["at >= ?"], [since or 0]
        if route:
            where.append("route = ?")
            args.append(route)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args += list(kinds)
        return self._events(" AND ".join(where), args)

    def after(self, at: float, route: str | None = None) -> list[dict]:
        return self._events("at > ?" + (" AND route = ?" if route else ""), [at] + ([route] if route else []))

    def dropped_total(self) -> int:
        return self.db.execute("SELECT COALESCE(SUM(count), 0) FROM dropped").fetchone()[0]
