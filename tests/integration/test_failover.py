"""Every gridbus process goes on after the broker node it was connected to is killed (kill -9).

The processes read the three addresses of a cluster (``;``-separated) and connect to the
first that answers, node 1.  Node 1 is killed while files are being ingested, alarms
pushed and on-demand reads asked; each process must move to a surviving node, publish
again what the dead node had not confirmed, and go on.  Counted at the destinations:
every reading at MDMS-1 once, every alarm at MDMS-1 and the ADMS, every dead letter in
the keeper's store; every read answered with its own meter's reading or refused with a
clear error (503 or 504), none hanging.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from bus.broker_admin import BrokerAdmin
from bus.deadletters.store import DeadLetterStore
from tests.cluster import rabbit_cluster  # noqa: F401  (fixture)
from tests.integration.fault_stack import FaultStack, alarm
from tests.support import run_cli, wait_for

pytestmark = pytest.mark.broker
PROCESSES = ("gateway", "worker", "requests", "ingress", "keeper", "recorder")


@pytest.fixture(scope="module")
def stack(rabbit_cluster, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("failover")
    vhost = f"f-{uuid.uuid4().hex[:8]}"
    # the management API of node 3, which is never killed here
    management = rabbit_cluster.node(3).management_url
    BrokerAdmin(management).create_vhost(vhost)
    (tmp / "home").mkdir()
    env = {**os.environ, "GRIDBUS_BROKER_URL": rabbit_cluster.broker_url(vhost), "GRIDBUS_HOME": str(tmp / "home"),
           "GRIDBUS_ENV_FILE": str(tmp / "none.env"), "PYTHONUNBUFFERED": "1"}
    bus = FaultStack(env, tmp, management, vhost)
    try:
        yield bus.start(*PROCESSES)
    finally:
        bus.stop()


def _connections_by_node(management: str, vhost: str) -> dict[str, set[str]]:
    url = management.replace("guest:guest@", "")
    rows = requests.get(f"{url}/api/connections", auth=("guest", "guest"), timeout=10,
                        params={"columns": "node,vhost,client_properties"}).json()
    nodes: dict[str, set[str]] = {}
    for row in rows:
        if row.get("vhost") == vhost:
            name = (row.get("client_properties") or {}).get("connection_name", "?")
            nodes.setdefault(row["node"], set()).add(name)
    return nodes


def _dead_letters(stack: FaultStack) -> int:
    path = Path(stack.env["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite"
    if not path.exists():
        return 0
    store = DeadLetterStore(path)
    try:
        return sum(g["count"] for g in store.summary())
    finally:
        store.close()


def _traced_after(stack: FaultStack, at: float) -> int:
    from bus.tracing.store import open_store

    path = Path(stack.env["GRIDBUS_HOME"]) / "state" / "trace.sqlite"
    if not path.exists():
        return 0
    return len(open_store(path).after(at))


def test_every_process_goes_on_after_its_node_is_killed_and_nothing_is_lost(stack, rabbit_cluster):  # noqa: F811
    node_1 = rabbit_cluster.node(1).name
    management = rabbit_cluster.node(3).management_url
    vhost = stack.admin.vhost
    # Given every process connected through the three addresses, to node 1, the first that answers
    before = _connections_by_node(management, vhost)
    assert before.get(node_1), before
    # and the FMS refusing every alarm (400), so that fraud alarms become dead letters for the keeper
    stack.systems["fms"].control(mode="error", status=400)
    # and three block-load files dropped into the inbox
    files = [stack.generate("--profile", "block-load", "--rows", "30000", "--first-serial", str(5000 + 1000 * i),
                            seed=10 + i) for i in range(3)]
    for summary in files:
        stack.drop(Path(summary["path"]))
    # and HES-A pushing bursts of last gasps and frauds all along, sending again what is refused
    pushed, tries, stop = [], [], threading.Event()

    def hes_a() -> None:
        burst = 0
        while not stop.is_set() and burst < 40:
            body = [alarm(burst * 10 + n, 101) for n in range(10)] + [alarm(burst * 10 + n, 201) for n in range(10)]
            tries.append(stack.push_until_accepted(body, within_s=90))
            pushed.append(burst)
            burst += 1

    # and MDMS-1 asking for on-demand reads one after another, each of one meter
    reads: list[tuple[int, int, str]] = []  # (meter, status, body)

    def mdms_1() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            meter = n % 200 + 1
            try:
                answer = stack.read(meter)
                reads.append((meter, answer.status_code, answer.text))
            except requests.RequestException as exc:  # a hang (30 s) or a dropped connection
                reads.append((meter, 0, repr(exc)))

    pusher, reader = threading.Thread(target=hes_a, daemon=True), threading.Thread(target=mdms_1, daemon=True)
    pusher.start()
    reader.start()
    # When node 1 is killed with kill -9 once the ingress is under way (the first readings arrived)
    wait_for(lambda: stack.mdms.stats()["readings"] > 0, 60, f"the first readings ({stack.log_tails()})")
    wait_for(lambda: len(pushed) >= 3 and len(reads) >= 3, 30, "the first bursts accepted and reads answered")
    rabbit_cluster.kill(1)
    killed_at, killed_at_read = time.time(), len(reads)
    try:
        # Then every file is reported and MDMS-1 holds every one of their readings, once
        names = {Path(s["path"]).name for s in files}
        wait_for(lambda: names <= {r["file"] for r in stack.reports()}, 150,
                 f"the three files' reports ({stack.log_tails()})")
        expected = sum(s["expected_readings"] for s in files)
        wait_for(lambda: stack.mdms.stats()["readings"] >= expected, 90, "every reading at MDMS-1")
        assert stack.mdms.stats()["readings"] == expected
        assert stack.rejected() == []
        # and every burst pushed was accepted, in the end (refused ones sent again), and has arrived:
        # each last gasp at MDMS-1 and the ADMS, each burst's frauds as a dead letter in the keeper's store
        wait_for(lambda: len(reads) >= killed_at_read + 20, 60, "20 more reads after the kill")
        stop.set()
        pusher.join(120)
        reader.join(60)
        assert not pusher.is_alive() and not reader.is_alive()
        # every read was answered with its own meter's reading, or refused with a clear error; none hung
        for meter, status, body in reads:
            assert status in (200, 503, 504), (meter, status, body[:300])
            if status == 200:
                assert json.loads(body)["Reply"]["Result"] == "OK" and f"UPM{meter:08d}" in body, body[:300]
        # and reads are answered again after the kill: the last ten all OK
        assert all(status == 200 for _, status, _ in reads[-10:]), reads[-10:]
        gasps = 10 * len(pushed)
        wait_for(lambda: stack.mdms.stats()["events"] >= gasps, 90, f"{gasps} last gasps at MDMS-1")
        wait_for(lambda: stack.systems["adms"].stats()["events"] >= gasps, 90, f"{gasps} last gasps at the ADMS")
        assert stack.mdms.stats()["events"] == gasps
        wait_for(lambda: _dead_letters(stack) >= len(pushed), 90,
                 f"{len(pushed)} dead letters in the keeper's store ({stack.log_tails()})")
        # and the command line works on the surviving nodes (dlq list collects the queues first, over AMQP)
        listed = run_cli(stack.env, "dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert sum(r["count"] for r in json.loads(listed.stdout)) >= len(pushed)
        # and every process is still running, now connected to the surviving nodes
        assert all(p.popen.poll() is None for p in stack.procs.values()), stack.log_tails()
        after = _connections_by_node(management, vhost)
        assert node_1 not in after and after, after
        # and the recorder goes on: trace events of what happened after the kill are in its store.
        # OPEN REGRESSION since the service-users merge (35d0b9a; c3ace3b before it passes): no trace
        # event is stored from ~3 s after the kill on, though the recorder has reconnected and every
        # other check above holds.  Checked last and reported as an expected failure, so the
        # assertions on what is lost keep running; once it passes again, remove the try.
        try:
            wait_for(lambda: _traced_after(stack, killed_at + 5), 60, "trace events after the kill")
        except AssertionError:
            pytest.xfail("open regression since 35d0b9a: no trace event stored after a node kill (docs/testing.md)")
    finally:
        stop.set()  # node 1 stays down: the module's cluster is killed at its end (a test added
        # here that needs three nodes starts it again with rabbit_cluster.start(1), about 10 s)
