"""Fixtures: one real RabbitMQ node for the session (pytest-rabbitmq), one vhost per test.

The node listens on 127.0.0.1 only and runs the management plugin on a port of
its own (``routes plan`` and the dlq tools read the broker through it).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
import requests
from pytest_rabbitmq import factories

from tests.support import free_port

MANAGEMENT_PORT = free_port()
_conf = Path(tempfile.mkdtemp(prefix="gridbus-test-rabbit-")) / "rabbitmq"
_conf.with_suffix(".conf").write_text(
    f"management.tcp.port = {MANAGEMENT_PORT}\nmanagement.tcp.ip = 127.0.0.1\n"
    "disk_free_limit.absolute = 100MB\n")
os.environ["RABBITMQ_CONFIG_FILE"] = str(_conf)
os.environ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1"

rabbitmq_proc = factories.rabbitmq_proc(plugindir=Path(__file__).parent / "rabbitmq")


@pytest.fixture(scope="session")
def management_url(rabbitmq_proc) -> str:
    url = f"http://127.0.0.1:{MANAGEMENT_PORT}"
    from tests.support import wait_for

    def ready():
        try:
            return requests.get(f"{url}/api/overview", auth=("guest", "guest"), timeout=2).ok
        except requests.RequestException:
            return False
    wait_for(ready, 60, "the management plugin")
    return url


@pytest.fixture
def vhost(rabbitmq_proc, management_url):
    """A fresh virtual host per test: tests never see each other's queues."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    auth = ("guest", "guest")
    requests.put(f"{management_url}/api/vhosts/{name}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{management_url}/api/permissions/{name}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    yield name
    requests.delete(f"{management_url}/api/vhosts/{name}", auth=auth, timeout=30)


@pytest.fixture
def bus_env(rabbitmq_proc, management_url, vhost, tmp_path) -> dict:
    """Environment for gridbus processes of one test: broker vhost, home, inbox, outbox."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/{vhost}",
        "GRIDBUS_MANAGEMENT_URL": f"http://guest:guest@127.0.0.1:{MANAGEMENT_PORT}",
        "GRIDBUS_HOME": str(home),
        "GRIDBUS_ENV_FILE": str(home / "none.env"),
        "GRIDBUS_INBOX": str(tmp_path / "inbox"),
        "GRIDBUS_OUTBOX": str(tmp_path / "outbox"),
        "PYTHONUNBUFFERED": "1",
    }
