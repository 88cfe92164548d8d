"""Billing determinants (simulators/billing.py) and the MDMS stand-in's request endpoints:
determinants from stored readings, and on-demand reads and commands forwarded to the bus."""
from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from simulators.billing import (CalendarError, calendar_from_dict, determinants, expected_intervals,
                                load_calendar)
from simulators.control import SimulatorProcess
from simulators.mdms import MdmsServer

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
KVAH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0"
KVAH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"

# Monday 2 Nov 2026, 12:00Z-17:00Z = 17:30-22:30 IST: 20 slots, across the evening peak.
START, END = "2026-11-02T12:00:00Z", "2026-11-02T17:00:00Z"
# interval end (UTC) -> (kWh imp, kVAh imp); the comment is the interval's START in IST
IMPORTS = {
    "2026-11-02T12:00:00Z": (100.0, 100.0),   # 17:15, ends AT start: outside (start < t)
    "2026-11-02T12:15:00Z": (0.5, 0.625),     # 17:30 normal
    "2026-11-02T12:30:00Z": (0.25, 0.3125),   # 17:45 normal (ends 18:00, starts before the peak)
    "2026-11-02T12:45:00Z": (1.0, 1.25),      # 18:00 peak
    "2026-11-02T13:00:00Z": (2.0, 2.5),       # 18:15 peak: the maximum (first of two)
    "2026-11-02T16:30:00Z": (0.5, 0.625),     # 21:45 peak
    "2026-11-02T16:45:00Z": (0.75, 1.0),      # 22:00 off-peak
    "2026-11-02T17:00:00Z": (2.0, 2.5),       # 22:15 off-peak: ties the maximum, later
    "2026-11-02T17:15:00Z": (100.0, 100.0),   # after end: outside
}
EXPORTS = {"2026-11-02T12:15:00Z": (0.1, 0.15), "2026-11-02T12:30:00Z": (0.2, 0.25)}

# By hand: 7 intervals of 20 slots; kWh 0.75 normal + 3.5 peak + 2.75 off-peak = 7.0;
# kVAh 0.9375 + 4.375 + 3.5 = 8.8125; MD 4 x 2.0 = 8 kW and 4 x 2.5 = 10 kVA at 13:00Z;
# PF 7 / 8.8125 = 0.79432..; export 0.1 + 0.2 = 0.3 (not 0.30000000000000004); net 6.7.
EXPECTED = {
    "period": {"start": START, "end": END},
    "intervals": 7,
    "missing_intervals": 13,
    "kwh_import": {"total": 7.0, "zones": {"peak": 3.5, "off-peak": 2.75, "normal": 0.75}},
    "kvah_import": {"total": 8.8125, "zones": {"peak": 4.375, "off-peak": 3.5, "normal": 0.9375}},
    "kwh_export": {"total": 0.3},
    "kvah_export": {"total": 0.4},
    "max_demand_kw": {"value": 8.0, "at": "2026-11-02T13:00:00Z"},
    "max_demand_kva": {"value": 10.0, "at": "2026-11-02T13:00:00Z"},
    "average_pf": 0.7943,
    "net_kwh": 6.7,
}


def series() -> dict:
    return {KWH_IMP: {t: v[0] for t, v in IMPORTS.items()}, KVAH_IMP: {t: v[1] for t, v in IMPORTS.items()},
            KWH_EXP: {t: v[0] for t, v in EXPORTS.items()}, KVAH_EXP: {t: v[1] for t, v in EXPORTS.items()},
            DAILY_KWH: {"2026-11-02T18:30:00Z": 1234.5}}


def readings_message(meter: str) -> dict:
    """The series above as a MeterReadings message (the shape use case 1 delivers)."""
    return {
        "Header": {"Verb": "created", "Noun": "MeterReadings", "Source": "hes-a", "MessageID": str(uuid.uuid4())},
        "Payload": {"MeterReadings": {"MeterReading": [
            {"meter": meter,
             "intervalBlocks": [{"readingType": rt, "intervalReadings": [{"timeStamp": t, "value": v}
                                                                        for t, v in values.items()]}
                                for rt, values in series().items() if rt != DAILY_KWH],
             "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-11-02T18:30:00Z", "value": 1234.5}]}]}},
    }


