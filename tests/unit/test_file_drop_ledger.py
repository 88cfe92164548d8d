"""The file-drop ledger on both databases (SQLite file, shared PostgreSQL): a file's life from
received to reported, outcomes first-wins, and a ledger file of the version before the rename."""
from __future__ import annotations

import sqlite3

from connectors.file_drop.ledger import Ledger
from tests.keeper_state import clean, keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401

TABLES = ("file_drop_files", "chunk_outcomes", "chunk_lines", "file_survey")


def outcome(chunk: int, result: str) -> dict:
    return {"route": "r", "checksum": "c1", "chunk": chunk, "result": result}


def test_a_file_is_published_reconciled_and_reported_once(tmp_path, state_url):
    clean(state_url, *TABLES)
    ledger = Ledger(tmp_path / "file-drop.sqlite", url=state_url)
    # Given a file started, started again (a retry after a crash), then published in two chunks
    ledger.start("r", "c1", "a.csv")
    ledger.start("r", "c1", "a.csv")
    assert ledger.state("r", "c1") == "publishing" and ledger.complete_files() == []
    ledger.published("r", "c1", 2, 2000, "/archive/a.csv", [(1, 2, 1001, 1000), (2, 1002, 2001, 1000)],
                     {"blank_lines": 1})
    # When the outcomes arrive, one of them twice with another result (a redelivery)
    ledger.record_outcomes([outcome(1, "delivered")])
    assert ledger.complete_files() == []
    ledger.record_outcomes([outcome(2, "delivered"), outcome(1, "dead-lettered")])
    # Then the file is complete, with its first outcomes, its chunks' lines and its survey
    [file] = ledger.complete_files()
    assert (file["name"], file["chunks"], file["rows"]) == ("a.csv", 2, 2000)
    assert [o["result"] for o in ledger.outcomes("r", "c1")] == ["delivered", "delivered"]
    assert [c["first_line"] for c in ledger.chunk_lines("r", "c1")] == [2, 1002]
    assert ledger.survey("r", "c1") == {"blank_lines": 1}
    # and once reported it is complete no more
    ledger.reported("r", "c1")
    assert ledger.state("r", "c1") == "reported" and ledger.complete_files() == []
    ledger.close()


def test_a_ledger_file_of_the_earlier_version_keeps_its_files(tmp_path):
    # Given a ledger file whose files table is still called ``files``, with a published file
    path = tmp_path / "file-drop.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE files (route TEXT NOT NULL, checksum TEXT NOT NULL, name TEXT NOT NULL, "
               "state TEXT NOT NULL, chunks INTEGER, rows INTEGER, archive_path TEXT, received_at REAL, "
               "published_at REAL, reported_at REAL, PRIMARY KEY (route, checksum))")
    db.execute("INSERT INTO files (route, checksum, name, state) VALUES ('r', 'c0', 'old.csv', 'published')")
    db.commit()
    db.close()
    # When this version opens it
    ledger = Ledger(path, url="")
    # Then the file is still known (dropped again, it is not delivered twice)
    assert ledger.state("r", "c0") == "published"
