"""The RabbitMQ cluster of `gridbus dev up --nodes N` (N > 1): start, stop and show it.

Its nodes live in ``$GRIDBUS_HOME/rabbitmq-cluster/node-<i>`` and listen on ports of their own
(``cluster.dev_ports``), apart from the single dev node's (5679/15679/25679), so `dev down`
stops whichever of the two a home holds.  One node stays the default: the cluster costs three
Erlang VMs and about half a minute to form.
"""
from __future__ import annotations

from pathlib import Path

import click

from gridbus_dev import cluster

MAX_NODES = 5
DEV_NODES_VAR = "GRIDBUS_DEV_NODES"  # in dev.env: how many nodes `dev up` started


def cluster_base(home: Path) -> Path:
    return home / "rabbitmq-cluster"


def dev_ports(n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """AMQP, management and distribution ports of the dev cluster's ``n`` nodes: 5691.., 15691..,
    25691.. (the single dev node has 5679, 15679 and 25679)."""
    return (tuple(5690 + i for i in range(1, n + 1)), tuple(15690 + i for i in range(1, n + 1)),
            tuple(25690 + i for i in range(1, n + 1)))


def settings(home: Path, n: int) -> dict[str, str]:
    """What every gridbus process of a stack on the ``n``-node cluster reads (for dev.env)."""
    c = cluster.attach(cluster_base(home), n, *dev_ports(n))
    return {"GRIDBUS_BROKER_URL": c.broker_url("/"),
            # any node's management API answers for the whole cluster: all are named, the first that
            # answers is asked (BrokerAdmin), so `routes plan` and `dlq` work with node 1 down
            "GRIDBUS_MANAGEMENT_URL": ";".join(n.management_url for n in c.nodes),
            DEV_NODES_VAR: str(n)}


def start(home: Path, n: int) -> cluster.Cluster:
    """Start (or find running) the dev cluster, once ``cluster_status`` shows all ``n`` nodes."""
    return cluster.start_cluster(cluster_base(home), n, *dev_ports(n), log=click.echo)


def spread_leaders(c: cluster.Cluster) -> None:
    """After the routes are applied: their queues' leaders over all nodes (all on node 1 else)."""
    c.rebalance()
    leaders = {q.leader for q in c.queue_members("/")}
    click.echo(f"rabbitmq   quorum queue leaders spread over {len(leaders - {None})} of {len(c.nodes)} nodes "
               "(rabbitmq-queues rebalance quorum)")


def existing(home: Path) -> cluster.Cluster | None:
    """The cluster an earlier `dev up --nodes N` left in ``home`` (running or not)."""
    base = cluster_base(home)
    n = len(list(base.glob("node-*"))) if base.is_dir() else 0
    return cluster.attach(base, n, *dev_ports(n)) if n else None


def stop(home: Path) -> None:
    c = existing(home)
    if c is None:
        return
    c.stop_all()
    for node in c.nodes:
        click.echo(f"rabbitmq   {node.name} stopped")


def status(home: Path) -> None:
    """Each node (ports, running or not, alarms), then each gridbus queue: depth, leader, members."""
    c = existing(home)
    if c is None:
        click.echo("rabbitmq   no cluster in " + str(cluster_base(home)))
        return
    states = c.node_states()
    for state in states:
        node = state.node
        alarms = f"  ALARM {', '.join(state.alarms)}" if state.alarms else ""
        click.echo(f"{node.name:24} {'running' if state.running else 'NOT RUNNING':11} amqp {node.amqp_port}  "
                   f"management {node.management_port}  dist {node.dist_port}  log {node.log_file}{alarms}")
    if not any(s.running for s in states):
        return
    depth = {q["name"]: q.get("messages", 0) for q in c.queues("/")}
    members = c.queue_members("/")
    # Celery's 28 delay levels in one line: alike, and only worth a look when one lost a member
    delays = [q for q in members if q.name.startswith("celery_delayed_")]
    for q in [q for q in members if q not in delays]:
        offline = f"  OFFLINE {', '.join(q.offline)}" if q.offline else ""
        click.echo(f"  {q.name:50} {depth.get(q.name, 0):>8} messages  leader {q.leader}  "
                   f"members {len(q.members)}/{len(c.nodes)}{offline}")
    if delays:
        offline = sorted({m for q in delays for m in q.offline})
        click.echo(f"  {'celery_delayed_0..27':50} {sum(depth.get(q.name, 0) for q in delays):>8} messages  "
                   f"{len(delays)} queues" + (f"  OFFLINE {', '.join(offline)} in "
                                                f"{sum(1 for q in delays if q.offline)} of them" if offline else
                                                "  all members online"))
