"""What the file-drop ingress remembers: every file by checksum, and each chunk's outcome.

SQLite in WAL mode, one connection per thread.  It is what makes a file dropped
twice deliver once, and what the reconciliation report is built from.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    route TEXT NOT NULL, checksum TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    chunks INTEGER, rows INTEGER, archive_path TEXT, received_at REAL, published_at REAL,
    reported_at REAL, PRIMARY KEY (route, checksum));
CREATE TABLE IF NOT EXISTS chunk_outcomes (
    route TEXT NOT NULL, checksum TEXT NOT NULL, chunk INTEGER NOT NULL, result TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (route, checksum, chunk));
CREATE TABLE IF NOT EXISTS chunk_lines (
    route TEXT NOT NULL, checksum TEXT NOT NULL, chunk INTEGER NOT NULL, first_line INTEGER,
    last_line INTEGER, rows INTEGER NOT NULL, PRIMARY KEY (route, checksum, chunk));
CREATE TABLE IF NOT EXISTS file_survey (
    route TEXT NOT NULL, checksum TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (route, checksum));
"""


class Ledger:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def state(self, route: str, checksum: str) -> str | None:
        row = self.db.execute("SELECT state FROM files WHERE route=? AND checksum=?",
                              (route, checksum)).fetchone()
        return row[0] if row else None

    def start(self, route: str, checksum: str, name: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO files (route, checksum, name, state, received_at) "
                        "VALUES (?, ?, ?, 'publishing', ?)", (route, checksum, name, time.time()))

    def published(self, route: str, checksum: str, chunks: int, rows: int, archive_path: str,
                  chunk_lines: list[tuple] = (), survey: dict | None = None) -> None:
        """The file is out: its chunks (index, first line, last line, rows the decoder must account
        for) and what the ingress found itself (blank lines, rejected lines), in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO chunk_lines VALUES (?, ?, ?, ?, ?, ?)",
                                [(route, checksum, *c) for c in chunk_lines])
            self.db.execute("INSERT OR REPLACE INTO file_survey VALUES (?, ?, ?)",
                            (route, checksum, json.dumps(survey or {})))
            self.db.execute("UPDATE files SET state='published', chunks=?, rows=?, archive_path=?, "
                            "published_at=? WHERE route=? AND checksum=?",
                            (chunks, rows, archive_path, time.time(), route, checksum))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def record_outcome(self, record: dict) -> None:
        # the first outcome of a chunk wins: a redelivered chunk reports the same thing again
        self.db.execute("INSERT OR IGNORE INTO chunk_outcomes VALUES (?, ?, ?, ?, ?)",
                        (record["route"], record["checksum"], record["chunk"], record["result"],
                         json.dumps(record)))

    def complete_files(self) -> list[dict]:
        """Files whose every chunk has an outcome and that have no report yet."""
        rows = self.db.execute(
            "SELECT f.route, f.checksum, f.name, f.chunks, f.rows, f.archive_path, f.received_at "
            "FROM files f WHERE f.state='published' AND f.chunks = "
            "(SELECT COUNT(*) FROM chunk_outcomes c WHERE c.route=f.route AND c.checksum=f.checksum)"
        ).fetchall()
        keys = ("route", "checksum", "name", "chunks", "rows", "archive_path", "received_at")
        return [dict(zip(keys, r)) for r in rows]

    def outcomes(self, route: str, checksum: str) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT record FROM chunk_outcomes WHERE route=? AND checksum=? ORDER BY chunk",
            (route, checksum))]

    def chunk_lines(self, route: str, checksum: str) -> list[dict]:
        keys = ("chunk", "first_line", "last_line", "rows")
        return [dict(zip(keys, r)) for r in self.db.execute(
            "SELECT chunk, first_line, last_line, rows FROM chunk_lines WHERE route=? AND checksum=? "
            "ORDER BY chunk", (route, checksum))]

    def survey(self, route: str, checksum: str) -> dict:
        row = self.db.execute("SELECT record FROM file_survey WHERE route=? AND checksum=?",
                              (route, checksum)).fetchone()
        return json.loads(row[0]) if row else {}

    def reported(self, route: str, checksum: str) -> None:
        self.db.execute("UPDATE files SET state='reported', reported_at=? WHERE route=? AND checksum=?",
                        (time.time(), route, checksum))
