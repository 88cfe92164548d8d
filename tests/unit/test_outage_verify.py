"""The outage correlator's AMI pings (use case 3 through use case 7's on-demand reads): the
``bus-request`` source, ``bus.outages.verify`` (a verify decision as a request message, the
worker's reply as the engine's answers) and the HES stand-in's simulated outages."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from hypothesis import given, settings, strategies as st

from bus import naming, task_message
from bus.broker_users import grants_of
from bus.envelope import Envelope
from bus.errors import RouteValidationError
from bus.outages.verify import MAX_REPLY_BYTES, answers_of, is_reply, verify_message
from bus.requests import replies
from bus.requests.replies import error
from bus.routes import load_routes
from bus.routes.model import RouteTable
from bus.worker.task import reply_message
from simulators.hes import HesServer
from tests.support import ROOT, ROUTE_ENV

ROUTE = """\
use_case: 3
routes:
  - id: outages-verify-reads
    use_case: 7
    description: The outage correlator's AMI pings
    source: {system: outages, connector: bus-request, kind: meter-readings, timeout_s: 20}
    method: request-response
    destinations:
      - system: hes
        connector: hes-request
        operation: meter-readings
        assignment: "${GRIDBUS_METER_ASSIGNMENT}"
        hes: {hes-a: "${HES_A_URL}", hes-b: "${HES_B_URL}"}
        timeout_s: 10
    retry: {attempts: 2, first_delay_s: 1, max_delay_s: 5}
