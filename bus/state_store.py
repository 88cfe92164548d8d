"""Where the state gridbus keeps lives: one SQLite file per store under ``$GRIDBUS_HOME/state``
(the embedded default, one host), or one PostgreSQL database that every host shares
(``GRIDBUS_STATE_STORE=postgresql://user:pass@host/db``).

The stores that keep state (dead letters and their audit, the request store, the seen-alarm
store, gateway keys, the file ledger, operators, network delivery state) write their SQL once,
with ``?`` placeholders and the SQL both databases speak (``INSERT ... ON CONFLICT``), and open
their database here.  One code path, two databases, one test suite run against both.

Why a pool (psycopg_pool) for PostgreSQL: a gateway's threads each need a connection, and a
PostgreSQL restart breaks every connection at once.  The pool checks a connection before it hands
it out and replaces a broken one, so after a restart the next call works without the store
knowing there was one.  A statement that was running when the server went away fails with
``StateStoreError``; the caller's own retry rules apply (a dead letter stays unacked on its queue,
a request gets 503).
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bus.errors import ConfigError, GridbusError
from bus.sqlite_local import ThreadConnections

STATE_STORE_ENV = "GRIDBUS_STATE_STORE"
# the advisory lock two processes creating the same tables at once take: PostgreSQL's
# CREATE TABLE IF NOT EXISTS is not safe against a concurrent one ("STATE" in ASCII)
SCHEMA_LOCK_KEY = 0x5354415445
RECONNECT_S = 10.0


class StateStoreError(GridbusError):
    """The state store's database failed (disk full, locked too long, connection lost)."""


def state_store_url(env: Mapping[str, str] | None = None) -> str | None:
    """The shared state store's URL, or None for the embedded SQLite files."""
    if env is None:
        from bus.settings import environment

        env = environment()
    value = (env.get(STATE_STORE_ENV) or "").strip()
    if not value:
        return None
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{STATE_STORE_ENV} must be a postgresql:// URL (or unset for SQLite files), "
                          f"not {value.split('@')[-1]!r}")
    return value


class Dialect:
    """What the two databases spell differently.  Statements use ``?``; DDL uses ``{NAME}``."""

    name = "sqlite"
    placeholder = "?"
    ddl = {"WITHOUT_ROWID": " WITHOUT ROWID", "ID_KEY": "INTEGER PRIMARY KEY", "BLOB": "BLOB",
           "REAL": "REAL", "BIGINT": "INTEGER"}

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def format(self, statements: list[str]) -> list[str]:
        return [s.format(**self.ddl) for s in statements]


class PostgresDialect(Dialect):
    name = "postgresql"
    placeholder = "%s"
    ddl = {"WITHOUT_ROWID": "", "ID_KEY": "BIGSERIAL PRIMARY KEY", "BLOB": "BYTEA",
           "REAL": "DOUBLE PRECISION", "BIGINT": "BIGINT"}


class StateDb:
    """``rows``, ``execute``, ``executemany`` and ``writing()`` (one transaction; calls made on the
    same thread inside it run in it)."""

    dialect: Dialect
    location: str
    shared: bool  # True when other hosts see the same rows

    def rows(self, sql: str, args=()) -> list[tuple]:
        raise NotImplementedError

    def execute(self, sql: str, args=()) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: list) -> None:
        raise NotImplementedError

    def writing(self):
        raise NotImplementedError

    def batch(self):
        """The outer transaction of several ``writing()``s, one commit for all (group commit): each
        ``writing()`` inside it is a savepoint, so its error undoes its own writes only.  On SQLite
        the write lock and the WAL sync are paid once per batch; on PostgreSQL one round trip of
        COMMIT instead of one per piece of work."""
        return self.writing()

    def lock(self, key: int) -> None:
        """Inside ``writing()``: hold ``key`` until the transaction ends, against every process
        that takes it (SQLite's BEGIN IMMEDIATE already holds the whole file)."""

    def close(self) -> None:
        pass


@contextmanager
def _translated(location: str, what: str = "") -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StateStoreError(f"state store {location}{f' ({what})' if what else ''}: {exc}") from exc
    except StateStoreError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("psycopg", "psycopg_pool")):
            raise StateStoreError(f"state store {location}{f' ({what})' if what else ''}: {exc}") from exc
        raise


