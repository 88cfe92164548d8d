"""Asking one HES (``connectors.hes_request.asking``): what an answer means, when to ask again.

The rules are a generator of steps, so they are driven here step by step with what
an HES would answer; the real HTTP of both workers is tested in
tests/integration/test_request_faults.py.
"""
from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest

from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from connectors import rest_request
from connectors.hes_request import Call, Heard, Pause, asking

OPTIONS = {"operation": "commands", "timeout_s": 10.0, "retry_for_s": 30.0}
ENVELOPE = Envelope(route_id="r", source="mdms-1", verb="create", noun="EndDeviceControls", message_id="m-1")


def command(expires_in_s: float = 600, meters=("M1", "M2")) -> dict:
    at = dt.datetime.fromtimestamp(time.time() + expires_in_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Header": {}, "Request": {"commandId": "c-1", "action": "disconnect", "meters": list(meters),
                                      "expiresAt": at}}


def executed(*meters, errors=()) -> Heard:
    body = {"Reply": {"Result": "OK" if not errors else "PARTIAL", **({"Error": list(errors)} if errors else {})},
            "Payload": {"EndDeviceControls": {"commandId": "c-1", "results": [
                {"meter": m, "status": "executed"} for m in meters]}}}
    return Heard("answered", 200, orjson.dumps(body))


def status(**meters) -> Heard:
    return Heard("answered", 200, orjson.dumps({"commandId": "c-1", "meters": {
        m: ({"status": s} if isinstance(s, str) else s) for m, s in meters.items()}}))


def drive(steps, heard: list):
    """Send each scripted answer to the next Call (a Pause is just passed); the steps taken, the result."""
    taken, answer = [], None
    try:
        while True:
            step = steps.send(answer)
            taken.append(step)
            answer = None if isinstance(step, Pause) else heard.pop(0)
    except StopIteration as done:
        return taken, done.value


def test_an_hes_that_answers_503_is_asked_again_after_its_retry_after():
    # Given an HES that answers 503 with Retry-After 3, then executes the command
    steps = asking("hes-a", "http://hes", OPTIONS, command(), ["M1", "M2"], ENVELOPE)
    # When the bus asks it
    taken, (reply, errors) = drive(steps, [Heard("answered", 503, b"{}", "3"), executed("M1", "M2")])
    # Then it waited the Retry-After, asked again, and both meters are executed
    assert [type(s).__name__ for s in taken] == ["Call", "Pause", "Call"]
    assert taken[1].seconds == 3.0 and errors == [] and reply["Reply"]["Result"] == "OK"


def test_an_hes_that_never_takes_a_command_before_its_expiry_fails_it_as_not_taken():
    # Given a command that expires before the HES's Retry-After is over
    steps = asking("hes-a", "http://hes", OPTIONS, command(expires_in_s=2), ["M1"], ENVELOPE)
    # When the HES refuses the connection  Then the meter is HES_UNAVAILABLE: not taken, nothing ran
    taken, (reply, errors) = drive(steps, [Heard("answered", 503, b"{}", "5")])
    assert reply is None and [e["code"] for e in errors] == ["HES_UNAVAILABLE"]
    assert len([s for s in taken if isinstance(s, Call)]) == 1


def test_a_command_without_an_answer_is_asked_for_until_its_outcome_is_known():
    # Given an HES that does not answer in time, then says "in progress", then "executed" for M1
    # and "failed" for M2
    steps = asking("hes-a", "http://hes", OPTIONS, command(), ["M1", "M2"], ENVELOPE)
    taken, (reply, errors) = drive(steps, [
        Heard("timeout"), status(M1="in-progress"),
        status(M1={"status": "executed", "state": {"relay": "disconnected"}},
               M2={"status": "failed", "error": "METER_UNREACHABLE"})])
    # Then it asked the command's status (a GET) until both were known
    calls = [s for s in taken if isinstance(s, Call)]
    assert [c.method for c in calls] == ["POST", "GET", "GET"]
    assert calls[1].url == "http://hes/requests/commands/c-1?meters=M1,M2"
    # and the answer is what the HES said of each meter
    assert [(r["meter"], r["status"]) for r in reply["Payload"]["EndDeviceControls"]["results"]] == [
        ("M1", "executed"), ("M2", "failed")]
    assert [(e["meter"], e["code"]) for e in errors] == [("M2", "METER_UNREACHABLE")]


