"""Gateway API keys: a running gateway sees keys added and revoked by `gridbus gateway keys`;
refused keys and rates are counted."""
from __future__ import annotations

import io
import time

import pytest

from bus import hooks
from bus.routes import load_routes
from bus.tracing.metrics import TraceMetrics
from connectors.http_push.app import Gateway, Refusal
from connectors.http_push.keys import KeyStore
from tests.support import ROUTE_ENV as ENV, ROOT


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


def test_an_unknown_key_and_a_system_over_its_rate_are_refused_and_counted(tmp_path):
    # Given a gateway with one key, one request a second for each system, and the trace hook listening
    key = KeyStore(tmp_path / "gateway-keys.json").add("billing-1")
    gateway = Gateway([], "amqp://127.0.0.1:9//", KeyStore(tmp_path / "gateway-keys.json"), rate_per_s=1)
    seen = []
    hooks.subscribe(lambda kind, fields: seen.append({"kind": kind, **fields}))
    try:
        # When a caller guesses a key, and billing-1 calls three times at once
        with pytest.raises(Refusal) as unknown:
            gateway.caller({"HTTP_X_API_KEY": "guessed.secret"})
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(gateway.caller({"HTTP_X_API_KEY": key}))
            except Refusal as refused:
                outcomes.append(refused.args[0])
    finally:
        hooks._listeners.pop()
    # Then 401 for the guess, the burst of two passes and the third gets 429
    assert unknown.value.args[0] == 401 and outcomes == ["billing-1", "billing-1", 429]
    # and both refusals are trace events the recorder counts, the guess under no route or system
    metrics = TraceMetrics()
    metrics.observe([e for e in seen if e["kind"] == "refused"])
    assert metrics.registry.get_sample_value("gridbus_requests_refused_total",
                                             {"route": "?", "source": "?", "code": "UNAUTHENTICATED"}) == 1
    assert metrics.registry.get_sample_value("gridbus_requests_refused_total",
                                             {"route": "?", "source": "billing-1", "code": "RATE_LIMITED"}) == 1


def test_a_push_refused_for_the_wrong_system_or_a_bad_body_is_counted_by_route(tmp_path):
    # Given the shipped alarm routes, a gateway, and keys of HES-A and HES-B
    routes = list(load_routes([ROOT / "routes" / "uc2-4-5-alarms.yaml"], env=ENV))
    keys = KeyStore(tmp_path / "gateway-keys.json")
    hes_a, hes_b = keys.add("hes-a"), keys.add("hes-b")
    gateway = Gateway(routes, "amqp://127.0.0.1:9//", KeyStore(tmp_path / "gateway-keys.json"))
    seen = []
    hooks.subscribe(lambda kind, fields: seen.append({"kind": kind, **fields}))

    def push(key: str, body: bytes) -> str:
        status = []
        gateway({"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/push/hes-a/alarms", "HTTP_X_API_KEY": key,
                 "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                 "wsgi.input": io.BytesIO(body)}, lambda s, h: status.append(s))
        return status[0]
    try:
        # When HES-B pushes to HES-A's route, and HES-A pushes something that is not JSON
        answers = [push(hes_b, b"[]"), push(hes_a, b"{not json")]
    finally:
        hooks._listeners.pop()
    # Then 403 and 400, each a refusal counted under the route and the system that pushed
    assert [a.split()[0] for a in answers] == ["403", "400"]
    metrics = TraceMetrics()
    metrics.observe([e for e in seen if e["kind"] == "refused"])
    for source, code in (("hes-b", "FORBIDDEN"), ("hes-a", "MALFORMED_JSON")):
        assert metrics.registry.get_sample_value("gridbus_requests_refused_total",
                                                 {"route": "hes-a-alarms", "source": source, "code": code}) == 1
