"""SQLite files that several threads of one process use: a connection per thread, WAL.

sqlite3 connections must stay in the thread that made them; WAL lets readers
go on while one thread writes, and another process (a CLI, a second gateway)
may open the same file.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("gridbus.sqlite")


class ThreadConnections:
    def __init__(self, path: Path, schema: str, synchronous: str | None = None, checkpoint_s: float | None = None):
        """``checkpoint_s``: copy the WAL into the database from a thread of its own this often,
        instead of in whichever commit crosses SQLite's 1,000-page mark.  That commit otherwise
        copies the pages and syncs both files (tens of milliseconds on a busy disk) while every
        request behind it in the gateway's store thread waits."""
        self.path = path
        self.synchronous = synchronous
        self.checkpoint_s = checkpoint_s
        self._local = threading.local()
        # one writer at a time within this process, queued on a lock that wakes the next at
        # once: threads that meet SQLite's own lock instead sleep in its busy handler (1, 2, 5,
        # 10 … 100 ms), which under load put tens of milliseconds into every synchronous reply.
        # Another process (a CLI approving a command) still meets SQLite's lock, rarely.
        self._write_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self().executescript(schema)
        if checkpoint_s:
            threading.Thread(target=self._checkpoints, name=f"checkpoint-{path.name}", daemon=True).start()

    def __call__(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            if self.synchronous:
                db.execute(f"PRAGMA synchronous={self.synchronous}")
            if self.checkpoint_s:
                db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _checkpoints(self) -> None:
        # PASSIVE: copies what no reader still needs and never blocks a writer; the WAL starts
        # over once it has all been copied.  A failure is logged and the next round tries again.
        db = self()  # this thread's own connection
        while True:
            time.sleep(self.checkpoint_s)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("checkpoint of %s: %s; tried again in %gs", self.path, exc, self.checkpoint_s)

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
