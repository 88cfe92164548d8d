"""The gateway's request store copies its WAL into the database from a thread of its own."""
import time

from bus.sqlite_local import ThreadConnections

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, blob TEXT);"


def _write(db: ThreadConnections, rows: int) -> None:
    for n in range(rows):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t (blob) VALUES (?)", ("x" * 2000,))


def test_commits_leave_checkpoints_to_the_background_thread_which_copies_the_wal_into_the_database(tmp_path):
    # Given a store that checkpoints every 50 ms from its own thread
    db = ThreadConnections(tmp_path / "s.sqlite", SCHEMA, synchronous="NORMAL", checkpoint_s=0.05)
    start_size = (tmp_path / "s.sqlite").stat().st_size
    # When 600 rows of 2 KB are committed one by one
    _write(db, 600)
    # Then the database file comes to hold them (before a checkpoint they live in the WAL only)
    deadline = time.monotonic() + 5
    while (tmp_path / "s.sqlite").stat().st_size < start_size + 600 * 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "s.sqlite").stat().st_size >= start_size + 600 * 2000
    # and the committing connection itself never checkpoints
    assert db().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_without_a_checkpoint_thread_sqlite_checkpoints_in_the_commit_as_usual(tmp_path):
    # Given a store without a checkpoint thread (a CLI opening the gateway's store)
    db = ThreadConnections(tmp_path / "s.sqlite", SCHEMA, synchronous="NORMAL")
    # Then its commits checkpoint at SQLite's usual 1,000 pages
    assert db().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
