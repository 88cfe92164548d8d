"""The dev stack's shared generated network: `gridbus dev up` gives every stand-in the same
GRIDBUS_DEV_NETWORK_*, so the GIS stand-in, the HES stand-ins, the alarm generator, the meter
assignment and the demo's meters all come from one network (ground truth for later analytics).
No stack is started here: the pieces are checked as `dev up` wires them."""
from __future__ import annotations

import csv
import json
import uuid

import pytest
import requests

from gridbus_dev import devstack
from gridbus_dev.cli import demo, demo_alarms, demo_requests
from gridbus_dev.cli.dev import NETWORK_SERVICES, SERVICES, _meter_assignment, _stand_in_argv, dev_env
from simulators import hes_alarms, hes_files
from simulators.hes import HesServer, shared_fleet
from simulators.network import SHARED_NETWORK_ENV, NetworkModel, hes_of, shared_env, shared_model, shared_recipe


@pytest.fixture
def dev_values(tmp_path, monkeypatch):
    """dev_env() of a stack in tmp_path, with no GRIDBUS_DEV_NETWORK_* of the caller's own."""
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    for var in SHARED_NETWORK_ENV:
        monkeypatch.delenv(var, raising=False)
    return dev_env()


def test_dev_env_names_every_stand_in_and_the_shared_network(dev_values):
    # Given the environment `dev up` gives its processes
    # Then the GIS and both billing systems have addresses, as the route files and CLIs expect
    assert dev_values["GIS_URL"] == "http://127.0.0.1:18107"
    assert dev_values["BILLING_1_URL"] == "http://127.0.0.1:18108"
    assert dev_values["BILLING_2_URL"] == "http://127.0.0.1:18109"
    # and the shared network is the dev default, which every stand-in reads back the same way
    assert shared_recipe(dev_values) == devstack.DEV_NETWORK
    # and the processes of use case 9 are started, listed and stopped with the rest
    assert {"gis", "billing-1", "billing-2", *NETWORK_SERVICES} <= set(SERVICES)


def test_the_callers_environment_changes_the_shared_network(tmp_path, monkeypatch):
    # Given a developer who wants a bigger network for one session
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDBUS_DEV_NETWORK_CONSUMERS", "5000")
    # When dev up computes its environment, Then that size wins and the rest stays the default
    assert shared_recipe(dev_env()) == {**devstack.DEV_NETWORK, "consumers": 5000}


def test_stand_ins_are_started_with_what_they_need(dev_values, monkeypatch):
    # Given dev up's key for the GIS (made once, kept in the run folder; not a real key store here)
    monkeypatch.setattr("gridbus_dev.cli.dev._dev_key", lambda system: f"key-of-{system}")
    # When the GIS and billing stand-ins' command lines are made
    gis = _stand_in_argv("gis", "simulators.gis", 18107, dev_values)
    billing = {n: _stand_in_argv(n, "simulators.billing_network", p, dev_values)
               for n, p in (("billing-1", 18108), ("billing-2", 18109))}
    # Then the GIS pushes to the gateway's gis source with its key and drops snapshots where the
    # ingress's snapshot route reads them, and billing-1 speaks JSON, billing-2 XML
    assert gis[gis.index("--bus-url") + 1] == "http://127.0.0.1:18080/v1/push/gis/network"
    assert gis[gis.index("--bus-key") + 1] == "key-of-gis"
    assert gis[gis.index("--drop-dir") + 1] == f"{dev_values['GRIDBUS_INBOX']}/gis-snapshots"
    assert billing["billing-1"][-2:] == ["--format", "json"] and billing["billing-2"][-2:] == ["--format", "xml"]


def test_every_meter_the_demo_uses_is_in_the_shared_network_and_assigned(dev_values, tmp_path):
    # Given the meter assignment dev up writes from the shared network
    path = tmp_path / "meter-assignment.csv"
    written = _meter_assignment(path, dev_values)
    with open(path, newline="") as fh:
        assigned = {row["meter"]: row["hes"] for row in csv.DictReader(fh)}
    model = shared_model(dev_values)
    # Then it holds each consumer, DT and feeder-head meter once, on the HES its serial says
    assert written == len(assigned) == len(model) + model.dts + model.feeders
    assert all(hes == hes_of(meter) for meter, hes in assigned.items())
    # and every meter the demo's HES files, requests and alarm trip use is one of them
    file_meters = {f"UPM{int(args[args.index('--first-serial') + 1]) + i:08d}"
                   for _folder, args in demo.DEMO_FILES for i in range(int(args[args.index("--meters") + 1]))}
    asked = {demo_requests.DEMO_METER, *demo_requests.BULK_METERS}
    assert file_meters | asked <= set(assigned)
    assert set(demo_alarms.TRIPPED) <= set(model.feeder_tree())


