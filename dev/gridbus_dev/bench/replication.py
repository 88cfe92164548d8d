"""`gridbus bench replication`: what replicating every quorum queue on three nodes costs.

`bench ingest` and `bench alarms` (gridbus only, no baseline) run on a one-node cluster and then on
a three-node cluster, both started here alike (gridbus_dev.cluster: same configuration, same
machine), in one invocation, so the ratio is measured side by side.  On one machine the three
nodes also share its cores, so the ratio is a bound on the cost, not the cost on three hosts.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ReplicationRun:
    nodes: int
    bench: str
    rate: float       # reads/s or alarms/s
    seconds: float


@contextmanager
def _pointed_at(cluster):
    """The benches read the broker from the settings: point them at ``cluster`` for a while."""
    keys = ("GRIDBUS_BROKER_URL", "GRIDBUS_MANAGEMENT_URL")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["GRIDBUS_BROKER_URL"] = cluster.broker_url("/")
    os.environ["GRIDBUS_MANAGEMENT_URL"] = f"http://guest:guest@127.0.0.1:{cluster.nodes[0].management_port}"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_replication(reads: int, alarms: int, rounds: int, work: Path, echo=print) -> list[ReplicationRun]:
    from gridbus_dev.bench.alarms import bench_alarms
    from gridbus_dev.bench.ingest import bench_ingest
    from gridbus_dev.bench.chaos import free_cluster_ports
    from gridbus_dev.cluster import start_cluster

    runs: list[ReplicationRun] = []
    for round_ in range(rounds):
        for nodes in (1, 3):
            echo(f"round {round_ + 1}: starting a {nodes}-node cluster ...")
            cluster = start_cluster(work / f"cluster-{nodes}-{round_}", nodes, *free_cluster_ports(nodes),
                                    prefix="gridbus-replication")
            try:
                with _pointed_at(cluster):
                    if reads:
                        [run] = bench_ingest(reads, 1000, 2, Path(tempfile.mkdtemp(dir=work)), False,
                                             echo=echo)
                        runs.append(ReplicationRun(nodes, "ingest (reads/s)", run.reads_per_s, run.seconds))
                        echo(f"{nodes} node(s): ingest {run.reads_per_s:,.0f} reads/s")
                    if alarms:
                        [run] = bench_alarms(alarms, "rest", Path(tempfile.mkdtemp(dir=work)), False, echo=echo)
                        runs.append(ReplicationRun(nodes, "alarms via REST (alarms/s)", run.alarms_per_s,
                                                   run.seconds))
                        echo(f"{nodes} node(s): alarms {run.alarms_per_s:,.0f} alarms/s")
            finally:
                cluster.stop_all()
    return runs


def ratios(runs: list[ReplicationRun]) -> dict[str, float]:
    """Per bench: mean rate on three nodes / mean rate on one."""
    out = {}
    for bench in dict.fromkeys(r.bench for r in runs):
        by = {n: [r.rate for r in runs if r.bench == bench and r.nodes == n] for n in (1, 3)}
        if by[1] and by[3]:
            out[bench] = (sum(by[3]) / len(by[3])) / (sum(by[1]) / len(by[1]))
    return out
