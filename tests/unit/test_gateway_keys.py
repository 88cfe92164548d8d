"""Gateway API keys: a running gateway sees keys added and revoked by `gridbus gateway keys`."""
from __future__ import annotations

import time

from connectors.http_push.keys import KeyStore


def test_a_key_revoked_from_the_command_line_stops_working_within_the_recheck_interval(tmp_path):
    # Given a gateway's key store that has accepted a key
    path = tmp_path / "gateway-keys.json"
    key = KeyStore(path).add("billing-1")
    gateway = KeyStore(path)
    gateway.RECHECK_S = 0.2
    assert gateway.system_of(key) == "billing-1"
    # When an operator revokes it with another process's key store
    assert KeyStore(path).revoke(key.split(".")[0])
    # Then the gateway refuses it once the recheck interval has passed, and never takes a wrong secret
    time.sleep(0.3)
    assert gateway.system_of(key) is None
    assert gateway.system_of(key.split(".")[0] + ".wrong") is None


def test_a_key_added_while_the_gateway_runs_is_accepted_at_once(tmp_path):
    # Given a running gateway's key store that has just read the file
    path = tmp_path / "gateway-keys.json"
    gateway = KeyStore(path)
    gateway.RECHECK_S = 60
    assert gateway.system_of("nope.nope") is None
    # When an operator adds a key  Then its first request is accepted, without waiting for a recheck
    key = KeyStore(path).add("mdms-1")
    assert gateway.system_of(key) == "mdms-1"
