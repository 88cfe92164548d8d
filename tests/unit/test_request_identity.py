"""What a request id means at the gateway: a repeat, a conflict, a released id, an approval's reach.

Real request store (SQLite file) and the shipped request routes; no broker: ``RequestApi.take``
decides and stores, publishing is the loop's job.
"""
from __future__ import annotations

import pytest

from bus.requests import replies
from bus.requests.store import RequestStore
from bus.routes import load_routes
from connectors.http_push.requests_api import Following, RequestApi, Taken
from tests.support import ROUTE_ENV as ENV, ROOT

METERS = [f"UPM{n:08d}" for n in range(1, 61)]


def disconnect(command_id: str, meters=METERS, header=None) -> dict:
    return {"Header": header or {}, "Request": {"commandId": command_id, "action": "disconnect", "meters": meters}}


@pytest.fixture
def gateway(tmp_path):
    routes = [r for r in load_routes([ROOT / "routes" / "uc6-7-8-requests.yaml"], env=ENV)
              if r.source.connector == "http-request"]
    return RequestApi(routes, RequestStore(tmp_path / "requests.sqlite")), {r.id: r for r in routes}


def approve(api, request_id: str) -> None:
    api.store.transition(request_id, "sent", "bob", {"pending-approval"}, "approved", approved_by="bob")


def test_an_approval_covers_only_the_command_approved_and_its_onward_hop(gateway):
    api, routes = gateway
    # Given billing-1's 60-meter disconnect, approved by a second user
    first = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("cut-60"))
    assert first.status == 202 and first.body["state"] == "pending-approval"
    approve(api, first.body["request_id"])
    # When billing-2 sends a disconnect of 60 meters under billing-1's approved id
    reused = api.take(routes["billing-2-commands"], "billing-2", "mallory", disconnect("cut-60"))
    # Then it is a command of its own and waits for its own approval
    assert reused.status == 202 and reused.body["state"] == "pending-approval"
    # When the MDMS forwards billing-1's command unchanged  Then it needs no second approval
    onward = api.take(routes["mdms-1-commands-to-hes"], "mdms-1", "mdms", disconnect("cut-60"))
    assert isinstance(onward, Taken)
    # When the MDMS sends other meters under that id  Then that is not the command approved: 409
    other = api.take(routes["mdms-1-commands-to-hes"], "mdms-1", "mdms",
                     disconnect("cut-60", [f"UPM{n:08d}" for n in range(100, 160)]))
    assert other.status == 409, other.body
    # and billing-2 approved under an id of its own does not lend it to the MDMS for other meters
    approve(api, reused.body["request_id"])
    sneaked = api.take(routes["mdms-1-commands-to-hes"], "mdms-1", "mdms",
                       disconnect("cut-61", [f"UPM{n:08d}" for n in range(100, 160)]))
    assert sneaked.status == 202 and sneaked.body["state"] == "pending-approval"


def test_the_same_id_for_another_request_is_a_409_not_the_old_answer(gateway):
    api, routes = gateway
    # Given a disconnect of two meters, answered
    taken = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-1", METERS[:2]))
    api.store.record_reply(taken.request.id, replies.reply("EndDeviceControls", None, "OK"), "executed")
    # When the same id comes with other meters
    answer = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-1", METERS[2:4]))
    # Then 409 names the conflict, and nothing new is stored
    assert answer.status == 409 and answer.body["Reply"]["Error"][0]["code"] == "ID_CONFLICT"
    assert taken.request.id in answer.body["Reply"]["Error"][0]["reason"]
    # and the same id with the same command is the old answer, marked a duplicate
    again = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-1", METERS[:2]))
    assert again.status == 200 and again.body["duplicate"] and again.body["Reply"]["Result"] == "OK"


