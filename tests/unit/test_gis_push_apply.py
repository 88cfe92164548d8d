"""The GIS push's writer half, without a gateway: a body applied to a real SQLite network store,
its trace events, and the network-store destination a worker would use."""
from __future__ import annotations

import json

import pytest

from bus import hooks
from bus.envelope import Envelope
from bus.network import open_store
from bus.routes.loader import load_routes
from connectors.gis_push import NetworkStoreDestination
from connectors.http_push.gis_push import NetworkPush
from tests.support import ROOT, ROUTE_ENV

ROUTE = load_routes([ROOT / "routes" / "uc9-network.yaml"], env=ROUTE_ENV).get("gis-network-changes")
T = "2026-11-03T02:00:00+05:30"
DOC = {"Header": {"Noun": "NetworkChanges", "MessageID": "m-1"}, "Payload": {"changes": [
    {"changeId": "g-1", "sequence": 1, "effectiveFrom": T, "kind": "create", "type": "substation", "mrid": "SS-1"},
    {"changeId": "g-2", "sequence": 2, "effectiveFrom": T, "kind": "create", "type": "feeder", "mrid": "F-1",
     "parent": "SS-404"}]}}


@pytest.fixture
def events(monkeypatch):
    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(hooks, "_listeners", [])  # this test's listener only, gone after it
    hooks.subscribe(lambda kind, fields: seen.append((kind, fields)))
    return seen


@pytest.fixture
def push(tmp_path):
    network = NetworkPush([ROUTE], gateway=None, store=open_store(tmp_path / "network.sqlite"))
    yield network
    network.close()


def test_an_applied_document_is_received_delivered_and_its_refused_changes_counted(push, events):
    # Given a document with one good change and one under an unknown parent
    # When the writer applies it
    status, body, _ = push.apply(ROUTE, "gis", {}, json.dumps(DOC).encode(), "json")
    # Then 200 PARTIAL, and trace events: received, the refused change counted as rejected, delivered
    assert status == 200 and body["Reply"]["Result"] == "PARTIAL"
    kinds = {kind: fields for kind, fields in events}
    assert kinds["received"]["route"] == "gis-network-changes" and kinds["received"]["source"] == "gis"
    assert kinds["transformed"]["rejected"] == 1
    assert (kinds["delivered"]["destination"], kinds["delivered"]["status"]) == ("network", "PARTIAL")
    assert kinds["received"]["correlation_id"] == "m-1"
    assert push.store.element("SS-1") is not None and push.store.element("F-1") is None


def test_a_body_that_is_no_document_is_a_refusal_event_and_nothing_else(push, events):
    # Given a body that is not JSON  When the writer reads it
    status, body, _ = push.apply(ROUTE, "gis", {}, b"{oops", "json")
    # Then 400, counted as a refusal (gridbus_requests_refused_total), never received or applied
    assert status == 400 and body["Reply"]["Error"][0]["code"] == "MALFORMED_JSON"
    assert [(k, f["code"]) for k, f in events] == [("refused", "MALFORMED_JSON")]


def test_a_document_on_the_route_queue_is_applied_by_the_network_store_destination(tmp_path, monkeypatch):
    # Given the network store at a known place  When a worker delivers a change document to it twice
    monkeypatch.setenv("GRIDBUS_NETWORK_STORE", str(tmp_path / "network.sqlite"))
    destination = NetworkStoreDestination()
    envelope = Envelope(route_id=ROUTE.id, source="gis", verb="changed", noun="NetworkChanges")
    first = destination.deliver_document(DOC, envelope, ROUTE.destinations[0])
    again = destination.deliver_document(DOC, envelope, ROUTE.destinations[0])
    # Then applied once: PARTIAL both times (the unknown parent again), the good change a duplicate
    assert (first.status, again.status) == ("PARTIAL", "PARTIAL")
    assert open_store(tmp_path / "network.sqlite").stats()["changesApplied"] == 1