def test_after_its_expiry_a_command_the_hes_never_received_was_never_executed():
    # Given an expired command whose first try broke off after sending
    steps = asking("hes-a", "http://hes", OPTIONS, command(expires_in_s=-1), ["M1"], ENVELOPE)
    # When the HES's status names no such meter  Then it was never executed, and says so
    _, (reply, errors) = drive(steps, [Heard("broken", reason="ServerDisconnectedError"), status()])
    assert [e["code"] for e in errors] == ["NOT_EXECUTED"] and reply["Reply"]["Result"] == "FAILED"


def test_an_outcome_still_unknown_at_the_end_is_unknown_never_failed():
    # Given an HES that never answers, and a command past its expiry with no time left to ask
    options = {**OPTIONS, "timeout_s": 0.0}
    steps = asking("hes-a", "http://hes", options, command(expires_in_s=-1), ["M1"], ENVELOPE)
    # When its status cannot be had either  Then the meter is OUTCOME_UNKNOWN
    _, (reply, errors) = drive(steps, [Heard("timeout"), Heard("not-sent")])
    assert [e["code"] for e in errors] == ["OUTCOME_UNKNOWN"]


def test_a_meter_the_hes_says_nothing_about_is_not_executed():
    # When an HES answers OK but with a result for M1 only
    steps = asking("hes-a", "http://hes", OPTIONS, command(), ["M1", "M2"], ENVELOPE)
    _, (reply, errors) = drive(steps, [executed("M1")])
    # Then M2 is an error, never a success
    assert [(e["meter"], e["code"]) for e in errors] == [("M2", "NOT_CONFIRMED")]


def test_a_read_that_times_out_fails_its_meters_without_asking_again():
    steps = asking("hes-a", "http://hes", {**OPTIONS, "operation": "meter-readings"},
                   {"Header": {}, "Request": {"meters": ["M1"]}}, ["M1"], ENVELOPE)
    taken, (reply, errors) = drive(steps, [Heard("timeout")])
    assert reply is None and [e["code"] for e in errors] == ["TIMEOUT"] and len(taken) == 1


class _Endpoint:
    system = "mdms-1"


@pytest.mark.parametrize("status,body", [
    (202, {"Reply": {"Result": "OK"}, "state": "sent"}),
    (200, {"Reply": {"Error": [{"code": "PENDING"}]}, "pending": True}),
    (504, {"Reply": {"Error": [{"code": "TIMEOUT"}]}, "pending": True}),
])
def test_an_acknowledgement_is_never_taken_for_a_reply(status, body):
    # When a destination answers with an acknowledgement  Then it is asked again: it may have acted
    with pytest.raises(TransientDeliveryError) as raised:
        rest_request._interpret(_Endpoint(), status, orjson.dumps(body))
    assert raised.value.maybe_sent


def test_a_destination_that_did_not_take_the_request_says_so():
    with pytest.raises(TransientDeliveryError) as raised:
        rest_request._interpret(_Endpoint(), 503, b"{}", "8")
    assert not raised.value.maybe_sent and raised.value.retry_after_s == 8.0
    with pytest.raises(PermanentDeliveryError):
        rest_request._interpret(_Endpoint(), 400, b"not json")
    assert rest_request._interpret(_Endpoint(), 200, b'{"Reply": {"Result": "FAILED"}}')["Reply"]["Result"] == "FAILED"
