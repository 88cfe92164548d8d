"""A command the gateway refuses is kept for the security officer; the refusal stands either way."""
from __future__ import annotations

import pytest

from bus.requests.store import RequestStore
from bus.routes import load_routes
from connectors.http_push.requests_api import RequestApi
from tests.support import ROUTE_ENV as ENV, ROOT

DISCONNECT = {"Header": {}, "Request": {"commandId": "c-1", "action": "disconnect", "meters": ["UPM00000001"]}}


@pytest.fixture
def api(tmp_path):
    routes = [r for r in load_routes([ROOT / "routes" / "uc6-7-8-requests.yaml"], env=ENV)
              if r.source.connector == "http-request"]
    return RequestApi(routes, RequestStore(tmp_path / "requests.sqlite")), {r.id: r for r in routes}


def test_an_hes_key_asking_for_a_disconnect_is_refused_and_kept_with_who_and_why(api):
    requests, routes = api
    # When HES-A's key asks billing-1's command route for a disconnect
    answer = requests.take(routes["billing-1-commands"], "hes-a", "mallory", DISCONNECT)
    # Then 403, and the attempt is stored as refused: who, what, and the refusal as its reply
    assert answer.status == 403 and answer.body["Reply"]["Error"][0]["code"] == "FORBIDDEN"
    kept = requests.store.get(answer.body["request_id"])
    assert (kept.state, kept.system, kept.requested_by, kept.action, kept.meters) == (
        "refused", "hes-a", "mallory", "disconnect", 1)
    assert kept.reply["Reply"]["Error"][0]["code"] == "FORBIDDEN" and kept.client_key is None
    assert [(a["who"], a["event"]) for a in requests.store.audit_of(kept.id)] == [("mallory", "refused")]


def test_a_refusal_stands_when_it_cannot_be_audited(api, monkeypatch, caplog):
    requests, routes = api
    # Given a store that cannot write
    def broken(**_):
        raise OSError("disk full")
    monkeypatch.setattr(requests.store, "create", broken)
    # When a refused command comes  Then it is still refused, and the log keeps what the store could not
    answer = requests.take(routes["billing-1-commands"], "hes-a", "mallory", DISCONNECT)
    assert answer.status == 403 and "request_id" not in answer.body
    assert "not audited: disk full" in caplog.text and "hes-a" in caplog.text


def test_a_read_refused_is_not_kept(api):
    requests, routes = api
    # When a read is refused (the wrong system)  Then nothing is stored for it
    answer = requests.take(routes["billing-1-reads"], "hes-a", None, {"Header": {}, "Request": {"meters": ["M"]}})
    assert answer.status == 403 and "request_id" not in answer.body
    assert requests.store.listing(limit=10) == []
