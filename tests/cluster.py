"""A throw-away three-node RabbitMQ cluster for a test module (``gridbus_dev.cluster``).

Its nodes have names, ports and folders of their own (a temp dir), so they never meet the
session's pytest-rabbitmq node, a developer's dev stack or another run's cluster.  The module
shares one cluster (forming one takes about half a minute); it is killed at the end, failure or
not, and anything left of it (a beam whose ``-home`` is under its folder) is killed too.
Without Debian's RabbitMQ the tests are skipped, saying so.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from gridbus_dev import cluster as rabbit_cluster_module
from gridbus_dev import devstack

NODES = 3
def kill_leftovers(base: Path) -> list[int]:
    """SIGKILL every beam whose ``-home`` is a node folder under ``base`` (ours alone)."""
    killed = []
    marker = b"\x00-home\x00" + str(base).encode() + b"/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return killed


@pytest.fixture(scope="module")
def rabbit_cluster():
    """A formed three-node cluster (``gridbus_dev.cluster.Cluster``), one per test module."""
    if not (devstack.RABBIT_BIN / "rabbitmq-server").exists():
        pytest.skip(f"no RabbitMQ here ({devstack.RABBIT_BIN}/rabbitmq-server missing; `apt-get install "
                    "rabbitmq-server`): the cluster tests need three real nodes")
    base = Path(tempfile.mkdtemp(prefix="gridbus-cluster-"))
    ports = rabbit_cluster_module.free_ports(3 * NODES)
    started = None
    try:
        started = rabbit_cluster_module.start_cluster(
            base, NODES, tuple(ports[0:NODES]), tuple(ports[NODES:2 * NODES]), tuple(ports[2 * NODES:]),
            prefix=f"gridbus-test-{uuid.uuid4().hex[:6]}")
        yield started
    finally:
        if started is not None:
            started.stop_all(graceful=False)  # a throw-away cluster: no need to hand leaderships over
        kill_leftovers(base)
        shutil.rmtree(base, ignore_errors=True)
