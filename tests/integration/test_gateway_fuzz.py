"""The gateway fuzzed from its own OpenAPI document (schemathesis) finds no 500 (issue 16).

A real `gridbus gateway` process serves the shipped routes (routes/*.yaml); the
schema is read from its ``GET /openapi.json`` and every operation is called with
requests generated from it, valid (positive) and invalid (negative), each with
a valid X-API-Key of the system the path belongs to.  Each answer must be:

- never a 5xx, except the documented 503 (BUSY, BROKER_UNAVAILABLE) and 504 (TIMEOUT);
- JSON, with a ``Reply`` (every answer but the request lookups, which say what they hold);
- a status the document declares, of the content type and schema it declares;
- a 4xx for a request the document says is invalid (negative data);
- when a call succeeds, a 401 for the same call without a key or with a wrong one
  (schemathesis' ignored-auth probe).

No worker runs and the destinations are unreachable: what is checked is the
gateway's own answers.  A request that is valid waits for its reply for a
shortened 0.1 s and is answered 504 with its request id.  Examples are
derandomized, so CI sends the same requests every run; their number per
operation bounds the time.
"""
from __future__ import annotations

import os
import traceback
import uuid

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from bus.routes import load_routes
from tests.support import ROOT, run_cli, start_gateway

pytestmark = pytest.mark.broker

EXAMPLES = 25  # per operation and mode: 10 operations x 2 modes x 25, about 30 s on two cores
WAIT_S = 0.1   # the request routes' timeout_s here: a valid request is answered 504 this soon
UNREACHABLE = "http://127.0.0.1:9"
# documented 5xx answers: the bus is away or a system has too many requests waiting (503), no
# reply in time (504); each with a Reply naming the code
DOCUMENTED_5XX = {503: {"BUSY", "BROKER_UNAVAILABLE"}, 504: {"TIMEOUT"}}


@pytest.fixture(scope="module")
def module_env(rabbitmq_proc, management_url, tmp_path_factory):
    """``bus_env`` for the tests of this module together: one gateway serves both."""
    vhost, auth = f"t-fuzz-{uuid.uuid4().hex[:8]}", ("guest", "guest")
    requests.put(f"{management_url}/api/vhosts/{vhost}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{management_url}/api/permissions/{vhost}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    tmp = tmp_path_factory.mktemp("gateway-fuzz")
    (tmp / "home").mkdir()
    yield tmp, {**os.environ, "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/{vhost}",
                "GRIDBUS_MANAGEMENT_URL": management_url.replace("http://", "http://guest:guest@"),
                "GRIDBUS_HOME": str(tmp / "home"), "GRIDBUS_ENV_FILE": str(tmp / "home" / "none.env"),
                "GRIDBUS_INBOX": str(tmp / "inbox"), "GRIDBUS_OUTBOX": str(tmp / "outbox"),
                "PYTHONUNBUFFERED": "1"}
    requests.delete(f"{management_url}/api/vhosts/{vhost}", auth=auth, timeout=30)


@pytest.fixture(scope="module")
def gateway(module_env):
    # Given the shipped routes (request routes waiting 0.1 s), every destination unreachable
    tmp_path, bus_env = module_env
    logs, routes = tmp_path / "logs", tmp_path / "routes"
    logs.mkdir()
    routes.mkdir()
    for shipped in sorted((ROOT / "routes").glob("*.yaml")):
        if shipped.name.endswith("_test.yaml"):  # route tests, not routes
            continue
        doc = yaml.safe_load(shipped.read_text())
        for route in doc["routes"]:
            if route["source"]["connector"] == "http-request":
                route["source"]["timeout_s"] = WAIT_S
        (routes / shipped.name).write_text(yaml.safe_dump(doc))
    assignment = tmp_path / "assignment.csv"
    assignment.write_text("meter,hes\nUPM00000001,hes-a\nUPM00000002,hes-b\n")
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes), "GRIDBUS_METER_ASSIGNMENT": str(assignment),
           **{name: UNREACHABLE for name in ("MDMS_1_URL", "HES_A_URL", "HES_B_URL", "WFM_URL", "FMS_URL",
                                             "ADMS_URL", "BILLING_1_URL", "BILLING_2_URL")}}
    systems = {r.source.options["path"]: r.source.system for r in load_routes([routes], env)
               if r.source.connector in ("http-push", "http-request", "gis-push")}
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip() for s in set(systems.values())}
    # no rate limit: a 429 would depend on how fast this machine is, and CI must see the same answers
    server, url = start_gateway(env, logs, "--rate-per-system", "0", timeout_s=60)
    yield {"url": url, "systems": systems, "keys": keys, "server": server}
    server.stop()


