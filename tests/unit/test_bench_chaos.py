"""The chaos bench's arithmetic: recovery time, the busiest leader, the 3-node/1-node ratio."""
from __future__ import annotations

from types import SimpleNamespace

from gridbus_dev.bench.chaos import ChaosResult, Counts, _recovery, busiest_leader
from gridbus_dev.bench.ingest import _vhost_url
from gridbus_dev.bench.replication import ReplicationRun, ratios


def test_recovery_is_the_first_two_second_window_back_at_80_percent_of_the_rate_before_the_fault():
    # Given 1,000 readings/s for 10 s, nothing for 6 s after the fault at t=10, then 900/s again
    samples, n = [], 0
    for i in range(0, 60):
        t = i * 0.5
        rate = 1000 if t <= 10 else (0 if t <= 16 else 900)  # per half second ending at t
        if i:
            n += int(rate * 0.5)
        samples.append((t, n))
    # When the recovery is computed
    before, recovery = _recovery(samples, fault_at=10.0)
    # Then the rate before is 1,000/s and throughput is back 6 s after the fault
    assert before == 1000
    assert recovery == 6.0


def test_no_recovery_when_throughput_never_comes_back():
    samples = [(i * 0.5, min(i, 20) * 500) for i in range(60)]
    assert _recovery(samples, fault_at=10.0)[1] is None


def test_the_node_to_kill_leads_the_queues_holding_the_most_messages():
    # Given four quorum queues led by three nodes, node 2's holding the most messages
    q = [SimpleNamespace(name=n, leader=leader) for n, leader in
         (("a", "n1@localhost"), ("b", "n2@localhost"), ("c", "n3@localhost"), ("d", "n3@localhost"))]
    messages = {"a": 10, "b": 5000, "c": 100, "d": 200}
    # Then node 2 (1-based, as the cluster numbers them) is the one to kill
    assert busiest_leader(q, messages, ["n1@localhost", "n2@localhost", "n3@localhost"]) == 2


def test_the_totals_add_every_destination():
    r = ChaosResult("node-kill", 3, readings=Counts(sent=10, stored=9, lost=1, redelivered=4),
                    alarms={"wfm": Counts(sent=5, stored=5, redelivered=2, unexpected=1)})
    r.reads.wrong = 1
    assert (r.lost, r.unexpected, r.redelivered) == (1, 2, 6)
    assert r.summary()["lost"] == 1


def test_replication_ratio_uses_the_mean_of_each_side():
    runs = [ReplicationRun(1, "ingest", 100.0, 1), ReplicationRun(3, "ingest", 60.0, 1),
            ReplicationRun(1, "ingest", 100.0, 1), ReplicationRun(3, "ingest", 80.0, 1)]
    assert ratios(runs) == {"ingest": 0.7}


def test_a_bench_vhost_goes_on_every_address_of_a_cluster():
    url = "amqp://g:p@127.0.0.1:1//;amqp://g:p@127.0.0.1:2//"
    assert _vhost_url(url, "b") == "amqp://g:p@127.0.0.1:1/b;amqp://g:p@127.0.0.1:2/b"
