"""The GIS stand-in: serves its generated network as a snapshot CSV, pushes change streams
to the bus in order as change documents (retrying what the bus did not take), drops the
nightly export into a folder, and answers ground-truth questions."""
from __future__ import annotations

import csv
import io
import json

import pytest
import requests

from simulators.control import BackgroundServer, JsonRequestHandler, SimulatorProcess
from simulators.gis import GisServer
from simulators.network import SNAPSHOT_HEADER


class _Gateway(JsonRequestHandler):
    """The bus's gis endpoint reduced to what a push meets: 202, or the statuses queued in app["answers"]."""

    def do_POST(self) -> None:
        app = self.server.app
        doc = json.loads(self.read_body())
        app["seen"].append((self.headers.get("X-API-Key"), doc))
        self.send_json(app["answers"].pop(0) if app["answers"] else 202, {"Reply": {"Result": "OK"}})


@pytest.fixture
def gateway():
    with BackgroundServer(_Gateway, {"seen": [], "answers": []}) as server:
        yield server


@pytest.fixture
def gis(gateway, tmp_path):
    with GisServer(consumers=3000, seed=5, dts_per_feeder=5, feeders_per_substation=3,
                   bus_url=f"{gateway.url}/v1/push/gis/changes", bus_key="k-gis", drop_dir=str(tmp_path)) as server:
        yield server


def push(gis, **spec):
    return requests.post(f"{gis.url}/push", json=spec, timeout=30)


def test_the_snapshot_has_the_header_and_one_row_per_consumer(gis):
    # When the snapshot is fetched whole and truncated to half
    whole = requests.get(f"{gis.url}/network/snapshot.csv", timeout=30)
    half = requests.get(f"{gis.url}/network/snapshot.csv?fraction=0.5", timeout=30)

    # Then it has the contract's header, 3000 rows, and half of them when truncated
    rows = list(csv.DictReader(io.StringIO(whole.text)))
    assert whole.headers["Content-Type"] == "text/csv"
    assert tuple(csv.reader(io.StringIO(whole.text)).__next__()) == SNAPSHOT_HEADER
    assert len(rows) == 3000 == len({r["meter"] for r in rows})
    assert len(list(csv.DictReader(io.StringIO(half.text)))) == 1500


def test_a_dt_move_is_pushed_in_order_with_the_key_and_lands_in_the_next_snapshot(gis, gateway):
    # When the GIS pushes 4 DT moves in documents of 3 changes
    answer = push(gis, stream="dt-moves", count=4, batch=3, at="2026-11-03T02:00:00+05:30").json()

    # Then two documents reach the bus in sequence order, with the key
    assert (answer["changes"], answer["documents"], answer["sent"], answer["stopped"]) == (4, 2, 4, None)
    keys, docs = zip(*gateway.app["seen"])
    assert set(keys) == {"k-gis"}
    changes = [c for d in docs for c in d["Payload"]["changes"]]
    assert [d["Header"]["Noun"] for d in docs] == ["NetworkChanges"] * 2
    assert [c["sequence"] for c in changes] == list(range(answer["first_sequence"], answer["last_sequence"] + 1))
    assert {(c["kind"], c["type"]) for c in changes} == {("move", "dt")}

    # And the next snapshot and the ground truth put the moved DT under its new feeder
    moved = changes[0]
    rows = [r for r in csv.DictReader(io.StringIO(requests.get(f"{gis.url}/network/snapshot.csv", timeout=30).text))
            if r["dt"] == moved["mrid"]]
    assert rows and {r["feeder"] for r in rows} == {moved["parent"]}
    truth = requests.get(f"{gis.url}/network/meters/{rows[0]['meter']}", timeout=5).json()["where"]
    before = requests.get(f"{gis.url}/network/meters/{rows[0]['meter']}?at=2026-11-03T01:59:59%2B05:30",
                          timeout=5).json()["where"]
    assert truth["feeder"] == moved["parent"] and before["feeder"] != moved["parent"]
    assert requests.get(f"{gis.url}/network/changes", timeout=5).json()["changes"] == changes


def test_a_document_the_bus_answers_503_is_sent_again_and_a_refusal_stops_the_push(gis, gateway):
    # Given a bus that answers 503 once
    gateway.app["answers"][:] = [503]

    # When new connections are pushed
    answer = push(gis, stream="new-connections", count=5).json()

    # Then the document went twice and was taken
    assert answer["status"] == {"503": 1, "202": 1} and answer["sent"] == 5 and answer["stopped"] is None

    # And a 400 stops the push at that document, later ones unsent
    gateway.app["answers"][:] = [202, 400]
    stopped = push(gis, stream="meter-replacements", count=6, batch=2).json()
    assert stopped["sent"] == 2 and "answered 400" in stopped["stopped"]
    assert requests.get(f"{gis.url}/stats", timeout=5).json()["push_status"] == {"202": 2, "503": 1, "400": 1}


def test_the_full_network_is_pushed_parents_first(gis, gateway):
    answer = push(gis, stream="full", batch=1000).json()
    changes = [c for _, d in gateway.app["seen"] for c in d["Payload"]["changes"]]
    assert answer["changes"] == len(changes) == answer["sent"] and answer["first_sequence"] == 1
    assert [c["type"] for c in changes[:2]] == ["substation", "substation"] and changes[-1]["type"] == "consumer"


def test_the_nightly_snapshot_is_dropped_into_the_folder_whole(gis, tmp_path):
    # When the GIS writes its nightly export, and a truncated one
    whole = requests.post(f"{gis.url}/snapshot", json={"name": "night-1.csv"}, timeout=30).json()
    half = requests.post(f"{gis.url}/snapshot", json={"name": "night-2.csv", "fraction": 0.5}, timeout=30).json()

    # Then the files are there complete, with no .part left behind
    assert whole["rows"] == 3000 and half["rows"] == 1500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night-1.csv", "night-2.csv"]
    assert len((tmp_path / "night-1.csv").read_text().splitlines()) == 3001


def test_bad_requests_are_400(gis):
    assert push(gis, stream="teleport").status_code == 400
    assert push(gis, stream="dt-moves", count=1, colour="red").status_code == 400
    assert push(gis, stream="dt-moves", count=1, at="2020-01-01T00:00:00+05:30").status_code == 400
    assert requests.post(f"{gis.url}/push", data=b"{nope", timeout=5).status_code == 400
    assert requests.post(f"{gis.url}/_control", json={"mode": "sideways"}, timeout=5).status_code == 400


def test_the_control_modes_apply_to_the_snapshot(gis):
    requests.post(f"{gis.url}/_control", json={"mode": "error", "status": 500, "times": 1}, timeout=5)
    assert requests.get(f"{gis.url}/network/snapshot.csv", timeout=30).status_code == 500
    assert requests.get(f"{gis.url}/network/snapshot.csv", timeout=30).status_code == 200


def test_the_stand_in_runs_as_a_process_with_the_usual_options(tmp_path):
    with SimulatorProcess("simulators.gis", "--consumers", "500", "--drop-dir", str(tmp_path / "in")) as gis:
        stats = requests.get(f"{gis.url}/stats", timeout=5).json()
        assert (stats["consumers"], stats["name"]) == (500, "gis")
        # without a bus URL a push only applies the changes
        assert requests.post(f"{gis.url}/push", json={"stream": "dt-moves", "count": 1}, timeout=5).status_code == 400
        assert requests.post(f"{gis.url}/push", json={"stream": "new-connections", "count": 1, "send": False},
                             timeout=5).json()["sent"] == 0
        assert requests.get(f"{gis.url}/stats", timeout=5).json()["consumers"] == 501
