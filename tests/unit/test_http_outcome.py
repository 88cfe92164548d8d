"""What an HTTP destination's answer means (connectors.http_outcome), for every HTTP destination."""
from __future__ import annotations

import email.utils
import time

import pytest
import requests

from bus.envelope import Envelope
from bus.errors import PermanentDeliveryError, TransientDeliveryError
from connectors.http_outcome import message_headers, never_connected, refused, retry_after
from tests.support import free_port


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert retry_after("8") == 8.0 and retry_after(None) is None and retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after(in_a_minute) <= 61


@pytest.mark.parametrize("status,kind,maybe_sent", [
    (503, TransientDeliveryError, False), (429, TransientDeliveryError, False), (502, TransientDeliveryError, False),
    (500, TransientDeliveryError, True), (504, TransientDeliveryError, True), (408, TransientDeliveryError, True),
    (400, PermanentDeliveryError, None), (404, PermanentDeliveryError, None)])
def test_a_status_is_transient_or_permanent_and_says_whether_it_was_taken(status, kind, maybe_sent):
    error = refused("mdms-1", status, f"answered {status}", "3")
    assert isinstance(error, kind)
    if maybe_sent is not None:
        assert error.maybe_sent is maybe_sent and error.retry_after_s == 3.0


def test_a_refused_connection_was_never_made_and_every_message_carries_its_ids():
    # Given a port nobody listens on  When a call is made  Then the error says nothing was sent
    with pytest.raises(requests.RequestException) as raised:
        requests.post(f"http://127.0.0.1:{free_port()}/x", timeout=2)
    assert never_connected(raised.value)
    envelope = Envelope(route_id="r", source="s", verb="created", noun="N", message_id="m-1", correlation_id="c-1")
    headers = message_headers(envelope, **{"X-Request-ID": "q-1"})
    assert (headers["X-Message-ID"], headers["X-Correlation-ID"], headers["X-Request-ID"]) == ("m-1", "c-1", "q-1")
    assert headers["traceparent"] == envelope.traceparent
