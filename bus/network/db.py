"""The two databases behind the network store, behind one small interface: ``rows``, ``stream``,
``execute``, ``executemany`` and ``writing()`` (one writer at a time, one transaction).

sqlite3 and psycopg errors are translated here, and only here, into NetworkStoreError.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.errors import ConfigError, GridbusError
from bus.network.schema import PostgresDialect, SqliteDialect
from bus.sqlite_local import ThreadConnections

# the PostgreSQL advisory lock every writer of the network store takes ("GRIDNET" in ASCII)
ADVISORY_LOCK_KEY = 0x475249444E4554


class NetworkStoreError(GridbusError):
    """The network store's database failed (disk full, locked too long, connection lost)."""


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise NetworkStoreError(f"network store ({what}): {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise NetworkStoreError(f"network store ({what}): {exc}") from exc
        raise


class SqliteDb:
    dialect = SqliteDialect()

    def __init__(self, path: Path):
        self.location = str(path)
        with _translated(self.location):
            self._conns = ThreadConnections(path, ";\n".join(self.dialect.schema()) + ";")
            self._conns().execute("PRAGMA cache_size=-131072")  # 128 MB: a 1M-consumer tree's indexes stay in memory

    def rows(self, sql: str, args=()) -> list[tuple]:
        with _translated(self.location):
            return self._conns().execute(sql, args).fetchall()

    def stream(self, sql: str, args=()) -> Iterator[tuple]:
        with _translated(self.location):
            yield from self._conns().execute(sql, args)

    def execute(self, sql: str, args=()) -> None:
        with _translated(self.location):
            self._conns().execute(sql, args)

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            with _translated(self.location):
                self._conns().executemany(sql, rows)

    def load_pragmas(self, loading: bool) -> None:
        """A bulk load's settings: a larger page cache (the indexes built at its end sort in it)."""
        with _translated(self.location):
            conn = self._conns()
            conn.execute(f"PRAGMA cache_size={-524288 if loading else -131072}")
            conn.execute(f"PRAGMA temp_store={'MEMORY' if loading else 'DEFAULT'}")

    def data_version(self) -> int:
        """A number that changes when another connection commits to the database (SQLite's
        ``PRAGMA data_version``, per connection: cheap enough to ask every second)."""
        with _translated(self.location):
            return int(self._conns().execute("PRAGMA data_version").fetchone()[0])

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after a large transaction)."""
        with _translated(self.location):
            self._conns().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    @contextmanager
    def writing(self) -> Iterator["SqliteDb"]:
        """BEGIN IMMEDIATE: the one writer (other processes wait up to 30 s); committed, or rolled
        back on any error.  Reads through ``self`` inside see the transaction's own writes."""
        with _translated(self.location), self._conns.batch():
            yield self


class PostgresDb:
    dialect = PostgresDialect()
    lock_key = ADVISORY_LOCK_KEY  # the outage store (bus/outages/store.py) has a lock of its own
    counts_writes = True          # store_version (the network store's schema); the outage store has none

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError("a postgresql:// network store needs psycopg: pip install 'psycopg[binary]'") from exc
        self.location = url.split("@")[-1]  # never the password
        try:
            # reads and the writer on connections of their own: a read of another thread never
            # lands inside the writer's transaction
            self._read = psycopg.connect(url, autocommit=True)
            self._write = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(f"network store {self.location}: {exc}") from exc
        self._read_lock, self._write_lock = threading.Lock(), threading.Lock()
        self._in_write = threading.local()
        with self.writing():
            for statement in self.dialect.schema():
                self._write.execute(statement)

    def _conn(self):
        return self._write if getattr(self._in_write, "on", False) else self._read

    def rows(self, sql: str, args=()) -> list[tuple]:
        with _translated(self.location):
            if getattr(self._in_write, "on", False):
                cur = self._write.execute(self.dialect.sql(sql), args)
                return cur.fetchall() if cur.description else []
            with self._read_lock:
                cur = self._read.execute(self.dialect.sql(sql), args)
                return cur.fetchall() if cur.description else []

    def stream(self, sql: str, args=()) -> Iterator[tuple]:
        with _translated(self.location):
            with self._read.cursor() as cur:
                yield from cur.stream(self.dialect.sql(sql), args)

    def execute(self, sql: str, args=()) -> None:
        with _translated(self.location):
            self._conn().execute(self.dialect.sql(sql), args)

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            with _translated(self.location), self._conn().cursor() as cur:
                cur.executemany(self.dialect.sql(sql), rows)

    def load_pragmas(self, loading: bool) -> None:
        pass  # PostgreSQL: its own settings serve a load

    def checkpoint(self) -> None:
        pass

    def data_version(self) -> int:
        """A number that changes with every write transaction (``store_version``, counted by
        ``writing``; the row statistics would be cheaper but reach their view up to 10 s late)."""
        rows = self.rows("SELECT v FROM store_version WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    @contextmanager
    def writing(self) -> Iterator["PostgresDb"]:
        """One transaction holding the store's advisory lock: one writer across every machine."""
        with self._write_lock, _translated(self.location), self._write.transaction():
            self._write.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_key,))
            self._in_write.on = True
            try:
                yield self
                if self.counts_writes:
                    self._write.execute("UPDATE store_version SET v = v + 1 WHERE id = 1")
            finally:
                self._in_write.on = False
