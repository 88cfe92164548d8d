"""A replay run's hold on the rows it marks ``replaying``, and the test of whether a run still lives.

A row stays its run's while that run's process lives; only rows of a run that is gone may be
taken over (``DeadLetterStore.take_over``).  "Lives" must be exact, not an age limit: a live run
held up by a blocked broker can outlast any limit (its rows would be published twice), and a
killed run's rows would wait for nothing.  So a run holds a lock that its operating system or
database drops when the process dies, however it dies (SIGKILL included):

* SQLite (one host): an exclusive ``flock`` on ``<runs_dir>/<token>.lock``.
* PostgreSQL (every host): a session-level advisory lock keyed by a hash of the token, on a
  connection the run keeps for its whole life; the server drops it when that connection closes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import uuid
from pathlib import Path

from bus.state_store import PostgresStateDb, StateStoreError, _translated

# the advisory-lock class of replay runs ("DLRR"): the two-key form keeps these locks apart from
# the one-key transaction locks the stores take (``StateDb.lock``)
RUN_LOCK_CLASS = 0x444C5252


def new_token() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def lock_key(token: str) -> int:
    """The run's advisory-lock key: 31 bits of a hash of its token (a positive int4, so that
    pg_locks shows it as it was given)."""
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "big") & 0x7FFFFFFF


class ReplayRun:
    """A run on a SQLite store: an exclusive ``flock`` from creation to ``close()``.  (SQLite in
    WAL mode works only for processes on one host, so a lock on that host is enough.)"""

    def __init__(self, runs_dir: Path):
        self.token = new_token()
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = runs_dir / f"{self.token}.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        # held before any row names this token, so whoever finds the token in a row finds it locked
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def check(self) -> None:
        """Raises when the run no longer holds its rows (never, for a flock: the kernel keeps it)."""

    def close(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # then unlock: a checker that still opened it sees the run gone
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def flock_run_alive(runs_dir: Path, run: str) -> bool:
    if "/" in run:
        return False
    path = runs_dir / f"{run}.lock"
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


class PostgresReplayRun(ReplayRun):
    """A run on the shared PostgreSQL store: ``pg_try_advisory_lock(RUN_LOCK_CLASS, lock_key)`` on
    a pooled connection taken out of the pool for the run's life (a connection given back would
    serve other calls, and a lock on it would outlive the run)."""

    def __init__(self, db: PostgresStateDb):
        self._db = db
        # the pool of bus/state_store.py: a connection of its own, checked like any other
        self._pool = db._pool
        with _translated(db.location, "taking a replay run's lock"):
            self._conn = self._pool.getconn()
            try:
                while True:  # a token whose 31-bit key a live run holds already: draw another
                    self.token = new_token()
                    if self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                          (RUN_LOCK_CLASS, lock_key(self.token))).fetchone()[0]:
                        break
            except BaseException:
                self._pool.putconn(self._conn)
                raise

    def check(self) -> None:
        """Raises StateStoreError when the run's connection is gone (a server restart): the server
        dropped its lock, so another run may take its rows; this one must publish no more."""
        if self._conn is None:
            raise StateStoreError("the replay run is closed")
        with _translated(self._db.location, "the replay run's lock was lost"):
            self._conn.execute("SELECT 1")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, lock_key(self.token)))
        except Exception:  # noqa: BLE001 - a broken connection holds no lock any more
            pass
        self._pool.putconn(conn)  # the pool discards a broken one


def postgres_run_alive(db: PostgresStateDb, run: str) -> bool:
    """Whether some session (on any host) holds the run's advisory lock."""
    return bool(db.rows(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
        "AND classid = ?::bigint::oid AND objid = ?::bigint::oid "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (RUN_LOCK_CLASS, lock_key(run))))