class SqliteStateDb(StateDb):
    dialect = Dialect()
    shared = False

    def __init__(self, path: Path, schema: list[str], synchronous: str | None = None,
                 checkpoint_s: float | None = None):
        """``checkpoint_s``: the WAL is checkpointed from a thread of its own (``ThreadConnections``)."""
        self.location = str(path)
        with _translated(self.location, "opening"):
            self._conns = ThreadConnections(path, ";\n".join(self.dialect.format(schema)) + ";",
                                            synchronous=synchronous, checkpoint_s=checkpoint_s)

    def rows(self, sql: str, args=()) -> list[tuple]:
        with _translated(self.location):
            return self._conns().execute(sql, args).fetchall()

    def execute(self, sql: str, args=()) -> int:
        with _translated(self.location):
            return self._conns().execute(sql, args).rowcount

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            with _translated(self.location):
                self._conns().executemany(sql, rows)

    @contextmanager
    def writing(self) -> Iterator["SqliteStateDb"]:
        """BEGIN IMMEDIATE (a savepoint when already inside one): committed, or rolled back on any error."""
        with _translated(self.location), self._conns.transaction():
            yield self


class PostgresStateDb(StateDb):
    dialect = PostgresDialect()
    shared = True

    def __init__(self, url: str, schema: list[str], max_connections: int = 8, wait_s: float = 30):
        """``wait_s``: how long a call waits for a connection before it fails with
        ``StateStoreError`` (while the server is down, every call waits this long)."""
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ConfigError(f"{STATE_STORE_ENV}=postgresql:// needs psycopg and psycopg-pool: "
                              "pip install 'gridbus[postgres]'") from exc
        self.location = url.split("@")[-1]  # never the password
        self._tx = threading.local()
        # check: a connection the server dropped (a restart) is replaced before it is handed out
        # reconnect_timeout: the pool retries a lost server with a backoff that doubles without
        # bound (1, 2, 4 ... s); giving an attempt up after RECONNECT_S and starting a fresh one on
        # the next call keeps the time from the server's return to the first working call to
        # seconds, however long the server was away
        self._pool = ConnectionPool(url, min_size=1, max_size=max_connections, open=False, timeout=wait_s,
                                    reconnect_timeout=RECONNECT_S,
                                    kwargs={"autocommit": True, "connect_timeout": 10},
                                    check=ConnectionPool.check_connection, name=f"gridbus-{self.location}")
        with _translated(self.location, "opening"):
            self._pool.open(wait=True, timeout=30)
            with self.writing():
                self.lock(SCHEMA_LOCK_KEY)
                for statement in self.dialect.format(schema):
                    self._tx.conn.execute(statement)

    @contextmanager
    def _connection(self):
        conn = getattr(self._tx, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._pool.connection() as conn:
            yield conn

    def rows(self, sql: str, args=()) -> list[tuple]:
        with _translated(self.location), self._connection() as conn:
            cur = conn.execute(self.dialect.sql(sql), args)
            return cur.fetchall() if cur.description else []

    def execute(self, sql: str, args=()) -> int:
        with _translated(self.location), self._connection() as conn:
            return conn.execute(self.dialect.sql(sql), args).rowcount

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            with _translated(self.location), self._connection() as conn, conn.cursor() as cur:
                cur.executemany(self.dialect.sql(sql), rows)

    @contextmanager
    def writing(self) -> Iterator["PostgresStateDb"]:
        if getattr(self._tx, "conn", None) is not None:  # nested: a savepoint of the outer transaction
            with _translated(self.location), self._tx.conn.transaction():
                yield self
            return
        with _translated(self.location), self._pool.connection() as conn:
            with conn.transaction():
                self._tx.conn = conn
                try:
                    yield self
                finally:
                    self._tx.conn = None

    def lock(self, key: int) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def close(self) -> None:
        self._pool.close()


def open_state_db(name: str, schema: list[str], sqlite_path: Path, synchronous: str | None = None,
                  url: str | None = None, checkpoint_s: float | None = None,
                  wait_s: float | None = None) -> StateDb:
    """The database of the store ``name``: the shared PostgreSQL one when ``GRIDBUS_STATE_STORE``
    is set (or ``url`` is given; ``""`` for SQLite whatever the setting), else the SQLite file
    ``sqlite_path``.  ``checkpoint_s`` applies to SQLite, ``wait_s`` (how long a call waits
    for a connection, 30 s unless given) to PostgreSQL: a process answering callers gives a
    short one, so that while the server is down it refuses them quickly instead of hanging."""
    url = url if url is not None else state_store_url()
    if url:
        return PostgresStateDb(url, schema, wait_s=30 if wait_s is None else wait_s)
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStateDb(sqlite_path, schema, synchronous=synchronous, checkpoint_s=checkpoint_s)


def store_location(own_setting: str, sqlite_name: str) -> str | Path:
    """Where a store with a setting of its own lives (the network, outage and trace stores):
    that setting (a postgresql:// URL or a file), else the shared state store when one is set,
    else ``$GRIDBUS_HOME/state/<sqlite_name>``.  One setting puts every store of a deployment
    on its PostgreSQL; a store that must live elsewhere (a trace store on a database of its own,
    say) still can."""
    from bus.settings import Settings, environment

    env = environment()
    return env.get(own_setting) or state_store_url(env) or Settings.load().state_dir / sqlite_name
