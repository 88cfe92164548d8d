"""The dev cluster's plan, without starting a node: names, ports apart from everything else the
dev stack and the single node use, the `;`-separated broker URL, and `dev up --nodes`."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from bus.errors import GridbusError
from bus.messaging.addresses import broker_addresses
from bus.settings import DEV_AMQP_PORT, DEV_MANAGEMENT_PORT
from gridbus_dev import cluster, devstack
from gridbus_dev.cli import dev_cluster
from gridbus_dev.cli.dev import dev


def test_three_dev_nodes_have_names_and_ports_of_their_own(tmp_path):
    # Given the dev cluster of three nodes
    c = cluster.attach(tmp_path / "rabbitmq-cluster", 3, *dev_cluster.dev_ports(3))
    # Then each node has its own name, folder and ports, and nodes 2 and 3 join node 1
    assert [n.name for n in c.nodes] == [f"gridbus-dev-{i}@localhost" for i in (1, 2, 3)]
    assert len({n.base for n in c.nodes}) == 3
    ports = [p for n in c.nodes for p in (n.amqp_port, n.management_port, n.dist_port)]
    assert len(set(ports)) == 9
    assert [n.seed for n in c.nodes] == [None, "gridbus-dev-1@localhost", "gridbus-dev-1@localhost"]
    # and none is a port of the single dev node or of the stack's other processes
    others = {DEV_AMQP_PORT, DEV_MANAGEMENT_PORT, devstack.DEV_DIST_PORT, devstack.GATEWAY_PORT,
              devstack.METRICS_PORT, *(port for _n, _m, port, _v in devstack.STAND_INS)}
    assert not set(ports) & others
    # and looking at a cluster never started writes nothing (dev status, dev down)
    assert not (tmp_path / "rabbitmq-cluster").exists() and not any(n.pid for n in c.nodes)


def test_dev_env_gets_every_node_in_one_broker_setting(tmp_path):
    # Given `dev up --nodes 3`'s settings  When the broker URL is read as every gridbus process reads it
    values = dev_cluster.settings(tmp_path, 3)
    addresses = broker_addresses(values["GRIDBUS_BROKER_URL"])
    # Then it names the three nodes on loopback, vhost /, in node order
    assert [(a.host, a.port, a.virtual_host) for a in addresses] == [("127.0.0.1", p, "/") for p in (5691, 5692, 5693)]
    # and every node's management API, the first that answers asked (node 1 down: node 2's)
    assert [u.rsplit(":", 1)[1] for u in values["GRIDBUS_MANAGEMENT_URL"].split(";")] == ["15691", "15692", "15693"]
    assert values[dev_cluster.DEV_NODES_VAR] == "3"


def test_a_vhost_and_user_are_quoted_into_every_address(tmp_path):
    c = cluster.attach(tmp_path, 2, (1, 2), (3, 4), (5, 6), prefix="t")
    url = c.broker_url("a/b", "adms", "p@ss;word")
    assert url == "amqp://adms:p%40ss%3Bword@127.0.0.1:1/a%2Fb;amqp://adms:p%40ss%3Bword@127.0.0.1:2/a%2Fb"
    assert [a.virtual_host for a in broker_addresses(url)] == ["a/b", "a/b"]


def test_a_cluster_needs_as_many_ports_as_nodes(tmp_path):
    with pytest.raises(GridbusError, match="needs 4"):
        cluster.plan_nodes(tmp_path, 4, *dev_cluster.dev_ports(3))


def test_offline_members_are_the_members_not_online():
    q = cluster.QueueMembers("gridbus.route.x", "a@h", ("a@h", "b@h", "c@h"), ("a@h", "c@h"))
    assert q.offline == ("b@h",)


@pytest.mark.parametrize("nodes", ["0", str(dev_cluster.MAX_NODES + 1), "three"])
def test_dev_up_refuses_a_node_count_out_of_range_before_starting_anything(nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    result = CliRunner().invoke(dev, ["up", "--nodes", nodes])
    assert result.exit_code == 2 and "--nodes" in result.output
    assert not (tmp_path / "dev.env").exists()