def determinants_request(usage_point: str, start: str = START, end: str = END) -> dict:
    return {"Header": {"Verb": "get", "Noun": "BillingDeterminants", "MessageID": str(uuid.uuid4()),
                       "CorrelationID": "corr-bd", "Source": "billing-1"},
            "Request": {"usagePoint": usage_point, "from": start, "to": end}}


# ----------------------------------------------------------------- the pure function

def test_determinants_match_a_hand_computation():
    # Given the series above and the shipped IST calendar
    calendar = load_calendar()

    # When the determinants of the period are computed
    found = determinants(series(), START, END, calendar)

    # Then they are the hand-computed ones, zones in the calendar's order
    assert found == EXPECTED
    assert list(found["kwh_import"]["zones"]) == ["peak", "off-peak", "normal"]


def test_the_zone_of_an_interval_is_the_zone_of_its_start_in_ist():
    calendar = load_calendar()
    # 12:30Z ends the 17:45-18:00 IST block (normal); 12:45Z ends 18:00-18:15 (peak)
    assert [calendar.zone_of_interval(t) for t in (
        "2026-11-02T12:30:00Z", "2026-11-02T12:45:00Z", "2026-11-02T16:30:00Z", "2026-11-02T16:45:00Z",
        "2026-11-02T00:30:00Z", "2026-11-02T00:45:00Z")] == [
        "normal", "peak", "peak", "off-peak", "off-peak", "normal"]
    assert expected_intervals("2026-11-01T18:30:00Z", "2026-11-30T18:30:00Z") == 29 * 96


def test_an_empty_period_has_zero_energy_and_no_demand():
    found = determinants({}, START, END)
    assert found["intervals"] == 0 and found["missing_intervals"] == 20
    assert found["kwh_import"] == {"total": 0.0, "zones": {"peak": 0.0, "off-peak": 0.0, "normal": 0.0}}
    assert found["max_demand_kw"] == {"value": None, "at": None} and found["average_pf"] is None


def test_bad_periods_are_refused():
    for start, end in ((END, START), (START, START), ("2026-11-02 12:00", END)):
        with pytest.raises(ValueError):
            determinants(series(), start, end)


