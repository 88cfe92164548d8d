"""How long one prune of the request store holds its write lock (the gateway's commits wait meanwhile).

    .venv/bin/python benchmarks/request_store_prune.py [ROWS]     (default 300,000)

Fills a throw-away store with ROWS answered reads, then prunes the older half a chunk at a time,
as the gateway does (``gridbus gateway --keep-requests``), and reports the time per chunk and
of a prune that finds nothing.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bus.requests.store import PRUNE_CHUNK, RequestStore

DOCUMENT = {"Header": {"Verb": "get", "Noun": "MeterReadings"},
            "Request": {"meters": ["UPM00000001"], "readingTypes": ["0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"] * 4}}
REPLY = {"Reply": {"Result": "OK"},
         "Payload": {"MeterReadings": {"MeterReading": [{"meter": "UPM00000001", "Readings": [{"v": 1.0}] * 10}]}}}


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="gridbus-prune-") as folder:
        path = Path(folder) / "requests.sqlite"
        store = RequestStore(path, url="")  # the SQLite file whatever GRIDBUS_STATE_STORE says: rowids below
        now, started = time.time(), time.perf_counter()
        with store.batch() as db:
            for n in range(rows):
                store.create(id=f"r{n:09d}", system="mdms-1", requested_by=None, kind="meter-readings", route="r",
                             client_key=None, action=None, meters=1, state="requested", expires=None,
                             reply_address=None, correlation_id=None, document=DOCUMENT, sent_on="r")
            # one read every 10 ms, the oldest first, each with its reply
            db.execute("UPDATE requests SET created = ? + rowid * 0.01, reply = ?", (now - rows * 0.01, str(REPLY)))
        print(f"{rows:,} reads stored in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
        cut, chunks, deleted = now - rows * 0.01 / 2, [], PRUNE_CHUNK
        while deleted == PRUNE_CHUNK:
            started = time.perf_counter()
            deleted = store.prune(cut)
            chunks.append((time.perf_counter() - started, deleted))
        times = [t * 1000 for t, _ in chunks]
        print(f"pruned {sum(d for _, d in chunks):,} in {len(chunks)} chunks of up to {PRUNE_CHUNK:,}: "
              f"p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms a chunk")
        started = time.perf_counter()
        store.prune(cut)
        print(f"a prune with nothing to delete: {(time.perf_counter() - started) * 1000:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
