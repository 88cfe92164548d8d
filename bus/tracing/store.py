"""The trace store: SQLite by default (embedded, nothing to install), PostgreSQL by URL
(``GRIDBUS_TRACE_STORE=postgresql://...``) for a deployment with several machines.

Both take the same schema and the same statements (written with ``?``; the
PostgreSQL side swaps in ``%s``).  Business keys get their own table keyed
(meter, message): a search by one serial is an index range scan whatever the
store's size, and a batch that touched 1,000 meters is found from any of them.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from bus.errors import ConfigError

TABLES = [
    """CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY, kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, message_id TEXT,
        correlation_id TEXT, causation_id TEXT, route TEXT, attempt INTEGER, traceparent TEXT,
        host TEXT, duration_s DOUBLE PRECISION, detail TEXT)""",
    """CREATE TABLE IF NOT EXISTS meters (
        meter TEXT NOT NULL, message_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (meter, message_id))""",
    "CREATE TABLE IF NOT EXISTS dropped (at DOUBLE PRECISION NOT NULL, host TEXT, count INTEGER NOT NULL)",
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS events_message ON events (message_id, at)",
    "CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id, at)",
    "CREATE INDEX IF NOT EXISTS events_causation ON events (causation_id)",
    "CREATE INDEX IF NOT EXISTS events_route_at ON events (route, at)",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at)",
    "CREATE INDEX IF NOT EXISTS meters_at ON meters (at)",
]
_COMMON = ("event_id", "kind", "at", "message_id", "correlation_id", "causation_id", "route",
           "attempt", "traceparent", "host", "duration_s")


class TraceStore:
    """Queries and writes shared by both databases; subclasses open the connection."""

    placeholder = "?"

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _execute(self, sql: str, args=()) -> list[tuple]:
        cur = self.db.execute(self._sql(sql), args)
        return cur.fetchall() if cur.description else []

    def _create(self) -> None:
        for statement in TABLES + INDEXES:
            self.db.execute(statement)

    def _write(self, statements: list[tuple[str, list]]) -> None:
        raise NotImplementedError

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
        self._write([
            (f"INSERT INTO events VALUES ({','.join('?' * 12)}) ON CONFLICT DO NOTHING", rows),
            ("INSERT INTO meters VALUES (?, ?, ?) ON CONFLICT DO NOTHING", meters),
            ("INSERT INTO dropped VALUES (?, ?, ?)", dropped)])
        return len(rows)

    def prune(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        before = self._execute("SELECT COUNT(*) FROM events WHERE at < ?", (cutoff,))[0][0]
        self._write([("DELETE FROM events WHERE at < ?", [(cutoff,)]),
                     ("DELETE FROM meters WHERE at < ?", [(cutoff,)]),
                     ("DELETE FROM dropped WHERE at < ?", [(cutoff,)])])
        return before

    # -- queries ----------------------------------------------------------
    def _events(self, where: str, args: list) -> list[dict]:
        cols = _COMMON + ("detail",)
        out = []
        for row in self._execute(f"SELECT {', '.join(cols)} FROM events WHERE {where} ORDER BY at", args):
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
            known = {x["event_id"] for x in events}
            events += [e for e in children if e["event_id"] not in known]
            frontier = [e["message_id"] for e in children if e["message_id"] not in seen]
            seen.update(frontier)
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
        return [r[0] for r in self._execute(sql + " ORDER BY at", args)]

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
        return int(self._execute("SELECT COALESCE(SUM(count), 0) FROM dropped")[0][0])


class SqliteTraceStore(TraceStore):
    def __init__(self, path: Path):
        import sqlite3

        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a trace is evidence, not data: WAL + NORMAL is enough
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MB: index pages of a large store stay in memory
        self._create()

    def _write(self, statements: list[tuple[str, list]]) -> None:
        self.db.execute("BEGIN")
        try:
            for sql, rows in statements:
                if rows:
                    self.db.executemany(sql, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


class PostgresTraceStore(TraceStore):
    placeholder = "%s"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError("a postgresql:// trace store needs psycopg: pip install 'psycopg[binary]'") from exc
        try:
            self.db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(f"trace store {url.split('@')[-1]}: {exc}") from exc
        self._create()

    def _write(self, statements: list[tuple[str, list]]) -> None:
        with self.db.transaction():
            with self.db.cursor() as cur:
                for sql, rows in statements:
                    if rows:
                        cur.executemany(self._sql(sql), rows)


def open_store(location: str | Path) -> TraceStore:
    """A ``postgresql://`` URL, or the path of a SQLite file."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresTraceStore(text)
    try:
        return SqliteTraceStore(Path(text))
    except (OSError, sqlite3.Error) as exc:  # a setting pointing nowhere usable: say so, no traceback
        raise ConfigError(f"trace store {text}: {exc}") from exc