def test_a_day_override_replaces_the_zones_of_that_local_day():
    # Given a calendar without peak on Sundays; Sunday 1 Nov 2026, 18:15-18:30 IST
    calendar = calendar_from_dict({
        "utc_offset": "+05:30",
        "zones": [{"name": "peak", "from": "18:00", "to": "22:00"},
                  {"name": "off-peak", "from": "22:00", "to": "06:00"},
                  {"name": "normal", "from": "06:00", "to": "18:00"}],
        "overrides": [{"weekdays": ["sunday"], "zones": [{"name": "off-peak", "from": "22:00", "to": "06:00"},
                                                         {"name": "normal", "from": "06:00", "to": "22:00"}]}]})
    sunday = {KWH_IMP: {"2026-11-01T13:00:00Z": 1.0}, KVAH_IMP: {"2026-11-01T13:00:00Z": 1.0}}

    # When the determinants of Sunday and of the same hour on Monday are computed
    on_sunday = determinants(sunday, "2026-11-01T12:00:00Z", "2026-11-01T13:00:00Z", calendar)
    monday = {rt: {"2026-11-02T13:00:00Z": 1.0} for rt in (KWH_IMP, KVAH_IMP)}
    on_monday = determinants(monday, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", calendar)

    # Then Sunday's energy is normal, Monday's peak; every zone is listed, even at 0
    assert on_sunday["kwh_import"]["zones"] == {"peak": 0.0, "off-peak": 0.0, "normal": 1.0}
    assert on_monday["kwh_import"]["zones"] == {"peak": 1.0, "off-peak": 0.0, "normal": 0.0}
    assert on_sunday["average_pf"] == 1.0 and on_sunday["missing_intervals"] == 3


@pytest.mark.parametrize("zones", [
    [{"name": "peak", "from": "18:00", "to": "22:00"}],                                  # a gap
    [{"name": "all", "from": "00:00", "to": "24:00"}, {"name": "x", "from": "01:00", "to": "02:00"}],
    [{"name": "all", "from": "06:00", "to": "06:00"}],                                   # empty
    [{"name": "all", "from": "00:00", "to": "25:00"}],
])
def test_a_calendar_must_give_every_minute_one_zone(zones):
    with pytest.raises(CalendarError):
        calendar_from_dict({"zones": zones})


# ----------------------------------------------------------------- the MDMS endpoint

@pytest.fixture
def mdms():
    with MdmsServer(port=0) as server:
        yield server


def test_the_mdms_answers_determinants_of_the_readings_it_stored(mdms):
    # Given the series stored through a MeterReadings message (use case 1)
    requests.post(f"{mdms.url}/messages", json=readings_message("UPM00000042"), timeout=5).raise_for_status()

    # When billing asks for the determinants of the meter's usage point, and by bare meter id
    answer = requests.post(f"{mdms.url}/requests/billing-determinants",
                           json=determinants_request("UP-UPM00000042"), timeout=5)
    bare = requests.post(f"{mdms.url}/requests/billing-determinants",
                         json=determinants_request("UPM00000042"), timeout=5).json()

    # Then OK with the same determinants as the function, correlated to the request
    assert answer.status_code == 200
    body = answer.json()
    assert body["Reply"] == {"Result": "OK"}
    assert body["Header"]["CorrelationID"] == "corr-bd" and body["Header"]["Noun"] == "BillingDeterminants"
    assert body["Payload"]["BillingDeterminants"] == {"usagePoint": "UP-UPM00000042", "meter": "UPM00000042",
                                                      **EXPECTED}
    assert bare["Payload"]["BillingDeterminants"]["meter"] == "UPM00000042"
    # and a period given in IST is the same period
    ist = requests.post(f"{mdms.url}/requests/billing-determinants", timeout=5, json=determinants_request(
        "UP-UPM00000042", "2026-11-02T17:30:00+05:30", "2026-11-02T22:30:00.000+05:30")).json()
    assert ist["Payload"]["BillingDeterminants"] == body["Payload"]["BillingDeterminants"]
    stats = requests.get(f"{mdms.url}/stats", timeout=5).json()
    assert stats["request_counts"]["determinant_requests"] == 3


def test_no_readings_is_a_failed_business_answer(mdms):
    # Given a stored meter, When an unknown usage point and a period without readings are asked
    requests.post(f"{mdms.url}/messages", json=readings_message("UPM1"), timeout=5).raise_for_status()
    unknown = requests.post(f"{mdms.url}/requests/billing-determinants",
                            json=determinants_request("UP-UPM404"), timeout=5)
    empty = requests.post(f"{mdms.url}/requests/billing-determinants",
                          json=determinants_request("UP-UPM1", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"),
                          timeout=5)

    # Then 200 with Result FAILED, NO_DATA
    for answer in (unknown, empty):
        assert answer.status_code == 200
        assert answer.json()["Reply"]["Result"] == "FAILED"
        assert answer.json()["Reply"]["Error"][0]["code"] == "NO_DATA"


@pytest.mark.parametrize("request_doc,code", [
    ({"Header": {"Noun": "BillingDeterminants"}, "Request": {"usagePoint": "UP-1", "from": "2026-11-01",
                                                             "to": END}}, "INVALID_TIMESTAMP"),
    ({"Header": {}, "Request": {"usagePoint": "UP-1", "from": "2026-11-02T12:00:00", "to": END}},
     "INVALID_TIMESTAMP"),
    ({"Header": {"Noun": "BillingDeterminants"}, "Request": {"from": START, "to": END}}, "INVALID_REQUEST"),
    ({"Header": {"Noun": "BillingDeterminants"}, "Request": {"usagePoint": "UP-1", "from": END,
                                                             "to": START}}, "INVALID_PERIOD"),
    ({"Header": {"Noun": "Invoices"}, "Request": {}}, "UNKNOWN_NOUN"),
    ({"Request": {}}, "INVALID_REQUEST"),
])
def test_malformed_determinant_requests_are_400(mdms, request_doc, code):
    answer = requests.post(f"{mdms.url}/requests/billing-determinants", json=request_doc, timeout=5)
    assert answer.status_code == 400 and answer.json()["Reply"]["Error"][0]["code"] == code


# ----------------------------------------------------------------- forwarding to the bus

class FakeBus:
    """A real HTTP server standing for the bus: records requests, answers a fixed reply."""

    def __init__(self, status: int = 202, reply: dict | None = None) -> None:
        self.seen: list[dict] = []
        self.status = status
        self.reply = reply or {"Header": {"Verb": "reply", "Noun": "EndDeviceControls", "Source": "gridbus",
                                          "CorrelationID": "corr-cmd"},
                               "Reply": {"Result": "OK"}, "Payload": {"request_id": "R-1"}}
        bus = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bus.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
                out = json.dumps(bus.reply).encode()
                self.send_response(bus.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeBus":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def command_request() -> bytes:
    # compact and key-ordered on purpose: the bus must get these exact bytes
    return json.dumps({"Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": "msg-cmd",
                                  "CorrelationID": "corr-cmd", "Source": "billing-1"},
                       "Request": {"commandId": "CMD-9", "action": "disconnect", "meters": ["UPM1"]}},
                      separators=(",", ":")).encode()


def test_the_mdms_forwards_commands_and_reads_to_the_bus_and_answers_its_reply():
    # Given a bus and an MDMS that knows it and its API key
    with FakeBus(status=202) as bus, MdmsServer(port=0, bus_url=bus.url + "/", bus_key="k-mdms") as mdms:
        # When billing posts a command, and a read
        answer = requests.post(f"{mdms.url}/requests/commands", data=command_request(),
                               headers={"Content-Type": "application/json"}, timeout=5)
        read = {"Header": {"Verb": "get", "Noun": "MeterReadings", "MessageID": "msg-read"},
                "Request": {"meters": ["UPM1"]}}
        requests.post(f"{mdms.url}/requests/meter-readings", json=read, timeout=5).raise_for_status()
        stats = requests.get(f"{mdms.url}/stats", timeout=5).json()

    # Then the bus got the body unchanged with the key and the correlation id, on its paths
    first, second = bus.seen
    assert first["path"] == "/commands" and first["body"] == command_request()
    assert first["headers"]["X-API-Key"] == "k-mdms" and first["headers"]["X-Correlation-ID"] == "corr-cmd"
    assert second["path"] == "/meter-readings"
    assert second["headers"]["X-Correlation-ID"] == "msg-read"      # no CorrelationID: the MessageID
    # and the MDMS answered the bus's status and body as they were
    assert answer.status_code == 202 and answer.json() == bus.reply
    assert stats["request_counts"]["forwarded_requests"] == 2


def test_without_a_bus_the_mdms_answers_503_and_unreachable_502():
    # Given an MDMS without a bus, and one whose bus port is closed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with MdmsServer(port=0) as alone, MdmsServer(port=0, bus_url=f"http://127.0.0.1:{closed_port}") as lost:
        # When a command is posted to each
        no_bus = requests.post(f"{alone.url}/requests/commands", data=command_request(), timeout=5)
        gone = requests.post(f"{lost.url}/requests/commands", data=command_request(), timeout=5)

    # Then 503 NO_BUS and 502 BUS_UNREACHABLE, FAILED replies correlated to the request
    assert (no_bus.status_code, no_bus.json()["Reply"]["Error"][0]["code"]) == (503, "NO_BUS")
    assert (gone.status_code, gone.json()["Reply"]["Error"][0]["code"]) == (502, "BUS_UNREACHABLE")
    assert no_bus.json()["Header"]["CorrelationID"] == "corr-cmd"
    assert no_bus.json()["Reply"]["Result"] == "FAILED"


def test_failure_modes_apply_to_requests_too(mdms):
    requests.post(f"{mdms.url}/_control", json={"mode": "error", "status": 503, "times": 1}, timeout=5)
    refused = requests.post(f"{mdms.url}/requests/billing-determinants", json=determinants_request("UP-1"), timeout=5)
    assert refused.status_code == 503 and refused.json()["Header"]["CorrelationID"] == "corr-bd"


def test_the_bus_comes_from_the_environment_of_the_subprocess():
    # Given a bus, and the MDMS started with MDMS_BUS_URL / MDMS_BUS_KEY
    with FakeBus(status=200) as bus, SimulatorProcess(
            "simulators.mdms", "--port", "0", env={"MDMS_BUS_URL": bus.url, "MDMS_BUS_KEY": "k-env"}) as proc:
        # When a command is posted, Then it reaches the bus with the key
        assert requests.post(f"{proc.url}/requests/commands", data=command_request(), timeout=5).status_code == 200
    assert bus.seen[0]["headers"]["X-API-Key"] == "k-env"
