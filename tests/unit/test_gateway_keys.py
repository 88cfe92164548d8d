"""Gateway API keys: a running gateway sees keys added and revoked by `gridbus gateway keys` at once
(on SQLite and on a shared PostgreSQL); the old JSON key file is imported once; refused keys and
rates are counted."""
from __future__ import annotations

import hashlib
import io
import json

import pytest

from bus import hooks
from bus.errors import ConfigError
from bus.routes import load_routes
from bus.tracing.metrics import TraceMetrics
from connectors.http_push.app import Gateway, Refusal
from connectors.http_push.keys import KeyStore
from tests.state_stores import postgres_url, state_url  # noqa: F401 - run on both databases
from tests.support import ROUTE_ENV as ENV, ROOT


@pytest.fixture
def opened():
    """Closes the key stores a test opens (a PostgreSQL one holds a pool of connections)."""
    stores = []

    def keep(store: KeyStore) -> KeyStore:
        stores.append(store)
        return store
    yield keep
    for store in stores:
        store.close()


def test_a_key_revoked_from_another_process_is_refused_on_the_very_next_request(tmp_path, state_url, opened):
    # Given a gateway's key store that has accepted a key (on SQLite, or PostgreSQL shared by hosts)
    path = tmp_path / "gateway-keys.sqlite"
    key = opened(KeyStore(path, url=state_url)).add("billing-1")
    gateway = opened(KeyStore(path, url=state_url))
    assert gateway.system_of(key) == "billing-1"
    # When an operator revokes it with another process's key store
    assert opened(KeyStore(path, url=state_url)).revoke(key.split(".")[0])
    # Then the gateway refuses it at once, never takes a wrong secret, and a second revoke says there is none
    assert gateway.system_of(key) is None
    assert gateway.system_of(key.split(".")[0] + ".wrong") is None
    assert not gateway.revoke(key.split(".")[0])
    # and the key is listed as revoked only when asked for
    assert gateway.listing() == [] and gateway.listing(revoked=True)[0]["revoked_at"] is not None


def test_a_key_added_while_the_gateway_runs_is_accepted_at_once(tmp_path, state_url, opened):
    # Given a running gateway's key store
    path = tmp_path / "gateway-keys.sqlite"
    gateway = opened(KeyStore(path, url=state_url))
    assert gateway.system_of("nope.nope") is None
    # When an operator adds a key  Then its first request is accepted
    key = opened(KeyStore(path, url=state_url)).add("mdms-1")
    assert gateway.system_of(key) == "mdms-1"


def test_keys_of_the_old_json_file_are_imported_once_as_hashes(tmp_path, state_url, caplog, opened):
    # Given a JSON key file written by an earlier gridbus, with one key of billing-1
    secret = "s3cret-of-billing"
    old = tmp_path / "gateway-keys.json"
    old.write_text(json.dumps({"k1": {"system": "billing-1", "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                                      "created": 1700000000.0}}))
    # When a gateway opens the state store  Then the key works, the import is logged, never the secret
    with caplog.at_level("WARNING"):
        store = opened(KeyStore(tmp_path / "gateway-keys.sqlite", import_from=old, url=state_url))
    assert store.system_of(f"k1.{secret}") == "billing-1"
    assert "imported 1 gateway key" in caplog.text and secret not in caplog.text
    # and once revoked it stays revoked: the file is not imported again while the store has keys
    store.revoke("k1")
    again = opened(KeyStore(tmp_path / "gateway-keys.sqlite", import_from=old, url=state_url))
    assert again.system_of(f"k1.{secret}") is None and len(again.listing(revoked=True)) == 1


@pytest.mark.parametrize("content", ['{"k1": {"system": "billing-1"}}', "[1, 2]", "{not json",
                                     '{"a.b": {"system": "s", "sha256": "' + "0" * 64 + '"}}'])
def test_a_broken_json_key_file_is_refused_naming_the_file(tmp_path, content, opened):
    # Given a hand-edited key file that is not what gridbus wrote
    old = tmp_path / "gateway-keys.json"
    old.write_text(content)
    # When a gateway would import it  Then it refuses, naming the file, and imports nothing
    with pytest.raises(ConfigError, match="gateway-keys.json"):
        opened(KeyStore(tmp_path / "gateway-keys.sqlite", import_from=old, url=""))
    assert opened(KeyStore(tmp_path / "gateway-keys.sqlite", url="")).listing(revoked=True) == []


@pytest.mark.parametrize("presented", ["\x00.x", "a" * 5000 + ".x", "\n\r.x", "\ud800.\udfff", ".", "nodot"])
def test_a_hostile_key_is_refused_as_unknown_never_a_store_error(tmp_path, state_url, presented, opened):
    # Given a store with a key  When a caller presents a key made to break the lookup  Then it is unknown
    store = opened(KeyStore(tmp_path / "gateway-keys.sqlite", url=state_url))
    store.add("billing-1")
    assert store.system_of(presented) is None


def test_an_unknown_key_and_a_system_over_its_rate_are_refused_and_counted(tmp_path):
    # Given a gateway with one key, one request a second for each system, and the trace hook listening
    key = KeyStore(tmp_path / "gateway-keys.sqlite").add("billing-1")
    gateway = Gateway([], "amqp://127.0.0.1:9//", KeyStore(tmp_path / "gateway-keys.sqlite"), rate_per_s=1)
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
    keys = KeyStore(tmp_path / "gateway-keys.sqlite")
    hes_a, hes_b = keys.add("hes-a"), keys.add("hes-b")
    gateway = Gateway(routes, "amqp://127.0.0.1:9//", KeyStore(tmp_path / "gateway-keys.sqlite"))
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
