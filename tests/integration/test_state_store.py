"""The state store's two databases behind one interface: the same statements, the same answers."""
from __future__ import annotations

import threading

import pytest

from bus.errors import ConfigError
from bus.state_store import StateStoreError, open_state_db, state_store_url
from tests.postgres import postgres_url  # noqa: F401

SCHEMA = ["CREATE TABLE IF NOT EXISTS things (k TEXT PRIMARY KEY, v {REAL} NOT NULL, b {BLOB})"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        yield open_state_db("things", SCHEMA, tmp_path / "things.sqlite", url="")
    else:
        url = request.getfixturevalue("postgres_url")
        store = open_state_db("things", SCHEMA, tmp_path / "unused.sqlite", url=url)
        store.execute("DELETE FROM things")
        yield store
        store.close()


def test_the_same_statements_give_the_same_answers_on_both(db):
    # Given an upsert written once
    upsert = "INSERT INTO things VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    # When rows are written, one of them twice, inside and outside a transaction
    with db.writing():
        db.executemany(upsert, [("a", 1.5, b"\x00\x01"), ("b", 2.0, None)])
    assert db.execute(upsert, ("a", 3.25, None)) == 1
    # Then both databases answer alike
    assert db.rows("SELECT k, v, b FROM things ORDER BY k") == [("a", 3.25, b"\x00\x01"), ("b", 2.0, None)]


def test_a_failed_transaction_leaves_nothing(db):
    # Given a transaction that fails half-way
    with pytest.raises(RuntimeError), db.writing():
        db.execute("INSERT INTO things VALUES (?, ?, ?)", ("x", 1.0, None))
        raise RuntimeError("crash")
    # Then none of it was written
    assert db.rows("SELECT COUNT(*) FROM things") == [(0,)]


def test_a_nested_transaction_undoes_only_its_own_writes(db):
    with db.writing():
        db.execute("INSERT INTO things VALUES (?, ?, ?)", ("kept", 1.0, None))
        with pytest.raises(RuntimeError), db.writing():
            db.execute("INSERT INTO things VALUES (?, ?, ?)", ("undone", 1.0, None))
            raise RuntimeError("inner")
    assert db.rows("SELECT k FROM things") == [("kept",)]


def test_database_errors_are_the_stores_own(db):
    with pytest.raises(StateStoreError):
        db.execute("INSERT INTO things VALUES (?, ?, ?)", ("k", None, None))


def test_threads_write_at_once_and_every_row_is_kept(db):
    # Given eight threads writing 50 rows each
    def write(t):
        for i in range(50):
            with db.writing():
                db.execute("INSERT INTO things VALUES (?, ?, ?)", (f"{t}-{i}", float(i), None))
    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then all 400 are there
    assert db.rows("SELECT COUNT(*) FROM things") == [(400,)]


def test_a_state_store_setting_that_is_not_postgresql_is_refused():
    assert state_store_url({}) is None
    assert state_store_url({"GRIDBUS_STATE_STORE": " "}) is None
    with pytest.raises(ConfigError, match="postgresql://"):
        state_store_url({"GRIDBUS_STATE_STORE": "mysql://u:secret@db/x"})
    try:
        state_store_url({"GRIDBUS_STATE_STORE": "mysql://u:secret@db/x"})
    except ConfigError as exc:
        assert "secret" not in str(exc)


def test_one_setting_puts_the_network_outage_and_trace_stores_on_the_shared_database(monkeypatch, tmp_path):
    from bus.state_store import store_location

    # Given only GRIDBUS_STATE_STORE
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    monkeypatch.delenv("GRIDBUS_STATE", raising=False)
    for own in ("GRIDBUS_NETWORK_STORE", "GRIDBUS_OUTAGE_STORE", "GRIDBUS_TRACE_STORE"):
        monkeypatch.delenv(own, raising=False)
    monkeypatch.setenv("GRIDBUS_STATE_STORE", "postgresql://gridbus@db.example/gridbus")
    # Then every store with a setting of its own goes there
    assert store_location("GRIDBUS_NETWORK_STORE", "network.sqlite") == "postgresql://gridbus@db.example/gridbus"
    # And a store's own setting still wins
    monkeypatch.setenv("GRIDBUS_TRACE_STORE", str(tmp_path / "t.sqlite"))
    assert store_location("GRIDBUS_TRACE_STORE", "trace.sqlite") == str(tmp_path / "t.sqlite")
    # And without any, the SQLite file under the home
    monkeypatch.delenv("GRIDBUS_STATE_STORE")
    assert store_location("GRIDBUS_OUTAGE_STORE", "outages.sqlite") == tmp_path / "state" / "outages.sqlite"
