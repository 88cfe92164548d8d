"""The pieces of the event-loop request path that need no broker: the gateway's WSGI bridge
and how the request worker reads a route message."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import make_mocked_request

from bus import task_message
from bus.envelope import Envelope
from bus.worker.event_loop import BadMessage, decoded
from connectors.http_push.server import call_wsgi, environ_of


def test_a_request_becomes_the_environ_the_push_application_reads():
    # Given a push as aiohttp receives it, with a header a proxy would set
    request = make_mocked_request("POST", "/v1/push/hes-a/alarms?x=1", headers={
        "Content-Type": "application/json", "Content-Length": "2", "X-API-Key": "k1",
        "X-Forwarded-For": "203.0.113.9", "traceparent": "00-abc-def-01"})
    # When it is turned into a WSGI environ
    environ = environ_of(request, b"{}")
    # Then the application finds method, path, query, body and headers where WSGI puts them
    assert (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]) == \
        ("POST", "/v1/push/hes-a/alarms", "x=1")
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("application/json", "2")
    assert environ["wsgi.input"].read() == b"{}"
    assert environ["HTTP_X_API_KEY"] == "k1" and environ["HTTP_TRACEPARENT"] == "00-abc-def-01"
    # and no proxy is trusted: its header does not reach the application
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_a_wsgi_answer_comes_back_whole_with_its_own_headers():
    # Given a WSGI application that answers in two chunks
    def app(environ, start_response):
        start_response("429 Too Many Requests", [("Content-Type", "application/json"), ("Retry-After", "3"),
                                                 ("Content-Length", "11")])
        return [b'{"a":', b' 1}']

    # When it is called through the bridge
    status, headers, body = call_wsgi(app, {})
    # Then status, headers and body are the application's (the server sets the length itself)
    assert status == 429 and json.loads(body) == {"a": 1}
    assert ("Retry-After", "3") in headers and not any(k == "Content-Length" for k, _ in headers)


def _message(body: bytes, headers: dict, reply_to: str | None = "gridbus.replies"):
    # the three attributes decoded() reads of an aio-pika IncomingMessage
    return SimpleNamespace(body=body, headers=headers, reply_to=reply_to, message_id=headers.get("id"))


def test_the_request_worker_reads_the_message_the_bus_publishes():
    # Given a request as the gateway publishes it on its route
    envelope = Envelope(route_id="mdms-1-reads-to-hes", source="mdms-1", verb="get", noun="MeterReadings",
                        correlation_id="c-1", reply_to="gridbus.replies")
    body, _props, headers = task_message.build(envelope, {"Request": {"meters": ["M1"]}})
    # When the event-loop worker decodes it (header strings may arrive as bytes)
    route = SimpleNamespace(id="mdms-1-reads-to-hes")
    got, payload = decoded(route, _message(body, {k: v.encode() if k == "gridbus-source" else v
                                                  for k, v in headers.items()}))
    # Then it has the same envelope and payload the Celery worker would have
    assert (got.message_id, got.route_id, got.source, got.correlation, got.reply_to) == \
        (envelope.message_id, "mdms-1-reads-to-hes", "mdms-1", "c-1", "gridbus.replies")
    assert payload == {"Request": {"meters": ["M1"]}}


@pytest.mark.parametrize("body, headers, why", [
    (b"not json", {"id": "m1", "gridbus-route": "r"}, "JSONDecodeError"),
    (b'[["x"], {}, {}]', {"id": "m1"}, "not a route message"),
    (b"[" * 100_000, {"id": "m1", "gridbus-route": "r"}, "nested 100000 levels"),
    (b'[[' + b'{"a":' * 900 + b'1' + b'}' * 900 + b'], {}, {}]', {"id": "m1", "gridbus-route": "r"}, "nested 902"),
    (b'{"args": 1}', {"id": "m1", "gridbus-route": "r"}, "not a route message"),
])
def test_a_message_that_is_not_a_route_message_is_refused_with_the_reason(body, headers, why):
    # Given a message someone put on a route queue by hand (no JSON body, no route header,
    # nested deeper than the bus takes, another shape)
    # When the event-loop worker decodes it  Then it is refused as a bad message, saying why
    with pytest.raises(BadMessage, match=why):
        decoded(SimpleNamespace(id="r"), _message(body, headers))
