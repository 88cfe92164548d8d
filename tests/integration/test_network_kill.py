"""kill -9 of `gridbus network apply` in the middle of a large document: the store is what it was
before, or what a clean run makes of it, never anything between (no broker)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bus.network import open_store

pytestmark = pytest.mark.slow

T = "2026-11-01T00:00:00+05:30"
CONSUMERS = 10_000  # two chunks of 5,000 and the moves: the kill lands after the first


def change(n, kind, type_, mrid, parent=None, at=T, **attributes):
    return {"changeId": f"k-{n}", "sequence": n, "effectiveFrom": at, "kind": kind, "type": type_, "mrid": mrid,
            "parent": parent, "attributes": attributes}


def base_document() -> list[dict]:
    out = [change(1, "create", "substation", "SS-1")]
    out += [change(1 + f, "create", "feeder", f"FDR-{f}", "SS-1") for f in range(1, 11)]
    out += [change(100 + d, "create", "dt", f"DT-{d}", f"FDR-{d % 10 + 1}", dt_meter=f"DM-{d}") for d in range(100)]
    return out


def large_document() -> dict:
    changes = [change(1000 + i, "create", "consumer", f"C-{i:06d}", f"DT-{i % 100}", meter=f"M-{i:06d}",
                      category="domestic") for i in range(CONSUMERS)]
    # and, after them, moves that fan out to consumers created earlier in the same document
    changes += [change(10**6 + d, "move", "dt", f"DT-{d}", "FDR-1", at="2026-11-03T02:00:00+05:30")
                for d in range(5)]
    return {"Header": {"Verb": "changed", "Noun": "NetworkChanges", "MessageID": "big-1"},
            "Payload": {"changes": changes}}


def dump(path: Path) -> dict:
    """Everything the store holds but the wall-clock time each change was applied."""
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    out = {"elements": db.execute("SELECT * FROM elements ORDER BY mrid, version").fetchall(),
           "changes": db.execute("SELECT change_id, sequence, mrid, kind, type, effective_from, document "
                                 "FROM changes ORDER BY change_id").fetchall(),
           "versions": db.execute("SELECT * FROM path_versions ORDER BY consumer").fetchall(),
           "outbox": db.execute("SELECT * FROM outbox ORDER BY id").fetchall()}
    db.close()
    return out


def apply_command(doc: Path, store: Path) -> subprocess.Popen:
    env = {**os.environ, "GRIDBUS_NETWORK_STORE": str(store), "GRIDBUS_HOME": str(store.parent),
           "GRIDBUS_TRACING": "off", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bus.cli.main", "network", "apply", str(doc)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_document_leaves_the_store_as_before_and_a_rerun_as_a_clean_run(tmp_path):
    # Given a store holding a base network, and a large document
    base = tmp_path / "base.sqlite"
    assert open_store(base).apply(base_document()).result == "OK"
    doc = tmp_path / "big.json"
    doc.write_text(json.dumps(large_document()))
    before = dump(base)
    # and what a clean run makes of it
    clean = tmp_path / "clean" / "network.sqlite"
    clean.parent.mkdir()
    shutil.copy(base, clean)
    assert open_store(clean).apply(large_document()["Payload"]["changes"], document_id="big-1").result == "OK"
    after = dump(clean)
    assert len(after["outbox"]) == CONSUMERS + 5 * CONSUMERS // 100
    # When `gridbus network apply` is killed with SIGKILL once it has applied the first 5,000 changes
    killed = tmp_path / "killed" / "network.sqlite"
    killed.parent.mkdir()
    shutil.copy(base, killed)
    proc = apply_command(doc, killed)
    line = proc.stderr.readline()  # the first progress line comes after the first chunk
    assert "5,000 of" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Then the store is exactly as before: nothing of the document
    state = dump(killed)
    assert state == before, "the store holds part of the document"
    # When the same document is applied again
    rerun = apply_command(doc, killed)
    rerun.communicate(timeout=120)
    # Then the store equals the clean run's
    assert rerun.returncode == 0
    assert dump(killed) == after


def test_kill_9_mid_bulk_load_into_an_empty_store_leaves_it_empty_with_its_indexes(tmp_path):
    # Given an empty store and a first load of 30,000 consumers: the bulk path, which drops the
    # secondary indexes inside its transaction and builds them again at the end
    bulk_consumers = 30_000
    changes = base_document() + [change(1000 + i, "create", "consumer", f"C-{i:06d}", f"DT-{i % 100}",
                                        meter=f"M-{i:06d}", category="domestic") for i in range(bulk_consumers)]
    doc = tmp_path / "first-load.json"
    doc.write_text(json.dumps({"Payload": {"changes": changes}}))
    killed = tmp_path / "killed" / "network.sqlite"
    killed.parent.mkdir()
    open_store(killed)
    before = dump(killed)
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    index_names = sqlite3.connect(str(killed)).execute(indexes).fetchall()
    assert len(index_names) == 4
    clean = tmp_path / "clean" / "network.sqlite"
    clean.parent.mkdir()
    assert open_store(clean).apply(changes, document_id=None).result == "OK"
    after = dump(clean)
    # When `gridbus network apply` is killed with SIGKILL after its first bulk chunk (20,000)
    proc = apply_command(doc, killed)
    line = proc.stderr.readline()
    assert "20,000 of" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Then the store is empty again, intact, with every index it had
    assert dump(killed) == before
    assert sqlite3.connect(str(killed)).execute(indexes).fetchall() == index_names
    # When the load runs again, then the store equals a clean run's (the document id aside)
    rerun = apply_command(doc, killed)
    rerun.communicate(timeout=300)
    assert rerun.returncode == 0
    again = dump(killed)
    again["changes"] = [row[:-1] for row in again["changes"]]
    after["changes"] = [row[:-1] for row in after["changes"]]
    assert again == after
