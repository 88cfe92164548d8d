"""What the file-drop reconciler takes from gridbus.reconciliation (connectors/file_drop/reconcile.py):
chunk outcomes of the workers' shape, and nothing that would fail its batch or a file's report."""
from __future__ import annotations

import json

import pytest

from connectors.file_drop.reconcile import build_report, outcome_record

GOOD = {"route": "hes-a-csv-to-mdms-1", "checksum": "ab12", "file": "f.csv", "chunk": 0, "chunks": 1,
        "message_id": "m-1", "result": "delivered", "reason": "", "rows_in": 2,
        "rejected": [{"line": 3, "reason": "kwh 'x' is not a number"}], "readings": 4, "events": 0}


def test_a_workers_record_is_taken_as_it_is_and_makes_a_report():
    # Given the record a worker publishes for a delivered chunk
    record = outcome_record(json.dumps(GOOD).encode())
    # Then it is taken whole, and a report can be built from it
    assert record == GOOD
    report = build_report({"route": GOOD["route"], "name": "f.csv", "checksum": "ab12", "archive_path": "/a",
                           "received_at": 0, "rows": 3, "chunks": 1}, [record])
    assert report["rows_rejected"] == 1 and report["readings_delivered"] == 4


@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe", b"not json", b"null", b"[]", b"42", b'"text"',
    json.dumps({**GOOD, "route": None}).encode(),
    json.dumps({**GOOD, "chunk": "0"}).encode(),
    json.dumps({**GOOD, "chunk": True}).encode(),
    json.dumps({**GOOD, "chunk": -1}).encode(),
    json.dumps({**GOOD, "result": "exploded"}).encode(),
    json.dumps({**GOOD, "rows_in": 1.5}).encode(),
    json.dumps({**GOOD, "rejected": "all"}).encode(),
    json.dumps({**GOOD, "rejected": [{"line": "3", "reason": "r"}]}).encode(),
    json.dumps({**GOOD, "rejected": [3]}).encode(),
    json.dumps({k: v for k, v in GOOD.items() if k != "message_id"}).encode(),
    b"[" * 100_000,  # deeper than the JSON parser goes
])
def test_anything_else_is_refused_not_raised(body):
    # Given a body that is not a chunk outcome (broken, hostile, deep), Then it is refused without an exception
    assert outcome_record(body) is None
