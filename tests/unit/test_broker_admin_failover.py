"""The management API of the first node that answers, when the setting names several."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bus.broker_admin import BrokerAdmin
from bus.errors import BrokerError
from tests.support import free_port


class _Node(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps([{"name": "q", "answered_by": self.server.server_port}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def live_node():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def test_a_node_that_does_not_answer_is_skipped_and_the_one_that_does_is_asked_first_after(live_node):
    # Given a setting naming a dead node first, then a live one
    dead = free_port()
    admin = BrokerAdmin(f"http://guest:guest@127.0.0.1:{dead};http://u:p@127.0.0.1:{live_node}", "v")
    # When the queues are asked for
    queues = admin.queues()
    # Then the live node answered, and is the first asked from now on
    assert queues[0]["answered_by"] == live_node
    assert admin.base == f"http://127.0.0.1:{live_node}/api" and admin.auth == ("u", "p")


def test_no_node_answering_is_a_broker_error_naming_each():
    ports = [free_port(), free_port()]
    admin = BrokerAdmin(";".join(f"http://127.0.0.1:{p}" for p in ports))
    with pytest.raises(BrokerError) as caught:
        admin.queues()
    assert all(str(p) in str(caught.value) for p in ports)


def test_a_setting_naming_no_node_is_refused():
    with pytest.raises(BrokerError):
        BrokerAdmin(" ; ")