def key_for(g, path: str) -> str:
    """The key of the system whose route takes ``path``; a billing key for the request lookups."""
    for prefix in ("/v1/push/", "/v1/requests/"):
        route_path = path.removeprefix(prefix)
        if path.startswith(prefix) and route_path in g["systems"]:
            return g["keys"][g["systems"][route_path]]
    return g["keys"]["billing-1"]


def answered_as_documented(response, case) -> None:
    """No 5xx but the documented ones; JSON, with a Reply saying why when it is not a success.
    (Each message's first line says what is wrong, without values: failures are grouped by it.)"""
    status, text = response.status_code, response.text[:500]
    assert "json" in ",".join(response.headers.get("content-type", [])), f"not JSON\n{status} {text}"
    body = response.json()
    reply = body.get("Reply") if isinstance(body, dict) else None
    if status >= 500:
        codes = {e.get("code") for e in (reply or {}).get("Error") or []}
        assert status in DOCUMENTED_5XX and codes & DOCUMENTED_5XX[status], f"an undocumented {status}\n{text}"
    if case.path in ("/v1/requests/{request_id}", "/v1/requests") and status < 400:
        return  # a lookup answers with what it found, not with a Reply
    assert isinstance(reply, dict), f"{status} without a Reply\n{text}"
    errors = reply.get("Error") or []
    if status == 504 or "Result" not in reply:  # no outcome yet: pending, never a Result
        assert body.get("pending") is True and body.get("request_id") and errors, f"{status} pending without " \
            f"its request id and reason\n{text}"
    elif status >= 400:
        assert reply["Result"] == "FAILED" and errors and all(e.get("reason") for e in errors), \
            f"{status} without a FAILED Reply and a reason\n{text}"


CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]
# the GIS push refuses a change that breaks the change schema on its own (INVALID, in a 200 reply),
# not the document (docs/network-formats.md): such an answer is checked here instead
GIS_PATHS = {"/v1/push/gis/network"}
ACCEPTED_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]


def negated_only_the_key(case) -> bool:
    """A negative case whose one mutation was to drop X-API-Key, which ``call`` puts back: what is
    sent is a valid request (a missing key is ignored_auth's business)."""
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    return getattr(data, "parameter", None) == "X-API-Key"


def refused_change_by_change(response, case, mode) -> bool:
    """A negative GIS document answered 200: true if its Reply refuses changes as INVALID."""
    if case.path not in GIS_PATHS or mode is not GenerationMode.NEGATIVE or response.status_code != 200:
        return False
    reply = response.json().get("Reply") or {}
    codes = {e.get("code") for e in reply.get("Error") or []}
    assert reply.get("Result") in ("FAILED", "PARTIAL") and "INVALID" in codes, \
        f"a schema-violating change document answered 200 without an INVALID change\n{response.text[:500]}"
    return True


