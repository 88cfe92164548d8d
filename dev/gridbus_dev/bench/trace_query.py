"""`gridbus bench trace`: `trace --meter` against a store holding N read events.

The store is filled the way the recorder fills it (TraceStore.add): batches of
1,000 interval reads from 10 meters each, five hops per batch, so N events
index N (meter, batch) pairs.  The query is then timed as an operator runs it:
a fresh `gridbus trace --meter` process, and the store call alone.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bus.tracing.store import SqliteTraceStore as TraceStore

HOPS = ("received", "published", "consumed", "transformed", "delivered")
METERS_PER_BATCH = 10


def fill(store: TraceStore, events: int, meters: int, progress=None) -> None:
    batches = events // len(HOPS)
    t0 = time.time() - batches * 0.01
    chunk: list[dict] = []
    for b in range(batches):
        mid = f"file-bench-{b:09d}"
        first = (b * METERS_PER_BATCH) % meters
        serials = [f"UPM{(first + k) % meters:08d}" for k in range(METERS_PER_BATCH)]
        at = t0 + b * 0.01
        for h, kind in enumerate(HOPS):
            chunk.append({"event_id": f"{mid}-{h}", "kind": kind, "at": at + h * 0.001, "message_id": mid,
                          "correlation_id": f"file-bench-{b // 2000:06d}", "route": "hes-a-csv-to-mdms-1",
                          "attempt": 1, "meters": serials if kind == "transformed" else None})
        if len(chunk) >= 200_000:
            store.add(chunk)
            chunk = []
            if progress:
                progress((b + 1) * len(HOPS))
    if chunk:
        store.add(chunk)


def bench_trace(events: int, work: Path, echo=print) -> dict:
    home = work / "home"
    path = home / "state" / "trace.sqlite"
    store = TraceStore(path)
    meters = max(1000, events // (len(HOPS) * 40))  # each meter in about 40 batches
    started = time.perf_counter()
    last = [0.0]
    # bulk load: secondary indexes are built once at the end (the same store the recorder
    # would have built event by event, in a fraction of the time)
    indexes = [row[0] for row in store.db.execute(
        "SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")]
    for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL").fetchall():
        store.db.execute(f"DROP INDEX {name}")

    def progress(n):
        if time.perf_counter() - last[0] > 5:
            last[0] = time.perf_counter()
            echo(f"  {n:,} / {events:,} events stored")
    fill(store, events, meters, progress)
    echo("  building indexes ...")
    for sql in indexes:
        store.db.execute(sql)
    store.db.execute("ANALYZE")
    fill_s = time.perf_counter() - started
    rows = store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    meter_rows = store.db.execute("SELECT COUNT(*) FROM meters").fetchone()[0]
    rng = random.Random(5)
    samples = [f"UPM{rng.randrange(meters):08d}" for _ in range(20)]
    store_times = []
    for serial in samples:
        t = time.perf_counter()
        found = store.events_of(store.messages_for_meter(serial))
        store_times.append(time.perf_counter() - t)
    env = {**os.environ, "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env")}
    cli_times = []
    for serial in samples[:5]:
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bus.cli.main", "trace", "--meter", serial],
                              env=env, capture_output=True, text=True)
        cli_times.append(time.perf_counter() - t)
        if done.returncode:
            raise RuntimeError(done.stderr)
    return {"events": rows, "meter_rows": meter_rows, "meters": meters, "fill_s": fill_s,
            "hits_per_meter": len({e["message_id"] for e in found}),
            "store_query_max_s": max(store_times), "store_query_median_s": sorted(store_times)[10],
            "cli_max_s": max(cli_times), "cli_median_s": sorted(cli_times)[2],
            "size_mb": sum(p.stat().st_size for p in path.parent.glob("trace.sqlite*")) / 2 ** 20}
