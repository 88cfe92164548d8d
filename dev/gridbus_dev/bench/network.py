"""Benchmark of the network store (issue 18): a snapshot-equivalent set of creates into an empty
store, and ``dts_of`` for a batch of meters, beside the issue's baseline (the same rows loaded
with a plain ``executemany`` into a bare SQLite table) in the same run.

    python -m gridbus_dev.bench.network [--consumers 1000000] [--lookups 10000] [--dir DIR] [--json]

The network is regular (no generator of its own: dev/simulators/network.py makes realistic
ones): 50 substations, 10 feeders each, 20 DTs per feeder, consumers spread evenly over the DTs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bus.network.export import SNAPSHOT_COLUMNS
from bus.network.store import open_store

T0 = "2026-11-01T00:00:00+05:30"


def shape(consumers: int) -> tuple[int, int, int]:
    """substations, feeders per substation, DTs per feeder: ≈ 1 DT per 100 consumers."""
    substations = max(1, round(consumers / 20_000))
    return substations, 10, 20


def creates(consumers: int) -> Iterator[dict]:
    """The changes a snapshot import of ``consumers`` meters amounts to, parents first."""
    substations, feeders, dts = shape(consumers)
    seq = 0

    def change(type_, mrid, parent, **attributes):
        nonlocal seq
        seq += 1
        return {"changeId": f"bench-{seq}", "sequence": seq, "effectiveFrom": T0, "kind": "create",
                "type": type_, "mrid": mrid, "parent": parent, "attributes": attributes}

    all_dts = []
    for s in range(substations):
        ss = f"SS-{s:03d}"
        yield change("substation", ss, None, voltage_kv="33/11")
        for f in range(feeders):
            fdr = f"FDR-{s:03d}{f:02d}"
            yield change("feeder", fdr, ss, voltage_kv=11, head_meter=f"FH{s:03d}{f:02d}")
            for d in range(dts):
                dt = f"DT-{s:03d}{f:02d}{d:02d}"
                all_dts.append(dt)
                yield change("dt", dt, fdr, rating_kva=100, dt_meter=f"DM{s:03d}{f:02d}{d:02d}")
    for i in range(consumers):
        yield change("consumer", f"C-{i:08d}", all_dts[i % len(all_dts)], meter=f"M{i:08d}",
                     consumer_no=f"{i:010d}", category="domestic", circle="LKO-1", division="LKO-1-2",
                     subdivision="LKO-1-2-3")


def snapshot_rows(consumers: int) -> Iterator[tuple]:
    """The same network as snapshot CSV rows (the baseline's input)."""
    substations, feeders, dts = shape(consumers)
    per = substations * feeders * dts
    for i in range(consumers):
        d = i % per
        s, f, k = d // (feeders * dts), (d // dts) % feeders, d % dts
        yield (f"C-{i:08d}", f"{i:010d}", f"M{i:08d}", "domestic", "LKO-1", "LKO-1-2", "LKO-1-2-3",
               f"DT-{s:03d}{f:02d}{k:02d}", "100", f"DM{s:03d}{f:02d}{k:02d}", f"FDR-{s:03d}{f:02d}", "11",
               f"FH{s:03d}{f:02d}", f"SS-{s:03d}")


def baseline(path: Path, consumers: int) -> float:
    """The snapshot rows with plain executemany into a bare table (no index but the rowid), one commit."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE snapshot ({', '.join(SNAPSHOT_COLUMNS)})")
    start = time.perf_counter()
    cpu = time.process_time()
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO snapshot VALUES ({', '.join('?' * len(SNAPSHOT_COLUMNS))})",
                   snapshot_rows(consumers))
    db.execute("COMMIT")
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    db.close()
    return elapsed, cpu_s


def bench_network(consumers: int = 1_000_000, lookups: int = 10_000, workdir: Path | None = None) -> dict:
    work = Path(workdir or tempfile.mkdtemp(prefix="gridbus-bench-network-"))
    work.mkdir(parents=True, exist_ok=True)
    store = open_store(work / "network.sqlite")
    start, cpu = time.perf_counter(), time.process_time()
    result = store.apply(creates(consumers), document_id="bench")
    import_s, import_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    meters = [f"M{i:08d}" for i in random.Random(1).sample(range(consumers), min(lookups, consumers))]
    store.dts_of(meters[:10])  # warm the connection, not the pages
    start = time.perf_counter()
    found = store.dts_of(meters)
    lookup_s = time.perf_counter() - start
    start = time.perf_counter()
    store.dts_of(meters)
    lookup_warm_s = time.perf_counter() - start
    baseline_s, baseline_cpu_s = baseline(work / "baseline.sqlite", consumers)
    load = os.getloadavg()[0]
    counts = store.counts()
    size_mb = sum(p.stat().st_size for p in work.glob("network.sqlite*")) / 1e6
    if workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return {"consumers": consumers, "elements": counts, "applied": result.count("applied"),
            "refused": len(result.refused), "updates": result.updates, "import_s": round(import_s, 2),
            "import_cpu_s": round(import_cpu_s, 2), "baseline_cpu_s": round(baseline_cpu_s, 2), "load_average": load,
            "import_per_s": round(sum(counts.values()) / import_s), "baseline_executemany_s": round(baseline_s, 2),
            "lookups": len(meters), "found": len(found), "dts_of_s": round(lookup_s, 4),
            "dts_of_warm_s": round(lookup_warm_s, 4), "store_mb": round(size_mb, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, help="Keep the stores here (default: a temporary folder, removed).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = bench_network(args.consumers, args.lookups, args.dir)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    total = sum(out["elements"].values())
    print(f"import of {total:,} creates ({out['consumers']:,} consumers): {out['import_s']:.1f} s "
          f"({out['import_cpu_s']:.1f} s CPU) "
          f"({out['import_per_s']:,}/s), {out['updates']:,} consumer-path updates, store {out['store_mb']} MB")
    print(f"baseline, executemany of {out['consumers']:,} snapshot rows into a bare SQLite table: "
          f"{out['baseline_executemany_s']:.1f} s ({out['baseline_cpu_s']:.1f} s CPU); load average "
          f"{out['load_average']:.1f} on {os.cpu_count()} cores")
    print(f"dts_of {out['lookups']:,} meters: {out['dts_of_s'] * 1000:.0f} ms cold, "
          f"{out['dts_of_warm_s'] * 1000:.0f} ms warm ({out['found']:,} found)")


if __name__ == "__main__":
    main()
