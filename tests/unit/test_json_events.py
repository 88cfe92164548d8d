"""json_events: an alarm JSON format described in the route decodes like hes_alarm_json.

One test per option with a small payload in the format it serves, hostile input, route-load
errors (file:line, did you mean) and the equivalence with hes_alarm_json on simulator bursts.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import random
import textwrap
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.canonical import validate_document
from bus.errors import DecodeError, MessageError, RouteValidationError
from bus.options import field_names
from bus.routes import load_routes
from bus.transform import TransformContext
from simulators.hes_alarms import Network, burst, feeder_trip, mixed
from tests.support import ROUTE_ENV
from tests.unit.test_decoders_hypothesis import JSON_VALUES, PROPERTY, near
from transformers.hes_alarm_json import HesAlarmJsonDecoder
from transformers.json_events import (AlarmFields, JsonEventsDecoder, JsonEventsOptions, JsonEventsSpec,
                                      compiled)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "routes" / "uc2-4-5-alarms.yaml"
AT = dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))


def decode(payload, spec: dict | None = None, source: str = "hes-x") -> tuple[dict, TransformContext]:
    context = TransformContext("vendor-alarms", source, "msg-1", "corr-1",
                               options={} if spec is None else {"json_events": spec})
    return JsonEventsDecoder()(payload, context), context


def reasons(context: TransformContext) -> list[tuple[int | None, str]]:
    return [(r.line, r.reason) for r in context.rejections]


def shipped_options() -> dict:
    return load_routes([SHIPPED], env=ROUTE_ENV).get("hes-a-alarms").options


# ----------------------------------------------------------------------- the options, one by one

def test_without_options_it_reads_the_bus_own_alarm_json():
    # Given the example alarm format of docs/alarm-formats.md and no json_events option
    payload = {"hes": "hes-x", "alarms": [
        {"alarm_id": "x-1", "meter": "UPM00012345", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30",
         "received_at": "2026-11-01T10:15:04+05:30", "details": {"voltage": 0, "phase": "R"}}]}
    # When decoded
    doc, context = decode(payload)
    # Then the event is the canonical one hes_alarm_json makes, key order included
    assert orjson.dumps(doc) == orjson.dumps({"noun": "EndDeviceEvents", "source": "hes-x", "EndDeviceEvent": [
        {"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101, "createdDateTime": "2026-11-01T04:45:02Z",
         "receivedDateTime": "2026-11-01T04:45:04Z", "eventClass": ["outage", "critical"], "severity": "critical",
         "alarmId": "x-1", "details": {"voltage": 0, "phase": "R"}}]})
    assert context.rows_in == 1 and context.meters == {"UPM00012345"} and not context.rejections


VENDOR_X = {  # a vendor with its wrapper, nested fields and its own code strings
    "items": "payload.events",
    "fields": {"meter": "device.serial", "code": "event.type", "occurred": "event.at", "received": "hes.rx",
               "alarm_id": "id", "details": "event.measurements.0"},
    "codes": {"PWR_FAIL": 101, "COVER_OPEN": "3.12.29.212", "MAG": "201", 17: 205},
}


def test_nested_paths_and_a_vendor_code_mapping():
    # Given vendor X's alarms: nested objects, an array step, its own codes (text, an mRID, a number)
    payload = {"payload": {"events": [
        {"id": "x-1", "device": {"serial": "UPM1"}, "hes": {"rx": "2026-11-01T10:15:04+05:30"},
         "event": {"type": "PWR_FAIL", "at": "2026-11-01T10:15:02+05:30", "measurements": [{"voltage": 0}]}},
        {"id": 2, "device": {"serial": "UPM2"}, "event": {"type": " COVER_OPEN ", "at": "2026-11-01T04:40:00Z"}},
        {"id": "x-3", "device": {"serial": "UPM3"}, "event": {"type": "MAG", "at": "2026-11-01T04:40:00Z"}},
        {"id": "x-4", "device": {"serial": "UPM4"}, "event": {"type": 17, "at": "2026-11-01T04:40:00Z"}},
        {"id": "x-5", "device": {"serial": "UPM5"}, "event": {"type": "17", "at": "2026-11-01T04:41:00Z"}},
        {"id": "x-6", "device": {"serial": "UPM6"}, "event": {"type": 101, "at": "2026-11-01T04:40:00Z"}},
    ]}}
    # When decoded with VENDOR_X
    doc, context = decode(payload, VENDOR_X)
    # Then each mapped code is its IS 15959 event, with class and severity from the catalogue
    events = doc["EndDeviceEvent"]
    assert [(e["meter"], e["isCode"], e["eventType"]) for e in events] == [
        ("UPM1", 101, "3.26.0.85"), ("UPM2", 251, "3.12.29.212"), ("UPM3", 201, "3.12.66.242"),
        ("UPM4", 205, "3.26.1205.242"), ("UPM5", 205, "3.26.1205.242")]
    assert events[0]["receivedDateTime"] == "2026-11-01T04:45:04Z" and events[0]["details"] == {"voltage": 0}
    assert events[1]["alarmId"] == "2" and events[1]["severity"] == "critical"
    # and a number that is an IS 15959 code but not one of the vendor's is not taken for one
    assert reasons(context) == [(5, "meter UPM6: unknown vendor event code 101")]
    assert validate_document(doc) == doc


@pytest.mark.parametrize("time_format, occurred, received", [
    ("epoch", 1793504102, "1793504104"),              # seconds: an integer or a digit string
    ("epoch", 1793504102.9, 1793504104),              # a fraction of a second is cut, as in ISO times
    ("epoch_ms", 1793504102123, "1793504104999"),
])
def test_epoch_times_are_utc_whatever_the_zone(time_format, occurred, received):
    # Given a vendor sending epoch times, and a route that also names a zone
    alarm = {"meter": "UPM1", "code": 101, "occurred_at": occurred, "received_at": received}
    # When decoded
    doc, _ = decode([alarm], {"time_format": time_format, "time_zone": "America/New_York"})
    # Then the instants are those seconds in UTC: an epoch has no zone
    (event,) = doc["EndDeviceEvent"]
    assert (event["createdDateTime"], event["receivedDateTime"]) == ("2026-11-01T03:35:02Z", "2026-11-01T03:35:04Z")


def test_a_strftime_pattern_in_an_iana_zone_follows_its_summer_time():
    # Given a vendor writing day-first local times in New York, either side of the end of summer time
    spec = {"time_format": "%d/%m/%Y %H:%M:%S", "time_zone": "America/New_York"}
    alarms = [{"meter": "UPM1", "code": 101, "occurred_at": "31/10/2026 12:00:00"},
              {"meter": "UPM1", "code": 102, "occurred_at": " 02/11/2026 12:00:00 "},
              {"meter": "UPM1", "code": 201, "occurred_at": "2026-11-02T12:00:00"}]
    # When decoded
    doc, context = decode(alarms, spec)
    # Then EDT is 4 hours behind UTC and EST 5, and a time not in the pattern is rejected naming it
    assert [e["createdDateTime"] for e in doc["EndDeviceEvent"]] == ["2026-10-31T16:00:00Z", "2026-11-02T17:00:00Z"]
    assert reasons(context) == [
        (2, "meter UPM1: occurred_at '2026-11-02T12:00:00' is not a time like '%d/%m/%Y %H:%M:%S'")]


def test_a_strftime_pattern_with_an_offset_keeps_the_offset_it_reads():
    # Given a pattern with %z  When decoded in the default zone
    doc, _ = decode([{"meter": "UPM1", "code": 101, "occurred_at": "20261101 101502 +0000"}],
                    {"time_format": "%Y%m%d %H%M%S %z"})
    # Then the written offset wins
    assert doc["EndDeviceEvent"][0]["createdDateTime"] == "2026-11-01T10:15:02Z"


@pytest.mark.parametrize("spec, expected", [
    ({}, "2026-11-01T04:45:02Z"),                            # IST by default
    ({"utc_offset": "+00:00"}, "2026-11-01T10:15:02Z"),
    ({"time_zone": "Asia/Kolkata"}, "2026-11-01T04:45:02Z"),
    ({"time_zone": "UTC"}, "2026-11-01T10:15:02Z"),
])
def test_times_without_an_offset_are_in_the_route_zone(spec, expected):
    # Given an ISO time without an offset  When decoded with each zone option
    doc, _ = decode({"meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02"}, spec)
    # Then it is read in that zone
    assert doc["EndDeviceEvent"][0]["createdDateTime"] == expected


def test_a_single_alarm_object_is_one_alarm_unless_the_route_says_not():
    # Given one alarm object, no wrapper
    alarm = {"meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30"}
    # When decoded by default  Then it is one event
    doc, context = decode(alarm)
    assert len(doc["EndDeviceEvent"]) == 1 and context.rows_in == 1
    # When the route wants a wrapper  Then the message is refused, naming the array it looked for
    with pytest.raises(DecodeError, match="alarm payload has no 'data.alarms' array"):
        decode(alarm, {"items": "data.alarms", "single_alarm": False})


def test_a_bare_array_is_a_burst_unless_the_route_says_not():
    # Given a bare array of two alarms
    alarms = [{"meter": f"UPM{n}", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30"} for n in (1, 2)]
    # When decoded by default, as JSON bytes  Then two events
    doc, context = decode(orjson.dumps(alarms))
    assert [e["meter"] for e in doc["EndDeviceEvent"]] == ["UPM1", "UPM2"] and context.rows_in == 2
    # When the route refuses bare arrays  Then the message is refused
    with pytest.raises(DecodeError, match="must be an object, not list"):
        decode(alarms, {"bare_array": False})


def test_the_source_field_must_name_the_sending_system_when_present():
    # Given a vendor whose wrapper names the sender under meta.system
    spec = {"items": "records", "source_field": "meta.system"}
    alarm = {"meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30"}
    # When it names the route's source system, or nothing  Then the alarms are decoded
    assert decode({"meta": {"system": "hes-x"}, "records": [alarm]}, spec)[0]["EndDeviceEvent"]
    assert decode({"records": [alarm]}, spec)[0]["EndDeviceEvent"]
    # When it names another system  Then the whole message is refused
    with pytest.raises(DecodeError, match=r"payload says meta.system 'hes-a' but the message came from 'hes-x'"):
        decode({"meta": {"system": "hes-a"}, "records": [alarm]}, spec)
    # And without source_field nothing is checked
    assert decode({"hes": "hes-a", "alarms": [alarm]}, {})[0]["EndDeviceEvent"]


def test_optional_fields_set_to_null_are_not_read():
    # Given alarms carrying received_at, alarm_id and details that the route says not to read
    alarm = {"meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30",
             "received_at": "garbage", "alarm_id": ["x"], "details": "garbage"}
    # When decoded
    doc, context = decode([alarm], {"fields": {"received": None, "alarm_id": None, "details": None}})
    # Then the event has none of them and nothing is rejected
    assert list(doc["EndDeviceEvent"][0]) == ["meter", "eventType", "isCode", "createdDateTime", "eventClass",
                                              "severity"]
    assert not context.rejections


# ----------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("payload", [b"\xff\xfe not json", "{'meter': 1}", b"[NaN]", "[" * 100_000, b"", 42])
def test_a_payload_that_is_not_json_is_refused_whole(payload):
    # Given bytes, text or an object that is not alarm JSON (bad UTF-8, NaN, 100,000 open brackets)
    # When decoded  Then a DecodeError, no crash
    with pytest.raises(DecodeError):
        decode(payload, VENDOR_X)


@pytest.mark.parametrize("payload", ["null", "1", '"x"', "true"])
def test_json_that_is_neither_object_nor_array_is_refused(payload):
    with pytest.raises(DecodeError, match="must be an object or an array"):
        decode(payload, VENDOR_X)


def test_the_alarm_array_of_the_wrong_type_is_refused():
    # Given a wrapper whose items path holds an object  When decoded  Then refused naming the path
    with pytest.raises(DecodeError, match="'payload.events' must be an array, not dict"):
        decode({"payload": {"events": {"0": {}}}}, VENDOR_X)


def _vendor_alarm(**change) -> dict:
    alarm = {"id": "x-1", "device": {"serial": "UPM1"}, "hes": {"rx": "2026-11-01T10:15:04+05:30"},
             "event": {"type": "PWR_FAIL", "at": "2026-11-01T10:15:02+05:30", "measurements": [{"v": 0}]}}
    for path, value in change.items():
        *parents, last = path.split("__")
        place = alarm
        for key in parents:
            place = place[key]
        place[last] = value
    return alarm


def test_wrong_types_at_each_path_reject_that_alarm_only():
    # Given vendor X alarms with a wrong type at each path, or a path through a string
    alarms = [_vendor_alarm(device=None), _vendor_alarm(device="UPM1"), _vendor_alarm(device__serial=12),
              _vendor_alarm(event__type=["PWR_FAIL"]), _vendor_alarm(event__type=True),
              _vendor_alarm(event="PWR_FAIL"), _vendor_alarm(event__at=1793504102),
              _vendor_alarm(event__at={"t": 1}), _vendor_alarm(hes__rx=7), _vendor_alarm(id=1.5),
              _vendor_alarm(id=""), _vendor_alarm(event__measurements=[[1]]),
              _vendor_alarm(event__measurements=[{"v": {"x": 1}}]), _vendor_alarm(event__measurements="v=0"),
              _vendor_alarm(hes="rx"), _vendor_alarm()]
    # When decoded
    doc, context = decode({"payload": {"events": alarms}}, VENDOR_X)
    # Then each bad alarm is rejected with a reason naming the vendor's path, and the good ones pass:
    # a path through a string or a number leads nowhere, so an optional field is simply absent
    assert reasons(context) == [
        (0, "meter None is missing or not a printable string"),
        (1, "meter None is missing or not a printable string"),
        (2, "meter 12 is missing or not a printable string"),
        (3, "meter UPM1: unknown vendor event code ['PWR_FAIL']"),
        (4, "meter UPM1: unknown vendor event code True"),
        (5, "meter UPM1: unknown vendor event code None"),
        (6, "meter UPM1: event.at 1793504102 is not an ISO 8601 time"),
        (7, "meter UPM1: event.at {'t': 1} is not an ISO 8601 time"),
        (8, "meter UPM1: hes.rx 7 is not an ISO 8601 time"),
        (9, "meter UPM1: id 1.5 is not a printable string or integer"),
        (10, "meter UPM1: id '' is not a printable string or integer"),
        (11, "meter UPM1: event.measurements.0 must be an object, not list"),
        (12, "meter UPM1: event.measurements.0.v must be a string or a finite number, not {'x': 1}"),
    ]
    # (details through a string: none, so alarm 13 is an event; 14, received through a string, and 15
    # repeat its meter, code and time: the same event, dropped without a rejection)
    assert [("receivedDateTime" in e, "details" in e) for e in doc["EndDeviceEvent"]] == [(True, False)]
    assert context.rows_in == 16 and context.meters == {"UPM1"}


@pytest.mark.parametrize("field", ["device__serial", "event__type", "event__at", "hes__rx", "id"])
def test_a_field_nested_a_thousand_deep_rejects_its_alarm(field):
    # Given JSON bytes where one field nests 1,000 deep (orjson reads up to 1,024; repr gives up sooner)
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    alarm = orjson.dumps(_vendor_alarm(**{field: "@"})).replace(b'"@"', deep)
    # When decoded
    doc, context = decode(b'{"payload": {"events": [' + alarm + b"]}}", VENDOR_X)
    # Then that alarm is rejected with a reason, not a RecursionError failing the message
    (why,) = [why for _, why in reasons(context)]
    assert "<dict nested too deep to show>" in why and not doc["EndDeviceEvent"]


def test_deep_nesting_and_huge_values_are_rejected_not_raised():
    # Given alarms whose fields hold 5,000-deep nesting, a 5,000-digit code and a huge epoch
    deep: object = "UPM1"
    for _ in range(5_000):
        deep = {"serial": deep}
    alarms = [{"meter": deep, "code": 101, "occurred_at": 1}, {"meter": "UPM1", "code": "9" * 5000, "occurred_at": 1},
              {"meter": "UPM1", "code": 10**5000, "occurred_at": 1},
              {"meter": "UPM1", "code": 101, "occurred_at": 10**30}, {"meter": "UPM1", "code": 101,
                                                                       "occurred_at": "9" * 20},
              {"meter": "UPM1", "code": 101, "occurred_at": float("inf")},
              {"meter": "UPM1", "code": 101, "occurred_at": -62135596801}]
    # When decoded with epoch times
    doc, context = decode(alarms, {"time_format": "epoch"})
    # Then each is rejected with its reason, none raises
    assert [line for line, _ in reasons(context)] == [0, 1, 2, 3, 4, 5, 6]
    assert reasons(context)[3] == (3, f"meter UPM1: occurred_at {10**30} is not epoch seconds")
    assert doc["EndDeviceEvent"] == []


def test_duplicated_alarms_are_one_event_the_first_kept():
    # Given a HES retry: the same meter, code and time twice (different ids), and a different time
    alarm = {"meter": "UPM1", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30", "alarm_id": "a"}
    alarms = [alarm, {**alarm, "alarm_id": "b", "occurred_at": "2026-11-01T04:45:02Z"},
              {**alarm, "alarm_id": "c", "occurred_at": "2026-11-01T10:15:03+05:30"}]
    # When decoded  Then the repeat is dropped without a rejection
    doc, context = decode(alarms, {})
    assert [e["alarmId"] for e in doc["EndDeviceEvent"]] == ["a", "c"] and not context.rejections


def test_options_are_compiled_once_per_distinct_value():
    # Given two equal options mappings written in another order, and a third that differs
    one = {"json_events": {"items": "a", "codes": {"X": 101, "Y": 102}}}
    two = {"json_events": {"codes": {"Y": 102, "X": 101}, "items": "a"}}
    # When compiled  Then the first two share one compiled reader and the third has its own
    assert compiled(one) is compiled(two)
    assert compiled(one) is not compiled({"json_events": {"items": "b"}})


# ----------------------------------------------------------------------- route load

def test_route_options_are_checked_at_load_with_file_line_and_did_you_mean(tmp_path):
    # Given a route file with a wrong key at each level, unknown target codes, a misspelt zone,
    # a pattern without the date, a bad path; and a route with both zone options and "yes" for true
    path = tmp_path / "vendor.yaml"
    path.write_text(textwrap.dedent("""\
        use_case: 2
        routes:
          - id: vendor-x-alarms
            source: {system: hes-x, connector: http-push, path: hes-x/alarms}
            method: pub-sub
            message: {noun: EndDeviceEvents}
            transform: [json_events]
            options:
              json_events:
                itemz: payload.events
                fields: {metre: device.serial, code: "event..type"}
                codes:
                  PWR_FAIL: 1011
                  COVER_OPEN: 3.12.29.213
                  MAG: [201]
                time_zone: Asia/Kolkatta
                time_format: "%H:%M:%S"
              json_event: {}
            destinations:
              - {system: events, connector: events}
          - id: vendor-y-alarms
            source: {system: hes-y, connector: http-push, path: hes-y/alarms}
            method: pub-sub
            message: {noun: EndDeviceEvents}
            transform: [json_events]
            options:
              json_events: {time_zone: Asia/Kolkata, utc_offset: "+05:30", bare_array: "yes"}
            destinations:
              - {system: events, connector: events}
        """))
    # When the routes are loaded
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env=ROUTE_ENV)
    # Then each problem names the file and its own line, with a suggestion where one is close
    found = {(e.line, e.reason) for e in caught.value.errors}
    assert all(e.file == str(path) for e in caught.value.errors)
    assert (10, "unknown key 'itemz' (did you mean 'items'?)") in found
    assert (11, "unknown key 'metre' (did you mean 'meter'?)") in found
    assert any(line == 11 and "'event..type' has an empty segment" in why for line, why in found)
    assert any(line == 13 and "1011 is not an IS 15959 code" in why for line, why in found)
    assert any(line == 14 and "'3.12.29.213' is not an EndDeviceEventType" in why
               and "did you mean '3.12.29.212'" in why for line, why in found)
    assert any(line == 15 and "not [201]" in why for line, why in found)
    assert any(line == 16 and "did you mean 'Asia/Kolkata'" in why for line, why in found)
    assert any(line == 17 and "does not carry a whole date and time" in why for line, why in found)
    assert (18, "unknown key 'json_event' (did you mean 'json_events'?)") in found
    assert any(line == 27 and "time_zone or utc_offset, not both" in why for line, why in found)
    assert any(line == 27 and "bare_array: Not a valid boolean." in why for line, why in found)


def test_the_shipped_routes_use_json_events_with_the_vendor_format_spelled_out():
    # Given the shipped alarm routes  When loaded
    table = load_routes([SHIPPED], env=ROUTE_ENV)
    # Then both HES JSON routes run json_events with one and the same mapping (a YAML anchor)
    a, b = table.get("hes-a-alarms"), table.get("hes-b-alarms-mq")
    assert list(a.transform) == list(b.transform) == ["json_events"]
    assert a.options == b.options and a.options["json_events"]["source_field"] == "hes"


def test_every_option_is_described_for_the_reference():
    # Given the schemas json_events declares  Then each key has a description
    for schema in (JsonEventsOptions, JsonEventsSpec, AlarmFields):
        for name, field in schema._declared_fields.items():
            assert field.metadata.get("description"), f"{schema.__name__}.{name}"
    assert field_names(JsonEventsOptions) == ["json_events"]


# ----------------------------------------------------------------------- equivalence

def _hostile(alarms: list, seed: int) -> list:
    """The simulator's alarms with garbage mixed in: wrong types, unknown codes, bad times,
    nested details, retries and things that are not alarms at all."""
    rng = random.Random(seed)
    spoil = [
        lambda a: a.pop("meter"), lambda a: a.update(meter=123), lambda a: a.update(meter=" \x07 "),
        lambda a: a.update(meter=f"  {a['meter']} "), lambda a: a.update(code=999),
        lambda a: a.update(code=str(a["code"])), lambda a: a.update(code=f" {a['code']} "),
        lambda a: a.update(code=[101]), lambda a: a.update(code=True), lambda a: a.update(code="9" * 5000),
        lambda a: a.update(code=101.0), lambda a: a.update(occurred_at="yesterday"),
        lambda a: a.update(occurred_at=a["occurred_at"][:19]), lambda a: a.update(occurred_at=1793504102),
        lambda a: a.update(occurred_at="0001-01-01T00:00:00"), lambda a: a.update(received_at="2026-13-01"),
        lambda a: a.update(received_at=None), lambda a: a.pop("received_at"), lambda a: a.update(alarm_id=7),
        lambda a: a.update(alarm_id=1.5), lambda a: a.update(alarm_id=" "), lambda a: a.pop("alarm_id"),
        lambda a: a.update(details={"evidence": {"photo": 1}}), lambda a: a.update(details=[1]),
        lambda a: a.update(details={"note": "a\x00b"}), lambda a: a.update(details={"": 1}),
        lambda a: a.update(details={"v": float("inf")}), lambda a: a.update(details={}),
        lambda a: a.update(details=None), lambda a: a.update(extra={"x": [1, 2]}),
    ]
    out: list = []
    for alarm in copy.deepcopy(alarms):
        roll = rng.random()
        if roll < 0.5:
            out.append(alarm)
        elif roll < 0.9:
            rng.choice(spoil)(alarm)
            out.append(alarm)
        elif roll < 0.95 and out:
            out.append(copy.deepcopy(rng.choice(out)))  # a retry of an earlier alarm
        else:
            out.append(rng.choice(["UPM1,101", None, 101, [alarm], True]))
    return out


def _bursts() -> dict[str, list]:
    network = Network.build(feeders=4, dts_per_feeder=5, meters_per_dt=20, seed=11, first_meter=500)
    trip = feeder_trip(network, ["F01", "F03"], AT, restore_after_s=300)
    mix = mixed(network, 800, AT, rng=random.Random(5))
    return {"burst": burst(network, 400, AT), "trip": trip, "mixed": mix,
            "hostile-trip": _hostile(trip, 1), "hostile-mixed": _hostile(mix, 2),
            "hostile-mixed-again": _hostile(mix + mix[:100], 3)}


@pytest.mark.parametrize("kind", list(_bursts()))
@pytest.mark.parametrize("shape", ["wrapped", "array", "bytes"])
def test_json_events_as_shipped_decodes_simulator_bursts_exactly_as_hes_alarm_json(kind, shape):
    # Given a simulator burst (clean, or with garbage alarms and retries mixed in) in each message shape
    alarms = _bursts()[kind]
    payload = {"wrapped": {"hes": "hes-a", "alarms": alarms}, "array": alarms,
               "bytes": orjson.dumps({"hes": "hes-a", "alarms": alarms})}[shape]
    options = shipped_options()
    # When both decoders read it, json_events configured as the shipped hes-a-alarms route
    old = TransformContext("hes-a-alarms", "hes-a", "m-1", "c-1")
    new = TransformContext("hes-a-alarms", "hes-a", "m-1", "c-1", options=options)
    expected = orjson.dumps(HesAlarmJsonDecoder()(payload, old))
    got = orjson.dumps(JsonEventsDecoder()(payload, new))
    # Then the documents are equal byte for byte (keys in the same order), and so are the
    # rejections, the meters and the count of alarms
    assert got == expected
    assert new.rejections == old.rejections and new.meters == old.meters and new.rows_in == old.rows_in
    if kind.startswith("hostile"):
        assert old.rejections  # the garbage was there to be refused


@pytest.mark.parametrize("payload", [{"hes": "hes-b", "alarms": []}, {"alarms": None}, {"alarms": {"a": 1}},
                                     "[1,", b"null"])
def test_whole_message_refusals_are_the_same_as_hes_alarm_json(payload):
    # Given a message hes_alarm_json refuses whole  When json_events as shipped reads it
    old = TransformContext("hes-a-alarms", "hes-a", "m-1", "c-1")
    new = TransformContext("hes-a-alarms", "hes-a", "m-1", "c-1", options=shipped_options())
    with pytest.raises(DecodeError) as expected:
        HesAlarmJsonDecoder()(payload, old)
    # Then it refuses it with the same reason
    with pytest.raises(DecodeError) as got:
        JsonEventsDecoder()(payload, new)
    assert str(got.value) == str(expected.value)


# ----------------------------------------------------------------------- properties

VENDOR_X_MESSAGE = {"meta": {"system": "hes-x"}, "payload": {"events": [
    _vendor_alarm(), _vendor_alarm(id=7, event__type=17, event__measurements=[{"pf": 0.5, "phase": "R"}]),
    {"id": "x-3", "device": {"serial": "UPM3"}, "event": {"type": "MAG", "at": "2026-11-01T04:40:00"}}]}}
EPOCH_SPEC = {**VENDOR_X, "time_format": "epoch_ms", "source_field": "meta.system", "single_alarm": False}
EPOCH_MESSAGE = {"meta": {"system": "hes-x"}, "payload": {"events": [
    _vendor_alarm(event__at=1793504102123, hes__rx="1793504104000"),
    _vendor_alarm(event__type="COVER_OPEN", event__at=1793504102999.5, hes__rx=None)]}}


@PROPERTY
@given(st.one_of(near(VENDOR_X_MESSAGE), near(VENDOR_X_MESSAGE["payload"]["events"]), JSON_VALUES,
                 near(VENDOR_X_MESSAGE).map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass"))))
def test_near_valid_vendor_messages_decode_or_are_refused_with_a_reason(payload):
    # Given vendor X messages with places deleted or replaced, or any JSON at all
    # When decoded  Then a canonical document with reasoned rejections, or a MessageError with a reason
    _outcome(VENDOR_X, payload)


@PROPERTY
@given(st.one_of(near(EPOCH_MESSAGE), JSON_VALUES))
def test_near_valid_epoch_messages_decode_or_are_refused_with_a_reason(payload):
    _outcome(EPOCH_SPEC, payload)


def _outcome(spec: dict, payload) -> None:
    context = TransformContext("fuzz-route", "hes-x", "msg-1", "corr-1", options={"json_events": spec})
    try:
        doc = JsonEventsDecoder()(payload, context)
    except MessageError as refused:
        assert str(refused).strip()
        return
    validate_document(doc)
    assert all(r.reason.strip() for r in context.rejections)
    # every alarm is an event, a rejection or a repeat dropped
    assert context.rows_in >= len(doc["EndDeviceEvent"]) + len(context.rejections)
