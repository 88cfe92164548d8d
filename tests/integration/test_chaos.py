"""Fault tests on a three-node cluster, each ending with counts in Jepsen's terms.

Each scenario runs `gridbus bench chaos`'s own code (gridbus_dev.bench.chaos) with a smaller load:
a file ingest, an alarm burst from an HES that retries what was not accepted, and on-demand reads
through the gateway, while a node is killed with kill -9 (the leader of the busiest quorum
queues), every node is restarted in turn, or the disk alarm trips on every node.  Real processes
and stand-ins; every reading and alarm is counted at its destination and every read's answer is
checked against the HES's value for that meter.  The long soaks (2,000,000 rows, 50,000 alarms,
100 reads/s) are `gridbus bench chaos`'s defaults (docs/benchmarks.md).
"""
from __future__ import annotations

import json

import pytest

from gridbus_dev.bench.chaos import Load, run_scenario
from tests.cluster import rabbit_cluster  # noqa: F401

pytestmark = pytest.mark.slow

LOAD = dict(rows=100_000, alarms=5_000, read_rate=20.0, read_seconds=15.0, fault_after_s=20.0,
            fault_at_share=0.2, down_s=8.0, alarm_s=8.0, timeout_s=300.0)


def _report(result) -> str:
    return json.dumps(result.summary(), indent=1)


@pytest.mark.parametrize("scenario", ["node-kill", "rolling-restart", "disk-alarm"])
def test_under_load_a_cluster_fault_loses_nothing_and_answers_no_read_wrongly(rabbit_cluster, tmp_path,  # noqa: F811
                                                                              scenario):
    # Given the bus on three nodes taking a file, an alarm burst and on-demand reads
    # When the fault strikes mid-ingest
    result = run_scenario(scenario, rabbit_cluster, tmp_path, Load(**LOAD), echo=print)
    print(_report(result))
    # Then every reading and every alarm is at its destination, none that was never sent
    assert result.readings.stored == result.readings.sent, _report(result)
    assert result.lost == 0 and result.unexpected == 0, _report(result)
    for system, counts in result.alarms.items():
        assert counts.stored == counts.sent, (system, _report(result))
    # And every read was answered: right, or failed with a reason; none hung, none with another's data
    reads = result.reads
    assert reads.hung == 0 and reads.wrong == 0, _report(result)
    assert reads.ok + reads.failed == reads.sent, _report(result)
    assert reads.ok > 0, _report(result)
    # And the cluster is whole again: every quorum queue has all its members online
    assert result.queues_not_whole == [], _report(result)
