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


class WouldWait(Exception):
    """``batch(wait=False)`` would have had to wait for the write lock; nothing was written."""


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
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def batch(self, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """One commit for several ``transaction()``s (group commit): what a busy writer pays per
        commit (the WAL frames of every page it touched, the lock) is paid once per batch, so
        under load the cost per write goes down instead of a queue building up.

        ``wait=False`` (an event loop's thread, which must never block): raise ``WouldWait``
        at once, before anything is written, when another thread or process holds the write
        lock; and leave checkpoints to ``checkpoint()`` on another thread, since the commit
        that crosses the WAL's size limit would otherwise copy it into the database file."""
        db = self()
        if not wait and not getattr(self._local, "nowait", False):
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA wal_autocheckpoint = 0")
            self._local.nowait = True
        if not self._write_lock.acquire(blocking=wait):
            raise WouldWait("another thread of this process is writing")
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait and "locked" in str(exc):
                    raise WouldWait(f"another process is writing: {exc}") from exc
                raise
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            self._write_lock.release()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file as far as no reader needs it (never blocks a writer)."""
        self().execute("PRAGMA wal_checkpoint(PASSIVE)")
