"""A three-node RabbitMQ cluster on this machine (tests/cluster.py, gridbus_dev.cluster): it forms,
the routes' quorum queues are replicated on its nodes (all, or GRIDBUS_QUORUM_REPLICAS), a node
killed with kill -9 comes back and its queues get their member back, and `gridbus dev up --nodes
3` shows nodes and leaders.  One cluster for the module: forming one takes about half a minute."""
from __future__ import annotations

import os
import uuid

import pytest

from bus.broker_admin import BrokerAdmin
from gridbus_dev import devstack
from gridbus_dev.cli import dev_cluster
from tests.cluster import kill_leftovers, rabbit_cluster  # noqa: F401  (fixture)
from tests.support import ROOT, ROUTE_ENV, run_cli, wait_for

pytestmark = pytest.mark.broker


def _env(cluster, vhost: str, tmp_path, fresh: bool = True, **extra) -> dict:
    """A gridbus process's environment on ``vhost`` of the cluster (made when ``fresh``): all
    three addresses."""
    home = tmp_path / f"home-{vhost}"
    home.mkdir(exist_ok=True)
    if fresh:
        BrokerAdmin(cluster.nodes[0].management_url).create_vhost(vhost)
    return {**os.environ, **ROUTE_ENV,
            "GRIDBUS_BROKER_URL": cluster.broker_url(vhost),
            "GRIDBUS_MANAGEMENT_URL": cluster.nodes[1].management_url,  # any node's API sees the cluster
            "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
            "GRIDBUS_ROUTES": str(ROOT / "routes"), **extra}


def _names(cluster) -> set[str]:
    return {n.name for n in cluster.nodes}


@pytest.fixture(scope="module")
def applied(rabbit_cluster, tmp_path_factory):  # noqa: F811
    """`gridbus routes apply` on a vhost of the cluster, through the `;`-separated URL."""
    vhost = f"c-{uuid.uuid4().hex[:8]}"
    done = run_cli(_env(rabbit_cluster, vhost, tmp_path_factory.mktemp("apply")), "routes", "apply")
    assert done.returncode == 0, done.stderr
    return vhost


def test_three_nodes_form_one_cluster_and_each_sees_all_three_running(rabbit_cluster):  # noqa: F811
    # Given the module's cluster  When each node is asked for its cluster status
    seen = [set(rabbit_cluster.running_nodes(node)) for node in rabbit_cluster.nodes]
    # Then every node sees all three running, and none has a resource alarm
    assert seen == [_names(rabbit_cluster)] * 3
    assert all(s.running and not s.alarms for s in rabbit_cluster.node_states())
    # and the broker URL names the three nodes, `;`-separated, as every gridbus process reads it
    assert rabbit_cluster.broker_url("v").count(";") == 2


def test_routes_apply_creates_quorum_queues_with_a_member_on_every_node(rabbit_cluster, applied):  # noqa: F811
    # Given the shipped routes applied through the three addresses
    queues = {q.name: q for q in rabbit_cluster.queue_members(applied)}
    # Then the route queues, dead-letter queues and the rest are quorum queues on all three nodes
    assert any(n.startswith("gridbus.route.") for n in queues) and any(n.startswith("gridbus.dlq.") for n in queues)
    for q in queues.values():
        assert set(q.members) == _names(rabbit_cluster), q
        assert q.leader in q.members and not q.offline


def test_with_quorum_replicas_2_each_queue_has_two_members(rabbit_cluster, tmp_path):  # noqa: F811
    # Given GRIDBUS_QUORUM_REPLICAS=2  When the routes are applied on a fresh vhost
    vhost = f"r2-{uuid.uuid4().hex[:8]}"
    done = run_cli(_env(rabbit_cluster, vhost, tmp_path, GRIDBUS_QUORUM_REPLICAS="2"), "routes", "apply")
    assert done.returncode == 0, done.stderr
    queues = rabbit_cluster.queue_members(vhost)
    # Then every queue of ours has two members, and Celery's delay levels (declared by kombu with
    # its own arguments) the broker's default, all three
    for q in queues:
        expected = 3 if q.name.startswith("celery_delayed_") else 2
        assert len(q.members) == expected and q.leader in q.members, q
    # and `routes plan` with the same setting finds the live queues as the routes want them
    plan = run_cli(_env(rabbit_cluster, vhost, tmp_path, GRIDBUS_QUORUM_REPLICAS="2", fresh=False), "routes", "plan")
    assert plan.returncode == 0 and "nothing to change" in plan.stdout, plan.stdout + plan.stderr
    # but a process without the setting would declare them otherwise: the plan says so, by argument
    plan = run_cli(_env(rabbit_cluster, vhost, tmp_path, fresh=False), "routes", "plan")
    assert plan.returncode != 0 and "x-quorum-initial-group-size: live 2 != routes None" in plan.stdout, plan.stdout


