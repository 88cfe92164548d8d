"""SQLite files that several threads of one process use: a connection per thread, WAL.

sqlite3 connections must stay in the thread that made them; WAL lets readers
go on while one thread writes, and another process (a CLI, a second gateway)
may open the same file.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class ThreadConnections:
    def __init__(self, path: Path, schema: str, synchronous: str | None = None):
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        self().executescript(schema)

    def __call__(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            if self.synchronous:
                db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db