"""
M1, M2, M3 = "UPM00000001", "UPM00000002", "UPM00000003"
DECISION = {"type": "verify", "requestId": "OUT-FDR-0002-000004/verify", "outage": "OUT-FDR-0002-000004",
            "equipment": "FDR-0002", "meters": [M1, M2, M3]}
QUEUE = "gridbus.outages.outages-uc3.p0"


def routes_of(tmp_path, text: str, name: str = "uc3.yaml"):
    (tmp_path / name).write_text(textwrap.dedent(text))
    return load_routes([tmp_path], env=ROUTE_ENV)


@pytest.fixture
def route(tmp_path):
    return routes_of(tmp_path, ROUTE).get("outages-verify-reads")


# -- the bus-request source ---------------------------------------------------------------

def test_the_route_of_the_brief_loads_with_the_shipped_request_routes(tmp_path):
    (tmp_path / "uc6-7-8-requests.yaml").write_text((ROOT / "routes" / "uc6-7-8-requests.yaml").read_text())
    table = routes_of(tmp_path, ROUTE)
    verify = table.get("outages-verify-reads")
    assert verify.source.connector == "bus-request"
    assert verify.source.options == {"kind": "meter-readings", "timeout_s": 20.0}
    assert verify.waits_on_destination            # run by `gridbus worker --kind requests`


def test_the_timeout_defaults_to_20_s(tmp_path):
    table = routes_of(tmp_path, ROUTE.replace(", timeout_s: 20}", "}"))
    assert table.get("outages-verify-reads").source.options["timeout_s"] == 20.0


@pytest.mark.parametrize("source, why", [
    ("{system: outages, connector: bus-request, kind: commands}", "kind"),
    ("{system: outages, connector: bus-request}", "kind"),
    ("{system: outages, connector: bus-request, kind: meter-readings, path: outages/reads}", "path"),
    ("{system: outages, connector: bus-request, kind: meter-readings, timeout_s: 0}", "timeout_s"),
])
def test_bad_options_are_refused_at_load_time(tmp_path, source, why):
    text = ROUTE.replace("{system: outages, connector: bus-request, kind: meter-readings, timeout_s: 20}", source)
    with pytest.raises(RouteValidationError) as caught:
        routes_of(tmp_path, text)
    assert why in " ".join(str(e) for e in caught.value.errors)


def test_two_routes_of_one_process_for_one_kind_are_refused(tmp_path):
    second = ROUTE.split("routes:\n", 1)[1].replace("id: outages-verify-reads", "id: outages-verify-reads-2")
    with pytest.raises(RouteValidationError) as caught:
        routes_of(tmp_path, ROUTE + second)
    assert "claims the same source" in str(caught.value.errors[0])


def test_nothing_outside_the_bus_reaches_it(route):
    from bus import registry
    from bus.cli.gateway import SERVED

    assert "bus-request" not in SERVED                              # no gateway path
    connector = registry.connector("bus-request")
    assert not hasattr(connector, "broker_grants")                  # no broker user may publish on it
    assert not hasattr(connector, "serve")                          # the ingress runs nothing for it
    assert not hasattr(connector, "topology")                       # the reply queue is the process's
    assert grants_of(RouteTable((route,)), "outages") == []


def test_bus_code_does_not_import_connectors_or_transformers():
    probe = ("import sys, bus.outages.verify; "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('connectors', 'transformers')); "
             "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


# -- verify_message -------------------------------------------------------------------------

def test_the_request_message(route):
    exchange, key, body, props, headers = verify_message(route, DECISION, QUEUE, now=1_000_000.0)
    assert (exchange, key) == (naming.INGRESS_EXCHANGE, naming.route_routing_key("outages-verify-reads"))
    assert props["message_id"] == props["correlation_id"] == DECISION["requestId"]
    assert props["reply_to"] == QUEUE and props["type"] == "get.MeterReadings" and props["app_id"] == "outages"
    assert headers["task"] == naming.task_name("outages-verify-reads") and headers["id"] == DECISION["requestId"]
    assert headers[naming.H_REQUEST_KIND] == "meter-readings"
    assert headers[naming.H_EXPIRES_AT] == 1_000_020.0              # the route's timeout_s
    assert headers["gridbus-meters"] == [M1, M2, M3] and headers["gridbus-outage"] == "OUT-FDR-0002-000004"
    document = task_message.decode_body(body)
    assert document == {"Header": {"Verb": "get", "Noun": "MeterReadings", "MessageID": DECISION["requestId"],
                                   "CorrelationID": DECISION["requestId"], "Source": "outages"},
                        "Request": {"meters": [M1, M2, M3]}}
    # what the worker makes of it: a request with a reply address, expiring
    envelope = Envelope.from_headers(headers["id"], headers, props["reply_to"])
    assert envelope.reply_to == QUEUE and envelope.route_id == "outages-verify-reads"
    assert envelope.correlation == DECISION["requestId"]


def test_same_decision_same_message_id(route):
    first = verify_message(route, DECISION, QUEUE)
    time.sleep(0.01)
    again = verify_message(route, dict(DECISION), QUEUE)
    assert first[3]["message_id"] == again[3]["message_id"]
    assert first[2] == again[2]                                     # the same document


def test_reading_types_and_expiry(route):
    _, _, body, _, headers = verify_message(route, {**DECISION, "meters": [M1, M1, M2]}, QUEUE,
                                            reading_types=["0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"],
                                            expires_s=5, now=100.0)
    request = task_message.decode_body(body)["Request"]
    assert request == {"meters": [M1, M2], "readingTypes": ["0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"]}
    assert headers[naming.H_EXPIRES_AT] == 105.0


@pytest.mark.parametrize("decision", [
    {**DECISION, "type": "outage"}, {**DECISION, "requestId": ""}, {**DECISION, "requestId": None},
    {**DECISION, "requestId": "x" * 300}, {**DECISION, "meters": []}, {**DECISION, "meters": "UPM1"},
    {**DECISION, "meters": [M1, 7]}, {**DECISION, "meters": [M1, ""]}, "verify", None,
])
def test_decisions_it_cannot_ask_are_refused(route, decision):
    with pytest.raises(ValueError):
        verify_message(route, decision, QUEUE)


def test_only_a_bus_request_route_and_a_real_queue(tmp_path, route):
    table = routes_of(tmp_path, (ROOT / "routes" / "uc6-7-8-requests.yaml").read_text(), "r.yaml")
    with pytest.raises(ValueError, match="bus-request"):
        verify_message(table.get("mdms-1-reads-to-hes"), DECISION, QUEUE)
    for bad in ("", None):
        with pytest.raises(ValueError):
            verify_message(route, DECISION, bad)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            verify_message(route, DECISION, QUEUE, expires_s=bad)


# -- replies: made as the worker makes them -------------------------------------------------

def _request_envelope(route):
    _, _, _, props, headers = verify_message(route, DECISION, QUEUE)
    return Envelope.from_headers(headers["id"], headers, props["reply_to"])


def worker_reply(route, reply: dict, state: str | None = None) -> tuple[dict, dict, bytes]:
    """(properties, headers, body) of the reply as the request worker publishes it."""
    _queue, body, props, headers = reply_message(_request_envelope(route), reply, state)
    return props, headers, body


def read_reply(read: list[str], errors: list[dict], asked=(M1, M2, M3)) -> dict:
    blocks = [{"meter": m, "readings": [{"readingType": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
                                         "timeStamp": "2026-12-05T10:00:00Z", "value": 1.0}]} for m in read]
    part = {"Reply": {"Result": "OK"}, "Payload": {"MeterReadings": {"MeterReading": blocks}}}
    return replies.merge("MeterReadings", DECISION["requestId"], list(asked), [part], errors)


def unreachable(meter):
    return error("METER_UNREACHABLE", f"meter {meter} does not answer", meter)


def test_read_is_alive_unreachable_is_dead(route):
    props, headers, body = worker_reply(route, read_reply([M1, M3], [unreachable(M2)]))
    assert answers_of(props, headers, body) == (DECISION["requestId"], {M1: True, M2: False, M3: True})
    assert answers_of(props, headers, body, asked=[M1, M2, M3]) == (DECISION["requestId"],
                                                                   {M1: True, M2: False, M3: True})


def test_every_meter_dead(route):
    props, headers, body = worker_reply(route, read_reply([], [unreachable(m) for m in (M1, M2, M3)]))
    assert answers_of(props, headers, body) == (DECISION["requestId"], {M1: False, M2: False, M3: False})


@pytest.mark.parametrize("code", ["HES_UNAVAILABLE", "HES_UNREACHABLE", "TIMEOUT", "HES_ERROR", "HES_REFUSED",
                                  "UNKNOWN_METER", "UNKNOWN_HES", "NOT_CONFIRMED", "SOMETHING_NEW"])
def test_a_meter_its_hes_said_nothing_about_settles_nothing(route, code):
    """An HES down, slow or refusing is no evidence about its meters: the outage stays estimated,
    even when the other meters answered (a subset could close a real outage as a false alarm)."""
    reply = read_reply([M1], [unreachable(M2), error(code, f"hes-b: {code}", M3)])
    assert answers_of(*worker_reply(route, reply)) == (DECISION["requestId"], None)


def test_whole_request_failures_settle_nothing(route):
    rid = DECISION["requestId"]
    # the worker's own failures (task.finish_request, task.expired)
    for reply, state in ((replies.failed("MeterReadings", rid, "DESTINATION_UNAVAILABLE", "x", [M1, M2, M3]), None),
                         (replies.failed("MeterReadings", rid, "INVALID_REQUEST", "x", [M1, M2, M3]), None),
                         (replies.failed("MeterReadings", rid, "EXPIRED", "past its expiry", [M1, M2, M3]), "expired"),
                         (replies.failed("MeterReadings", rid, "HES_REFUSED", "x"), None),
                         ({"Reply": {"Error": [error("PENDING", "not yet")]}}, None)):   # no Result: no outcome
        assert answers_of(*worker_reply(route, reply, state)) == (rid, None), reply


def test_a_meter_not_asked_is_ignored_and_one_left_out_settles_nothing(route):
    props, headers, body = worker_reply(route, read_reply([M1, M3, "UPM99999999"], [unreachable(M2)]))
    assert answers_of(props, headers, body, asked=[M1, M2, M3])[1] == {M1: True, M2: False, M3: True}
    props, headers, body = worker_reply(route, read_reply([M1], [unreachable(M2)]))
    assert answers_of(props, headers, body, asked=[M1, M2, M3])[1] is None


def test_a_contradictory_reply_settles_nothing(route):
    props, headers, body = worker_reply(route, read_reply([M1, M2, M3], [unreachable(M2)]))
    assert answers_of(props, headers, body)[1] is None


def test_a_block_without_readings_is_not_an_answer(route):
    reply = read_reply([M1, M3], [unreachable(M2)])
    reply["Payload"]["MeterReadings"]["MeterReading"][0]["readings"] = []
    assert answers_of(*worker_reply(route, reply))[1] is None


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b'"text"', b'{"Reply": "OK"}', b'{"Reply": {"Result": "MAYBE"}}',
    b'{"Reply": {"Result": "OK", "Error": "x"}}', b'{"Reply": {"Result": "OK"}}',
    b'{"Reply": {"Result": "OK"}, "Payload": {"MeterReadings": {"MeterReading": "x"}}}',
    b'{"Reply": {"Result": "OK"}, "Payload": {"MeterReadings": {"MeterReading": [{"meter": 5, "readings": [1]}]}}}',
    b'{"Reply": {"Result": "PARTIAL", "Error": [7, {"meter": ["x"]}]}}',
    b'\xff\xfe\x00', b"[" * 100_000,
])
def test_hostile_bodies_settle_nothing(route, body):
    props, headers, _ = worker_reply(route, read_reply([M1], []))
    assert answers_of(props, headers, body) == (DECISION["requestId"], None)


def test_a_huge_reply_is_not_read(route):
    props, headers, _ = worker_reply(route, read_reply([M1], []))
    big = b'{"Reply": {"Result": "OK"}, "pad": "' + b"x" * MAX_REPLY_BYTES + b'"}'
    assert answers_of(props, headers, big) == (DECISION["requestId"], None)


def test_a_message_without_correlation_id_is_not_a_reply():
    for props in ({}, {"correlation_id": ""}, {"correlation_id": 5}, {"correlation_id": "x" * 300}):
        with pytest.raises(ValueError):
            answers_of(props, {}, b"{}")


def test_a_str_body_and_bytes_properties_are_read(route):
    props, headers, body = worker_reply(route, read_reply([M1, M2, M3], []))
    props = {**props, "correlation_id": props["correlation_id"].encode()}
    assert answers_of(props, headers, body.decode())[1] == {M1: True, M2: True, M3: True}


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["Reply", "Result", "Error", "meter", "code", "Payload", "MeterReadings",
                                         "MeterReading", "readings", "OK", "FAILED", "PARTIAL", M1]),
                        inner, max_size=4), max_leaves=30),
       st.one_of(st.none(), st.text(max_size=10)))
def test_any_json_is_an_answer_or_none_never_a_crash(document, state):
    result = answers_of({"correlation_id": "r/verify"}, {naming.H_REPLY_STATE: state} if state else {},
                        json.dumps(document).encode())
    assert result[0] == "r/verify"
    assert result[1] is None or (isinstance(result[1], dict)
                                 and all(isinstance(k, str) and isinstance(v, bool) for k, v in result[1].items()))


# -- is_reply ------------------------------------------------------------------------------

def test_is_reply(route):
    props, headers, _ = worker_reply(route, read_reply([M1], []))
    assert is_reply(props, headers) and is_reply(props, headers, route_id="outages-verify-reads")
    assert not is_reply(props, headers, route_id="another-route")
    expired_props, expired_headers, _ = worker_reply(route, replies.failed("MeterReadings", "x", "EXPIRED", "x"),
                                                     "expired")
    assert is_reply(expired_props, expired_headers)
    _, _, _, request_props, request_headers = verify_message(route, DECISION, QUEUE)
    assert not is_reply(request_props, request_headers)             # the request itself
    assert not is_reply({"message_id": "OUT-1/3"}, {"gridbus-route": "outages-to-adms"})   # an outage message
    assert not is_reply({}, {}) and not is_reply({"correlation_id": "a", "message_id": "b"}, None)
    forged = {"correlation_id": "a", "message_id": "a.reply"}
    assert is_reply(forged, {}) and not is_reply(forged, {"task": "gridbus.route.x"})


# -- the HES stand-in's outages ------------------------------------------------------------

@pytest.fixture
def hes():
    with HesServer(port=0, name="hes-a") as server:
        yield server


def _read(hes, *meters):
    return requests.post(f"{hes.url}/requests/meter-readings", timeout=5,
                         json={"Header": {"MessageID": "m"}, "Request": {"meters": list(meters)}}).json()


def test_hes_meters_out_do_not_answer_until_restored(hes):
    assert requests.post(f"{hes.url}/_outages", json={"meters": [M2, M3]}, timeout=5).json() == \
        {"out": [M2, M3], "count": 2}
    reply = _read(hes, M1, M2)
    assert reply["Reply"]["Result"] == "PARTIAL"
    assert [(e["code"], e["meter"]) for e in reply["Reply"]["Error"]] == [("METER_UNREACHABLE", M2)]
    assert [b["meter"] for b in reply["Payload"]["MeterReadings"]["MeterReading"]] == [M1]
    # /_meters "unreachable" is another setting: clearing it restores no meter out
    requests.post(f"{hes.url}/_meters", json={"unreachable": []}, timeout=5).raise_for_status()
    assert requests.get(f"{hes.url}/_outages", timeout=5).json() == {"out": [M2, M3], "count": 2}
    assert requests.post(f"{hes.url}/_outages", json={"restore": [M2]}, timeout=5).json()["out"] == [M3]
    assert _read(hes, M1, M2)["Reply"]["Result"] == "OK"
    assert requests.post(f"{hes.url}/_outages", json={"clear": True, "meters": [M1]}, timeout=5).json() == \
        {"out": [M1], "count": 1}
    requests.post(f"{hes.url}/_reset", timeout=5).raise_for_status()
    assert requests.get(f"{hes.url}/_outages", timeout=5).json() == {"out": [], "count": 0}


def test_hes_commands_do_not_execute_on_a_meter_out(hes):
    requests.post(f"{hes.url}/_outages", json={"meters": [M1]}, timeout=5).raise_for_status()
    reply = requests.post(f"{hes.url}/requests/commands", timeout=5, json={
        "Header": {}, "Request": {"commandId": "c-1", "action": "disconnect", "meters": [M1]}}).json()
    assert reply["Reply"]["Result"] == "FAILED"
    assert reply["Payload"]["EndDeviceControls"]["results"][0]["error"] == "METER_UNREACHABLE"


@pytest.mark.parametrize("body", [b"", b"{}", b"[]", b"not json", b'{"meters": "UPM1"}', b'{"meters": [1]}',
                                  b'{"meters": [""]}', b'{"restore": {}}', b'{"clear": 1}', b'{"out": []}'])
def test_hes_bad_outage_controls_are_refused(hes, body):
    answer = requests.post(f"{hes.url}/_outages", data=body, timeout=5)
    assert answer.status_code == 400 and answer.json()["Reply"]["Error"][0]["code"] == "BAD_CONTROL"
    assert requests.get(f"{hes.url}/_outages", timeout=5).json()["count"] == 0