def _kind(exc: BaseException) -> str:
    """What went wrong, without the values: failures of one kind are reported once."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(sorted({_kind(e) for e in exc.exceptions}))
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{exc.__class__.__name__}: {lines[0][:120] if lines else ''}"


def fuzz(g, operation, mode: GenerationMode) -> dict[str, str]:
    """Run ``EXAMPLES`` generated calls of one operation; per kind of failure, its first call."""
    failures: dict[str, str] = {}
    key = key_for(g, operation.path)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=["explicit", "generate"])
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case):
        # the system's key, also where a negative case made one up: what is fuzzed is the request
        case.headers = {**(case.headers or {}), "X-API-Key": key}
        response = None
        try:
            response = case.call(base_url=g["url"], timeout=30)
            answered_as_documented(response, case)
            accepted = negated_only_the_key(case) or refused_change_by_change(response, case, mode)
            checks = ACCEPTED_CHECKS if accepted else CHECKS
            case.validate_response(response, checks=checks, headers={"X-API-Key": key},
                                   transport_kwargs={"base_url": g["url"], "headers": {"X-API-Key": key}})
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, then reported together
            answered = "nothing" if response is None else f"{response.status_code}: {response.text[:500]}"
            failures.setdefault(f"{mode.value} {case.method} {case.path}: {_kind(exc)}",
                                f"{str(exc)[:1500]}\n  reproduce: {case.as_curl_command(headers={'X-API-Key': key})}"
                                f"\n  answered {answered}")

    call()
    return failures


def test_every_documented_operation_answers_as_documented_and_never_500(gateway):
    # Given the gateway's own OpenAPI document
    schema = schemathesis.openapi.from_url(f"{gateway['url']}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/v1/push/hes-a/alarms", "/v1/requests/billing-1/commands", "/v1/requests/{request_id}"} <= {
        op.path for op in operations}
    # When every operation is called with valid and invalid requests generated from it
    failures: dict[str, str] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                failures.update(fuzz(gateway, operation, mode))
            except Exception:  # noqa: BLE001 - generation itself failed: report it with the rest
                where = f"{mode.value} {operation.method} {operation.path}: generating"
                failures[where] = traceback.format_exc()[-1500:]
    # Then every answer was as documented, and the gateway logged no traceback
    assert not failures, f"{len(failures)} kinds of failure:\n" + "\n".join(failures) + "\n\n" + "\n\n".join(
        f"{kind}\n{detail}" for kind, detail in failures.items())
    assert "Traceback" not in gateway["server"].log(), gateway["server"].log()[-3000:]


# --- a corpus of hostile requests, each answered 4xx with a reason -----------------------------

PLAIN = "aiohttp's own plain 400"
BEYOND_64_BITS = str(2 ** 64)  # one more than orjson, which stores and sends requests, writes
READ = '{"Header": {%s}, "Request": {"meters": ["UPM00000001"]%s}}'
COMMAND = ('{"Request": {"commandId": "corpus-7f3a-%s", "action": "credit-update", "meters": ["UPM00000001"], '
           '"params": %s}}')
ALARM = ('{"alarm_id": "a-1", "meter": "UPM00000001", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30"%s}')
EDE = "http://iec.ch/TC57/2011/EndDeviceEvents#"
XML_ALARM = (f'<EndDeviceEvents xmlns="{EDE}"><EndDeviceEvent><mRID>hes-c-1</mRID><createdDateTime>'
             '2026-11-01T10:15:02+05:30</createdDateTime><Assets><mRID>UPM00000901</mRID></Assets>'
             '<EndDeviceEventType ref="3.12.29.212"/></EndDeviceEvent></EndDeviceEvents>')
READS, COMMANDS = "/v1/requests/billing-1/meter-readings", "/v1/requests/billing-1/commands"
ALARMS, XML_ALARMS = "/v1/push/hes-a/alarms", "/v1/push/hes-c/alarms"
# (what, path, body, content type, extra headers, the answer's status, its error code)
CORPUS = [
    ("an integer beyond 64 bits in a request's Header", READS, READ % (f'"x": {BEYOND_64_BITS}', ""),
     "application/json", {}, 400, "NUMBER_OUT_OF_RANGE"),
    ("an integer beyond 64 bits where a request has no field", READS, READ % ("", f', "x": [{BEYOND_64_BITS}]'),
     "application/json", {}, 400, "NUMBER_OUT_OF_RANGE"),
    ("a credit of an integer beyond 64 bits", COMMANDS, COMMAND % (1, '{"amount": -%s}' % BEYOND_64_BITS),
     "application/json", {}, 400, "NUMBER_OUT_OF_RANGE"),
    ("an integer of 4,301 digits in a request", READS, READ % ("", ', "x": 1' + "0" * 4300), "application/json",
     {}, 400, "NUMBER_OUT_OF_RANGE"),
    ("an integer of 4,301 digits in a push", ALARMS, ALARM % (', "x": 1' + "0" * 4300), "application/json", {},
     400, "MALFORMED_JSON"),
    ("an integer beyond 64 bits in a push travels", ALARMS, ALARM % f', "x": {BEYOND_64_BITS}',
     "application/json", {}, 202, None),
    ("a lone surrogate escape in a meter id", READS, '{"Request": {"meters": ["UPM\\ud800"]}}',
     "application/json", {}, 400, "MALFORMED_JSON"),
    ("a lone surrogate escape in an alarm's unknown field", ALARMS, ALARM % ', "note": "\\udc00"',
     "application/json", {}, 400, "MALFORMED_JSON"),
    ("a lone surrogate in UTF-16 JSON", ALARMS, ("[" + ALARM % "" + "]").encode("utf-16-le")[:-2]
     + b"\x00\xd8]\x00", "application/json", {}, 400, "MALFORMED_JSON"),
    ("a surrogate pair escape (an emoji) is a character", ALARMS, ALARM % ', "note": "\\ud83d\\ude00"',
     "application/json", {}, 202, None),
    ("NaN", COMMANDS, COMMAND % (2, '{"amount": NaN}'), "application/json", {}, 400, "IMPLAUSIBLE_VALUE"),
    ("-Infinity", COMMANDS, COMMAND % (3, '{"amount": -Infinity}'), "application/json", {}, 400,
     "IMPLAUSIBLE_VALUE"),
    ("1e999 (infinite as a float)", COMMANDS, COMMAND % (4, '{"amount": 1e999}'), "application/json", {}, 400,
     "IMPLAUSIBLE_VALUE"),
    ("bytes that are not UTF-8", ALARMS, b'{"alarms": ["\xff\xfe"]}', "application/json", {}, 400,
     "MALFORMED_JSON"),
    ("JSON null", READS, "null", "application/json", {}, 400, "INVALID_REQUEST"),
    ("a JSON string", ALARMS, '"alarm"', "application/json", {}, 400, "MALFORMED_JSON"),
    ("an empty body", READS, "", "application/json", {}, 400, "MALFORMED_JSON"),
    ("a form instead of JSON", READS, "a=b", "application/x-www-form-urlencoded", {}, 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("an X-User of 65 characters", READS, READ % ("", ""), "application/json", {"X-User": "a" * 65}, 400,
     "INVALID_USER"),
    ("an X-User in Latin-1", READS, READ % ("", ""), "application/json", {"X-User": "Jos\xe9"}, 400, "INVALID_USER"),
    # HTTP aiohttp cannot parse is answered by it, before the gateway sees a request (aio-libs/aiohttp#3287)
    ("an X-User with a control character", READS, READ % ("", ""), "application/json", {"X-User": "al\x7fice"},
     400, PLAIN),
    ("a meter id of 100,000 characters", READS, '{"Request": {"meters": ["%s"]}}' % ("U" * 100_000),
     "application/json", {}, 400, "INVALID_REQUEST"),
    # the gateway reads XML as UTF-8 itself, so a declaration of another encoding is not used
    ("XML declaring an encoding nobody knows", XML_ALARMS,
     '<?xml version="1.0" encoding="nonsense"?>' + XML_ALARM, "application/xml", {}, 202, None),
    ("XML with a character reference to no character", XML_ALARMS, XML_ALARM.replace("hes-c-1", "&#xD800;"),
     "application/xml", {}, 400, "INVALID_DOCUMENT"),
    ("XML in UTF-8 with an encoded surrogate", XML_ALARMS, XML_ALARM.encode().replace(b"hes-c-1", b"\xed\xa0\x80"),
     "application/xml", {}, 400, "MALFORMED_XML"),
    # elements the decoder does not read may nest deep: it walks none of them (nor does anything after it)
    ("XML nested 10,000 elements deep where nothing is read", XML_ALARMS,
     XML_ALARM.replace("<mRID>hes-c-1</mRID>", "<a>" * 10_000 + "</a>" * 10_000), "application/xml", {}, 202, None),
    # aiohttp's route pattern ".*" stops at a newline: its own plain 404 answered these
    ("a path with an encoded newline", "/v1/push/hes-a%0A/alarms", ALARM % "", "application/json", {}, 404,
     "UNKNOWN_ROUTE"),
    ("XML nested 10,000 elements deep around the events", XML_ALARMS,
     XML_ALARM.replace("<EndDeviceEvent>", "<a>" * 10_000 + "</a>" * 10_000 + "<EndDeviceEvent>"),
     "application/xml", {}, 202, None),
]


@pytest.mark.parametrize("what, path, body, content_type, headers, status, code", CORPUS,
                         ids=[c[0] for c in CORPUS])
def test_a_corpus_of_hostile_requests_is_answered_with_a_reason_and_never_500(gateway, what, path, body,
                                                                              content_type, headers, status, code):
    # Given a body of the kind named, sent with the key of the path's system
    data = body.encode() if isinstance(body, str) else body
    logged = len(gateway["server"].log())
    # When it is sent
    answer = requests.post(f"{gateway['url']}{path}", data=data, timeout=30,
                           headers={"X-API-Key": key_for(gateway, path), "Content-Type": content_type, **headers})
    # Then the answer is the status expected, JSON, with a Reply naming the code and a reason
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    reply = answer.json()["Reply"] if code is not PLAIN else {}
    if code not in (None, PLAIN):
        assert reply["Result"] == "FAILED" and reply["Error"][0]["code"] == code, reply
        assert reply["Error"][0]["reason"]
    # and the gateway logged no traceback for it
    assert "Traceback" not in gateway["server"].log()[logged:], gateway["server"].log()[logged:][-3000:]
