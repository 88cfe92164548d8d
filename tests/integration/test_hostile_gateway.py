"""Hostile bodies on a real gateway process: deep JSON is a 400 with a FAILED reply, never a 500 (issue 16)."""
from __future__ import annotations

import json
import textwrap

import pika
import pytest
import requests

from bus.documents import MAX_DEPTH
from tests.support import run_cli, start_gateway

pytestmark = pytest.mark.broker

PUSH_ROUTE, REQUEST_ROUTE = "hes-a-alarms-push", "billing-1-reads"


@pytest.fixture
def gateway(bus_env, tmp_path):
    # Given a gateway with an alarm push route and an on-demand read request route, and no worker:
    # whatever it publishes stays in the route queues, to be counted
    logs = tmp_path / "logs"
    logs.mkdir()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "hostile.yaml").write_text(textwrap.dedent(f"""\
        use_case: 2
        routes:
          - id: {PUSH_ROUTE}
            source: {{system: hes-a, connector: http-push, path: hes-a/alarms}}
            method: push
            message: {{noun: EndDeviceEvents}}
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}}
          - id: {REQUEST_ROUTE}
            use_case: 7
            source: {{system: billing-1, connector: http-request, path: billing-1/meter-readings,
                     kind: meter-readings, timeout_s: 2}}
            method: request-response
            destinations:
              - {{system: mdms-1, connector: rest-request, url: "http://127.0.0.1:9/requests/meter-readings"}}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip() for s in ("hes-a", "billing-1")}
    server, url = start_gateway(env, logs)
    yield {"url": url, "keys": keys, "env": env, "server": server}
    server.stop()


def queued(g, route_id: str) -> int:
    """Messages in the route's queue now (the declare-ok count, not the management API's sampled one)."""
    conn = pika.BlockingConnection(pika.URLParameters(g["env"]["GRIDBUS_BROKER_URL"]))
    try:
        return conn.channel().queue_declare(f"gridbus.route.{route_id}", passive=True).method.message_count
    finally:
        conn.close()


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def alarm(n: int, extra: str = "1") -> str:
    return ('{"alarm_id": "hes-a-%06d", "meter": "UPM%08d", "code": 101, "occurred_at": '
            '"2026-11-01T10:15:02+05:30", "extra": %s}' % (n, n, extra))


def post(g, path: str, body: str, system: str):
    return requests.post(f"{g['url']}{path}", data=body.encode(), timeout=30,
                         headers={"X-API-Key": g["keys"][system], "Content-Type": "application/json"})


def assert_refused_as_too_deep(answer, depth: int):
    assert answer.status_code == 400, (answer.status_code, answer.text[:500])
    reply = answer.json()["Reply"]
    assert reply["Result"] == "FAILED"
    [error] = reply["Error"]
    assert error["code"] == "TOO_DEEP"
    assert error["reason"] == f"JSON nested {depth} levels deep; at most {MAX_DEPTH} are taken"


@pytest.mark.parametrize("depth", [900, 1_000, 100_000])
def test_deep_json_pushed_or_requested_is_a_400_naming_the_limit_and_nothing_is_published(gateway, depth):
    # When HES-A pushes an alarm whose extra key nests `depth` levels (900 was accepted with 202 and later
    # killed the worker; 1,000 and 100,000 were a 500), and billing asks for a read with such a key
    pushed = post(gateway, "/v1/push/hes-a/alarms", alarm(1, nested(depth - 1)), "hes-a")
    bare = post(gateway, "/v1/push/hes-a/alarms", "[" * depth + "]" * depth, "hes-a")
    asked = post(gateway, "/v1/requests/billing-1/meter-readings",
                 '{"Header": {}, "Request": {"meters": ["UPM00000001"], "x": %s}}' % nested(depth - 2),
                 "billing-1")
    # Then each is a 400 with a FAILED reply naming its depth and the limit
    assert_refused_as_too_deep(pushed, depth)
    assert_refused_as_too_deep(bare, depth)
    assert_refused_as_too_deep(asked, depth)
    # and nothing reached either route, while a good alarm right after is published
    assert post(gateway, "/v1/push/hes-a/alarms", alarm(2), "hes-a").status_code == 202
    assert queued(gateway, PUSH_ROUTE) == 1
    assert queued(gateway, REQUEST_ROUTE) == 0
    # and the gateway logged no traceback
    assert "Traceback" not in gateway["server"].log()


def test_a_document_at_the_depth_limit_is_still_accepted(gateway):
    # Given an alarm whose extra key takes the document to exactly MAX_DEPTH levels
    body = alarm(3, nested(MAX_DEPTH - 1))
    assert body.count("{") == MAX_DEPTH
    # When pushed  Then accepted and published
    answer = post(gateway, "/v1/push/hes-a/alarms", body, "hes-a")
    assert answer.status_code == 202, answer.text
    assert queued(gateway, PUSH_ROUTE) == 1


@pytest.mark.parametrize("body", [
    "[" + "7" * 5000 + "]",                       # an integer Python will not read: was a ValueError, a 500
    "[" * 100_000,                                # never closed
    '"\\' + "[" * 5000,                           # an unterminated string full of brackets
    json.dumps({"alarms": "[" * 10_000}),         # brackets inside a string do not count: a 400 for its shape
])
def test_other_hostile_json_bodies_are_4xx_with_a_failed_reply_never_500(gateway, body):
    # When HES-A pushes it, and billing sends it as a request
    for path, system in (("/v1/push/hes-a/alarms", "hes-a"), ("/v1/requests/billing-1/meter-readings", "billing-1")):
        answer = post(gateway, path, body, system)
        # Then a 4xx with a FAILED reply
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:500])
        assert answer.json()["Reply"]["Result"] == "FAILED"
    # and nothing was published
    assert queued(gateway, PUSH_ROUTE) == 0 and queued(gateway, REQUEST_ROUTE) == 0
    assert "Traceback" not in gateway["server"].log()