def test_a_memory_alarm_on_one_node_shows_and_clears(rabbit_cluster):  # noqa: F811
    # Given node 2 with a memory watermark it cannot meet
    rabbit_cluster.set_memory_alarm(2, True)
    try:
        # Then the cluster reports a memory alarm on node 2 only
        states = {s.node.index: s.alarms for s in rabbit_cluster.node_states()}
        assert states == {1: (), 2: ("memory",), 3: ()}
    finally:
        rabbit_cluster.set_memory_alarm(2, False)
    # When the watermark is back, Then the alarm clears
    wait_for(lambda: not any(s.alarms for s in rabbit_cluster.node_states()), 20, "the alarm to clear")


def test_a_node_killed_with_kill_9_rejoins_and_its_queue_members_come_back(rabbit_cluster, applied):  # noqa: F811
    # Given the applied routes, and the node that leads the most of their queues
    queues = rabbit_cluster.queue_members(applied)
    leaders = [q.leader for q in queues]
    victim = max(rabbit_cluster.nodes, key=lambda n: leaders.count(n.name))
    # When it is killed with kill -9
    rabbit_cluster.kill(victim.index)
    # Then every queue it led elects a leader on a surviving node, and lists it as offline
    def re_led():
        now = rabbit_cluster.queue_members(applied)
        return all(q.leader != victim.name and victim.name in q.offline for q in now) and now
    wait_for(re_led, 60, f"new leaders while {victim.name} is down")
    # When it is started again
    rabbit_cluster.start(victim.index)
    # Then it is running in the cluster, and every queue has its three members online again
    assert {s.node.name for s in rabbit_cluster.node_states() if s.running} == _names(rabbit_cluster)
    wait_for(lambda: all(not q.offline and len(q.members) == 3 for q in rabbit_cluster.queue_members(applied)),
             60, f"{victim.name}'s queue members back online")


DEV_STACK_PORTS = [*(p for ports in dev_cluster.dev_ports(3) for p in ports), devstack.GATEWAY_PORT,
                   devstack.METRICS_PORT, *(port for _n, _m, port, _v in devstack.STAND_INS)]


@pytest.mark.slow
def test_dev_up_with_three_nodes_shows_each_node_and_queue_leaders_and_dev_down_stops_them(tmp_path):
    # Given a fresh GRIDBUS_HOME, and the dev stack's fixed ports free (one dev stack per machine)
    taken = [p for p in DEV_STACK_PORTS if devstack.port_open(p)]
    if taken:
        pytest.skip(f"another dev stack holds ports {taken}: `gridbus dev up` has fixed ports")
    home = tmp_path / "gridbus-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBUS_", "RABBITMQ_"))}
    env.update(GRIDBUS_HOME=str(home), PYTHONUNBUFFERED="1")
    try:
        # When `gridbus dev up --nodes 3` runs
        up = run_cli(env, "dev", "up", "--nodes", "3", "-c", "1", timeout=300)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        # Then dev.env gives every process the three addresses
        dev_env_text = (home / "dev.env").read_text()
        assert "GRIDBUS_BROKER_URL=amqp://guest:guest@127.0.0.1:5691//;" in dev_env_text
        # and `dev status` shows three running nodes and each queue's leader and members
        status = run_cli(env, "dev", "status", timeout=120)
        assert status.returncode == 0, status.stderr
        nodes = [line for line in status.stdout.splitlines() if line.startswith("gridbus-dev-")]
        assert len(nodes) == 3 and all(" running " in line for line in nodes), status.stdout
        route_lines = [line for line in status.stdout.splitlines() if "gridbus.route." in line]
        assert route_lines and all("leader gridbus-dev-" in line and "members 3/3" in line
                                   for line in route_lines), status.stdout
        # and the leaders are spread over the nodes (dev up rebalances them), not all on node 1
        assert len({line.split("leader ")[1].split()[0] for line in route_lines}) > 1, status.stdout
    finally:
        # When `gridbus dev down` runs, Then the nodes stop (and nothing of them is left)
        down = run_cli(env, "dev", "down", timeout=180)
        leftovers = kill_leftovers(home / "rabbitmq-cluster")
    assert down.returncode == 0 and down.stdout.count("stopped") >= 3, down.stdout + down.stderr
    assert not leftovers
