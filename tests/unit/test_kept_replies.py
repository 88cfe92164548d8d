"""What the gateway makes of a reply: the request as it will be stored, and replies it cannot use."""
from __future__ import annotations

from bus import naming
from bus.requests.store import RequestStore
from connectors.http_push.kept_replies import answered, hinted_state, keep_reply, parsed


def stored_read(store: RequestStore, request_id: str = "r1"):
    return store.create(id=request_id, system="mdms-1", requested_by="mdms-1", kind="meter-readings",
                        route="mdms-1-reads-to-hes", client_key=None, action=None, meters=1, state="requested",
                        expires=None, reply_address=None, correlation_id="c1", document={"Request": {}},
                        sent_on="mdms-1-reads-to-hes")


def test_a_read_answered_before_the_commit_is_the_request_the_store_then_holds(tmp_path):
    # Given a read stored and sent, and its reply as it comes off the queue
    store = RequestStore(tmp_path / "requests.sqlite")
    request = stored_read(store)
    reply = parsed(request.id, b'{"Reply": {"Result": "PARTIAL"}, "Payload": {"n": 1}}')
    # When its caller is answered at once and the reply is then kept
    early = answered(request, reply, hinted_state({}))
    kept, _ = keep_reply(store, request.id, reply, hinted_state({}), request.kind)
    # Then the caller was told what the store holds: state, result and reply
    assert (early.state, early.result, early.reply) == ("replied", "PARTIAL", reply)
    assert (kept.state, kept.result, kept.reply) == (early.state, early.result, early.reply)


def test_a_reply_that_is_not_a_json_object_is_dropped_and_the_request_keeps_waiting(tmp_path):
    # Given a read waiting for its reply
    store = RequestStore(tmp_path / "requests.sqlite")
    request = stored_read(store)
    for body in (b"not json", b"[1, 2]", b'"OK"'):
        # When a reply arrives that no request could be answered with
        reply = parsed(request.id, body)
        # Then it is dropped, and the request is still waiting
        assert reply is None
        assert keep_reply(store, request.id, reply, None, request.kind) == (None, None)
    assert store.get(request.id).state == "sent"


def test_the_state_a_worker_names_is_read_as_text_whichever_client_sent_it():
    # Given the reply-state header as aio-pika (bytes) and py-amqp (str) hand it over, or none
    # When it is read / Then it is the state's name
    assert hinted_state({naming.H_REPLY_STATE: b"expired"}) == "expired"
    assert hinted_state({naming.H_REPLY_STATE: "expired"}) == "expired"
    assert hinted_state(None) is None


def test_a_reply_whose_outcome_is_unknown_is_kept_without_a_result(tmp_path):
    from bus.requests.store import RequestStore
    from connectors.http_push.kept_replies import keep_reply

    store = RequestStore(tmp_path / "requests.sqlite")
    store.create(id="r1", system="billing-1", requested_by="a", kind="commands", route="billing-1-commands",
                 client_key="c1", action="disconnect", meters=1, state="sent", expires=None, reply_address=None,
                 correlation_id=None, document={"Request": {}})
    # Given a reply saying the HES could not tell whether meter M1 was disconnected
    reply = {"Reply": {"Result": "FAILED", "Error": [{"code": "OUTCOME_UNKNOWN", "meter": "M1"}]}}
    # When the gateway keeps it
    kept, _ = keep_reply(store, "r1", reply, None, "commands")
    # Then the command is unknown, and its reply has no Result anyone could take for "failed"
    assert kept.state == "unknown" and kept.result is None
    assert "Result" not in kept.reply["Reply"] and kept.reply["pending"] is True
