"""Benchmark of the network store (issue 18): a document of creates and a snapshot CSV into empty
stores, a 1 % changed snapshot diffed and applied, ``dts_of`` for a batch of meters, beside the
issue's baseline (the same rows loaded with a plain ``executemany`` into a bare SQLite table) in
the same run.  ``gridbus bench network`` prints it as a table.

    python -m gridbus_dev.bench.network [--consumers 1000000] [--lookups 10000] [--dir DIR] [--json]

The change document's network is regular (``creates``): 50 substations, 10 feeders each, 20 DTs
per feeder, consumers spread evenly over the DTs.  The snapshots are the generated network's
(dev/simulators/network.py: DTs of 20-200 consumers) and its 1 % drift, whose ground truth the
diff is counted against.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
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


def _timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, round(time.perf_counter() - start, 2), round(time.process_time() - cpu, 2)


def bench_network(consumers: int = 1_000_000, lookups: int = 10_000, workdir: Path | None = None,
                  say=lambda message: None, delivery: bool | dict = False) -> dict:
    """The issue-18 benchmark in one run: (1) the regular network's creates as one change document
    into an empty store; (2) the generated network's snapshot CSV into another empty store (the
    file-drop import: diff, then the bulk path); (3) the baseline, the same snapshot rows by plain
    executemany into a bare table; (4) a snapshot with 1 % of the consumers changed: diff alone,
    and diff and apply; (5) dts_of for a batch of meters."""
    from bus.network.snapshot import diff_snapshot
    from bus.network.snapshot_apply import import_snapshot
    from simulators.network import NetworkModel

    work = Path(workdir or tempfile.mkdtemp(prefix="gridbus-bench-network-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"consumers": consumers}
    say(f"document of creates ({consumers:,} consumers) into an empty store")
    store = open_store(work / "document.sqlite")
    result, out["import_s"], out["import_cpu_s"] = _timed(lambda: store.apply(creates(consumers), document_id="bench"))
    out.update(elements=store.counts(), applied=result.count("applied"), refused=len(result.refused),
               updates=result.updates)
    out["import_per_s"] = round(sum(out["elements"].values()) / out["import_s"])
    out["store_mb"] = round(sum(p.stat().st_size for p in work.glob("document.sqlite*")) / 1e6, 1)
    del result, store

    model = NetworkModel.generate(consumers, seed=1)
    model.write_snapshot(work / "day-1.csv")
    say(f"snapshot import of {consumers:,} consumers ({model.dts:,} DTs, {model.feeders:,} feeders, "
        f"{model.substations:,} substations) into an empty store")
    snap = open_store(work / "snapshot.sqlite")
    first, out["snapshot_import_s"], out["snapshot_import_cpu_s"] = _timed(
        lambda: import_snapshot(snap, work / "day-1.csv", time.time()))
    out.update(snapshot_status=first.status, snapshot_elements=snap.counts(),
               snapshot_refused=len(first.result.refused) if first.result else 0,
               snapshot_wal_mb=round((work / "snapshot.sqlite-wal").stat().st_size / 1e6, 1)
               if (work / "snapshot.sqlite-wal").exists() else 0.0)
    del first

    say("baseline: executemany of the same snapshot rows into a bare table")
    out["baseline_executemany_s"], out["baseline_cpu_s"] = baseline(work / "baseline.sqlite", consumers)

    drifted = model.copy()
    truth = drifted.drift(0.01)
    drifted.write_snapshot(work / "day-2.csv")
    say(f"a snapshot with 1 % changed ({len(truth):,} consumers): diff, then diff and apply")
    at = time.time() + 1

    def diff_only():
        with diff_snapshot(snap, work / "day-2.csv", at) as diff:
            return sum(1 for _ in diff.changes())
    out["drift_changes_emitted"], out["drift_diff_s"], out["drift_diff_cpu_s"] = _timed(diff_only)
    second, out["drift_apply_s"], out["drift_apply_cpu_s"] = _timed(
        lambda: import_snapshot(snap, work / "day-2.csv", at))
    out.update(drift_truth=len(truth), drift_applied=second.result.count("applied") if second.result else 0,
               drift_updates=second.result.updates if second.result else 0)

    meters = [model.meter_of(c) for c in random.Random(1).sample(range(consumers), min(lookups, consumers))]
    snap.dts_of(meters[:10])  # warm the connection, not the pages
    found, out["dts_of_s"], _ = _timed(lambda: snap.dts_of(meters))
    _, out["dts_of_warm_s"], _ = _timed(lambda: snap.dts_of(meters))
    out.update(lookups=len(meters), found=len(found), load_average=os.getloadavg()[0], cores=os.cpu_count())
    if delivery:  # (6) the delivery leg, on the document's store: bench/network_delivery.py
        from gridbus_dev.bench.network_delivery import bench_delivery
        out["delivery"] = bench_delivery(work / "delivery", store_path=work / "document.sqlite", say=say,
                                         **(delivery if isinstance(delivery, dict) else {}))
    if workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return out


def table_rows(out: dict) -> list[list[str]]:
    """The run as rows of (measure, value) for a table."""
    n = out["consumers"]
    total = sum(out["elements"].values())
    return [
        ["change document of creates into an empty store",
         f"{out['import_s']:.1f} s ({out['import_cpu_s']:.1f} s CPU), {total:,} elements, "
         f"{out['import_per_s']:,}/s, store {out['store_mb']} MB"],
        [f"snapshot CSV import of {n:,} consumers into an empty store (diff + apply)",
         f"{out['snapshot_import_s']:.1f} s ({out['snapshot_import_cpu_s']:.1f} s CPU), {out['snapshot_status']}, "
         f"{out['snapshot_refused']} refused, WAL after {out['snapshot_wal_mb']} MB"],
        [f"baseline: executemany of {n:,} snapshot rows into a bare table",
         f"{out['baseline_executemany_s']:.1f} s ({out['baseline_cpu_s']:.1f} s CPU)"],
        ["1 % changed snapshot: diff and emit",
         f"{out['drift_diff_s']:.1f} s ({out['drift_diff_cpu_s']:.1f} s CPU), {out['drift_changes_emitted']:,} changes "
         f"(ground truth {out['drift_truth']:,})"],
        ["1 % changed snapshot: diff and apply",
         f"{out['drift_apply_s']:.1f} s ({out['drift_apply_cpu_s']:.1f} s CPU), {out['drift_applied']:,} applied, "
         f"{out['drift_updates']:,} consumer-path updates"],
        [f"dts_of {out['lookups']:,} meters, cold / warm",
         f"{out['dts_of_s'] * 1000:.0f} / {out['dts_of_warm_s'] * 1000:.0f} ms ({out['found']:,} found)"],
        ["load average (1 min) at the end", f"{out['load_average']:.1f} on {out['cores']} cores"],
    ] + (delivery_rows(out["delivery"]) if "delivery" in out else [])


def delivery_rows(delivery: dict) -> list[list[str]]:
    from gridbus_dev.bench.network_delivery import table_rows as rows
    return rows(delivery)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, help="Keep the stores here (default: a temporary folder, removed).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = bench_network(args.consumers, args.lookups, args.dir, say=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for measure, value in table_rows(out):
        print(f"{measure}: {value}")

if __name__ == "__main__":
    main()
