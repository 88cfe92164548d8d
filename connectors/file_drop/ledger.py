"""What the file-drop ingress remembers: every file by checksum, and each chunk's outcome.

A SQLite file (WAL, a connection per thread) on the ingress host, or the PostgreSQL state
store every host shares (``GRIDBUS_STATE_STORE``).  It is what makes a file dropped twice
deliver once, and what the reconciliation report is built from.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from bus.state_store import StateStoreError, open_state_db

# ``file_drop_files``, not ``files``: other stores share the PostgreSQL database
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS file_drop_files (
    route TEXT NOT NULL, checksum TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    chunks INTEGER, rows {BIGINT}, archive_path TEXT, received_at {REAL}, published_at {REAL},
    reported_at {REAL}, PRIMARY KEY (route, checksum))""",
    """CREATE TABLE IF NOT EXISTS chunk_outcomes (
    route TEXT NOT NULL, checksum TEXT NOT NULL, chunk INTEGER NOT NULL, result TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (route, checksum, chunk))""",
    """CREATE TABLE IF NOT EXISTS chunk_lines (
    route TEXT NOT NULL, checksum TEXT NOT NULL, chunk INTEGER NOT NULL, first_line {BIGINT},
    last_line {BIGINT}, rows {BIGINT} NOT NULL, PRIMARY KEY (route, checksum, chunk))""",
    """CREATE TABLE IF NOT EXISTS file_survey (
    route TEXT NOT NULL, checksum TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (route, checksum))""",
]


class Ledger:
    """``path``: the SQLite file, used when no shared state store is set (``url`` as
    ``open_state_db`` takes it)."""

    def __init__(self, path: Path, url: str | None = None):
        if path.exists():
            _migrate_sqlite(path)
        self.db = open_state_db("file-drop", SCHEMA, path, url=url)

    def close(self) -> None:
        self.db.close()

    def state(self, route: str, checksum: str) -> str | None:
        rows = self.db.rows("SELECT state FROM file_drop_files WHERE route=? AND checksum=?", (route, checksum))
        return rows[0][0] if rows else None

    def start(self, route: str, checksum: str, name: str) -> None:
        # a file seen before but never published starts over: nothing of its earlier try is kept
        self.db.execute("INSERT INTO file_drop_files (route, checksum, name, state, received_at) "
                        "VALUES (?, ?, ?, 'publishing', ?) ON CONFLICT (route, checksum) DO UPDATE SET "
                        "name = excluded.name, state = excluded.state, received_at = excluded.received_at, "
                        "chunks = NULL, rows = NULL, archive_path = NULL, published_at = NULL, reported_at = NULL",
                        (route, checksum, name, time.time()))

    def published(self, route: str, checksum: str, chunks: int, rows: int, archive_path: str,
                  chunk_lines: list[tuple] = (), survey: dict | None = None) -> None:
        """The file is out: its chunks (index, first line, last line, rows the decoder must account
        for) and what the ingress found itself (blank lines, rejected lines), in one transaction."""
        with self.db.writing():
            self.db.executemany("INSERT INTO chunk_lines VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (route, checksum, chunk) "
                                "DO UPDATE SET first_line = excluded.first_line, last_line = excluded.last_line, "
                                "rows = excluded.rows", [(route, checksum, *c) for c in chunk_lines])
            self.db.execute("INSERT INTO file_survey VALUES (?, ?, ?) ON CONFLICT (route, checksum) "
                            "DO UPDATE SET record = excluded.record", (route, checksum, json.dumps(survey or {})))
            self.db.execute("UPDATE file_drop_files SET state='published', chunks=?, rows=?, archive_path=?, "
                            "published_at=? WHERE route=? AND checksum=?",
                            (chunks, rows, archive_path, time.time(), route, checksum))

    def record_outcome(self, record: dict) -> None:
        self.record_outcomes([record])

    def record_outcomes(self, records: list[dict]) -> None:
        """Chunk outcomes, in one transaction.  The first outcome of a chunk wins: a redelivered
        chunk reports the same thing again."""
        with self.db.writing():
            self.db.executemany("INSERT INTO chunk_outcomes VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                [(r["route"], r["checksum"], r["chunk"], r["result"], json.dumps(r))
                                 for r in records])

    def complete_files(self) -> list[dict]:
        """Files whose every chunk has an outcome and that have no report yet."""
        rows = self.db.rows(
            "SELECT f.route, f.checksum, f.name, f.chunks, f.rows, f.archive_path, f.received_at "
            "FROM file_drop_files f WHERE f.state='published' AND f.chunks = "
            "(SELECT COUNT(*) FROM chunk_outcomes c WHERE c.route=f.route AND c.checksum=f.checksum)")
        keys = ("route", "checksum", "name", "chunks", "rows", "archive_path", "received_at")
        return [dict(zip(keys, r)) for r in rows]

    def outcomes(self, route: str, checksum: str) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.rows(
            "SELECT record FROM chunk_outcomes WHERE route=? AND checksum=? ORDER BY chunk", (route, checksum))]

    def chunk_lines(self, route: str, checksum: str) -> list[dict]:
        keys = ("chunk", "first_line", "last_line", "rows")
        return [dict(zip(keys, r)) for r in self.db.rows(
            "SELECT chunk, first_line, last_line, rows FROM chunk_lines WHERE route=? AND checksum=? "
            "ORDER BY chunk", (route, checksum))]

    def survey(self, route: str, checksum: str) -> dict:
        rows = self.db.rows("SELECT record FROM file_survey WHERE route=? AND checksum=?", (route, checksum))
        return json.loads(rows[0][0]) if rows else {}

    def reported(self, route: str, checksum: str) -> None:
        self.db.execute("UPDATE file_drop_files SET state='reported', reported_at=? WHERE route=? AND checksum=?",
                        (time.time(), route, checksum))


def _migrate_sqlite(path: Path) -> None:
    """``files`` became ``file_drop_files``: renamed in a file an earlier version wrote, in one
    write transaction (two processes opening it at once: the second finds it done)."""
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "files" in tables and "file_drop_files" not in tables:
            db.execute("ALTER TABLE files RENAME TO file_drop_files")
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StateStoreError(f"state store {path} (bringing it up to date): {exc}") from exc
    finally:
        db.close()