def test_a_repeat_of_a_request_in_flight_follows_it_and_an_acknowledgement_has_no_result(gateway):
    api, routes = gateway
    # Given a read sent and not answered yet
    read = {"Header": {"MessageID": "m-1"}, "Request": {"meters": METERS[:1]}}
    taken = api.take(routes["billing-1-reads"], "billing-1", None, read)
    assert isinstance(taken, Taken)
    # When it comes again and its caller waits  Then it follows the first (its outcome, when it comes)
    repeat = api.take(routes["billing-1-reads"], "billing-1", None, read)
    assert isinstance(repeat, Following) and repeat.request.id == taken.request.id
    api.done(repeat)
    # When it comes again asking for an asynchronous reply  Then 202, pending, and no Result in it
    later = api.take(routes["billing-1-reads"], "billing-1", None,
                     {**read, "Header": {"MessageID": "m-1", "AsyncReplyFlag": True, "ReplyAddress": "http://x/"}})
    assert later.status == 202 and later.body["pending"] and "Result" not in later.body["Reply"]
    # and the same MessageID from the MDMS (the next hop) is another request, not a repeat
    onward = api.take(routes["mdms-1-reads-to-hes"], "mdms-1", None, read)
    assert isinstance(onward, Taken) and onward.request.id != taken.request.id


def test_a_command_no_hes_took_gives_up_its_id_and_one_that_ran_keeps_it(gateway):
    api, routes = gateway
    # Given a connect that failed because its HES answered 503 until its expiry
    first = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-2", METERS[:1]))
    api.store.record_reply(first.request.id, replies.failed("EndDeviceControls", None, "HES_UNAVAILABLE",
                                                            "hes-a answered 503", METERS[:1]), "failed")
    # When billing sends the same command id again
    again = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-2", METERS[:1]))
    # Then it is a new request that will run; the old one keeps its record and says it gave up the id
    assert isinstance(again, Taken) and again.request.id != first.request.id
    assert api.store.get(first.request.id).client_key is None
    assert api.store.audit_of(first.request.id)[-1]["event"] == "released"
    # Given a command that failed because its meter did not answer (a business answer of its HES)
    api.store.record_reply(again.request.id, replies.failed("EndDeviceControls", None, "METER_UNREACHABLE",
                                                            "no answer", METERS[:1]), "failed")
    # When it is sent again  Then it is the old answer: final, never run twice
    third = api.take(routes["billing-1-commands"], "billing-1", "alice", disconnect("c-2", METERS[:1]))
    assert third.status == 200 and third.body["duplicate"] and third.body["request_id"] == again.request.id


def test_implausible_numbers_and_a_disconnect_no_rate_lets_through_are_refused_with_the_limit(gateway):
    api, routes = gateway
    route = routes["billing-2-commands"]
    # When billing-2 sends a credit update of 1e308, or a negative one past the limit
    for amount in (1e308, -1e6, True):
        answer = api.take(route, "billing-2", "ops", {"Header": {}, "Request": {
            "commandId": f"cr-{amount}", "action": "credit-update", "meters": METERS[:1],
            "params": {"amount": amount}}})
        # Then 400 names the limit and its route option, and nothing is taken
        assert answer.status == 400, answer.body
        assert answer.body["Reply"]["Error"][0]["code"] in ("IMPLAUSIBLE_VALUE", "INVALID_REQUEST")
    assert "max_credit_amount" in api.take(route, "billing-2", "ops", {"Header": {}, "Request": {
        "commandId": "cr-big", "action": "credit-update", "meters": METERS[:1],
        "params": {"amount": 1e308}}}).body["Reply"]["Error"][0]["reason"]
    # When a disconnect names more meters than the route's rate ever lets through
    many = [f"UPM{n:08d}" for n in range(1, 1202)]
    answer = api.take(route, "billing-2", "ops", disconnect("cut-1201", many))
    # Then 413 says how to split it, instead of a 429 that could never pass
    assert answer.status == 413 and answer.body["Reply"]["Error"][0]["code"] == "OVER_DISCONNECT_RATE"
    assert "at most 1000 meters" in answer.body["Reply"]["Error"][0]["reason"]
    # and a plausible credit update is taken
    ok = api.take(route, "billing-2", "ops", {"Header": {}, "Request": {
        "commandId": "cr-ok", "action": "credit-update", "meters": METERS[:1], "params": {"amount": 500}}})
    assert isinstance(ok, Taken)
