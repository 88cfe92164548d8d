"""SQLite files that several threads of one process use: a connection per thread, WAL.

sqlite3 connections must stay in the thread that made them; WAL lets readers
go on while one thread writes, and another process (a CLI, a second gateway)
may open the same file.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ThreadConnections:
    def __init__(self, path: Path, schema: str, synchronous: str | None = None):
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        # one writer at a time within this process, queued on a lock that wakes the next at
        # once: threads that meet SQLite's own lock instead sleep in its busy handler (1, 2, 5,
        # 10 … 100 ms), which under load put tens of milliseconds into every synchronous reply.
        # Another process (a CLI approving a command) still meets SQLite's lock, rarely.
        self._write_lock = threading.Lock()
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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection: committed, or rolled back on any error.

        Inside ``batch()`` it is a savepoint instead: its error undoes its own writes only, and
        its writes are committed with the batch's."""
        db = self()
        if db.in_transaction:
            db.execute("SAVEPOINT one")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK TO one")
                db.execute("RELEASE one")
                raise
            db.execute("RELEASE one")
            return
        with self.batch() as db:  # a transaction of its own: a batch of one
            yield db

    @contextmanager
    def batch(self) -> Iterator[sqlite3.Connection]:
        """One commit for several ``transaction()``s (group commit): what a busy writer pays per
        commit (the WAL frames of every page it touched, the lock) is paid once per batch, so
        under load the cost per write goes down instead of a queue building up."""
        db = self()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