def test_a_hes_of_the_dev_stack_serves_only_its_meters_of_the_network(dev_values):
    # Given HES-A started in the dev stack (its fleet from the shared network)
    fleet = shared_fleet("hes-a", dev_values)
    model = shared_model(dev_values)
    every = {m for dts in model.feeder_tree().values() for meters in dts.values() for m in meters}
    every |= {model.dt_meter(d) for d in range(model.dts)} | {model.feeder_head_meter(f) for f in range(model.feeders)}
    # (its fleet is the odd half of the network's meters, HES-B's the even half)
    assert fleet == {m for m in every if hes_of(m) == "hes-a"} and fleet | shared_fleet("hes-b", dev_values) == every
    mine = sorted(m for m in fleet if m.startswith("UPM"))[0]
    theirs = next(m for m in shared_fleet("hes-b", dev_values) if m.startswith("UPM"))
    with HesServer(port=0, name="hes-a") as server:
        server.app.fleet = fleet
        # When it is asked to read one of its meters, one of HES-B's and one of no network
        doc = {"Header": {"Verb": "get", "Noun": "MeterReadings", "MessageID": str(uuid.uuid4())},
               "Request": {"meters": [mine, theirs, "UPM99999999"]}}
        reply = requests.post(f"{server.url}/requests/meter-readings", json=doc, timeout=5).json()
        stats = requests.get(f"{server.url}/stats", timeout=5).json()
    # Then it reads its own and answers the others unreachable, saying they are not on it
    assert reply["Reply"]["Result"] == "PARTIAL"
    assert [b["meter"] for b in reply["Payload"]["MeterReadings"]["MeterReading"]] == [mine]
    assert {e["meter"]: e["reason"] for e in reply["Reply"]["Error"]} == {
        theirs: f"meter {theirs} is not on hes-a", "UPM99999999": "meter UPM99999999 is not on hes-a"}
    assert stats["fleet"] == len(fleet)


def test_a_hes_outside_a_dev_stack_still_serves_any_meter(monkeypatch):
    # Given no shared network in the environment (the tests' stand-ins), or a HES of another name
    for var in SHARED_NETWORK_ENV:
        monkeypatch.delenv(var, raising=False)
    # Then there is no fleet: the HES answers any meter, as before
    assert shared_fleet("hes-a") is None
    assert shared_fleet("hes", shared_env(devstack.DEV_NETWORK)) is None


def test_the_alarm_generator_uses_the_shared_network_unless_a_regular_one_is_asked(monkeypatch, tmp_path, capsys):
    # Given the dev stack's shared network in the environment
    for var, value in shared_env(devstack.DEV_NETWORK).items():
        monkeypatch.setenv(var, value)
    truth = NetworkModel.generate(**devstack.DEV_NETWORK)
    # When a feeder trip is generated without naming a network
    out = tmp_path / "trip.json"
    assert hes_alarms.main(["trip", "--feeder", "FDR-0002", "--out", str(out)]) == 0
    alarms = json.loads(out.read_text())
    # Then every last gasp comes from a meter that ground truth puts on that feeder
    assert alarms and all(truth.where(a["meter"])["feeder"] == "FDR-0002" for a in alarms)
    # and --feeders/--dts/--meters still give the regular network the tests assert on
    assert hes_alarms.main(["trip", "--feeder", "F01", "--feeders", "2", "--dts", "2", "--meters", "3",
                            "--out", str(out)]) == 0
    assert {a["meter"] for a in json.loads(out.read_text())} == {f"UPM{n:08d}" for n in range(1, 7)}


def test_the_hes_file_generator_picks_meters_of_the_shared_network(monkeypatch, tmp_path, capsys):
    # Given the dev stack's shared network in the environment
    for var, value in shared_env(devstack.DEV_NETWORK).items():
        monkeypatch.setenv(var, value)
    model = shared_model()
    network_meters = {model.meter_of(c) for c in range(len(model))}
    # When an HES file is generated without --first-serial
    assert hes_files.main(["--out", str(tmp_path), "--meters", "30", "--seed", "12345"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with open(summary["path"], newline="") as fh:
        meters = {row["meter_serial"] for row in csv.DictReader(fh) if row["meter_serial"].startswith("UPM")}
    # Then its 30 meters are consumer meters of that network
    assert len(meters) == 30 and meters <= network_meters
    # and a file asking for more meters than the network has says so instead of inventing them
    with pytest.raises(SystemExit):
        hes_files.main(["--out", str(tmp_path), "--meters", "2001"])
    assert "shared network has 2,000 consumer meters" in capsys.readouterr().err
