"""The GIS pushing change documents to a real gateway process, which applies them to a real SQLite
network store under the test's GRIDBUS_HOME and answers only after the commit."""
from __future__ import annotations

import csv
import io
import json
import socket
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from connectors.http_push.keys import KeyStore, keys_path
from tests.support import Mdms, run_cli, start_gateway, wait_for

pytestmark = pytest.mark.broker

T = "2026-11-01T00:00:00+05:30"
PATH = "gis/network"


def change(n, kind, type_, mrid, parent=None, at=T, **attributes):
    return {"changeId": f"g-{n}", "sequence": n, "effectiveFrom": at, "kind": kind, "type": type_, "mrid": mrid,
            "parent": parent, "attributes": attributes}


def document(changes, message_id="gis-msg-1"):
    return {"Header": {"Verb": "changed", "Noun": "NetworkChanges", "MessageID": message_id},
            "Payload": {"changes": changes}}


BASE = [change(1, "create", "substation", "SS-1"), change(2, "create", "feeder", "F-1", "SS-1"),
        change(3, "create", "dt", "DT-1", "F-1", rating_kva=100), change(10, "create", "dt", "DT-2", "F-1", rating_kva=63),
        change(4, "create", "consumer", "C-1", "DT-1", meter="M-1", category="domestic")]


@pytest.fixture
def gis(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    routes = tmp_path / "routes"
    routes.mkdir()
    # the shipped route, with a short wait for a slow sender
    (routes / "uc9-network.yaml").write_text(textwrap.dedent(f"""\
        use_case: 9
        routes:
          - id: gis-network-changes
            source: {{system: gis, connector: gis-push, path: {PATH}, read_timeout_s: 2}}
            method: push
            message: {{noun: NetworkChanges, verb: changed}}
            destinations:
              - {{system: network, connector: network-store}}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    store = KeyStore(keys_path(Path(env["GRIDBUS_HOME"]) / "state"))  # what `gridbus gateway keys add` does
    keys = {system: store.add(system) for system in ("gis", "hes-a")}
    server, url = start_gateway(env, logs, "--rate-per-system", "0")
    g = {"url": url, "keys": keys, "env": env, "logs": logs, "server": server}
    yield g
    g["server"].stop()


def post(g, body, key="gis", content_type="application/json", timeout=120):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, **({"X-API-Key": g["keys"][key]} if key else {})}
    return requests.post(f"{g['url']}/v1/push/{PATH}", data=data, headers=headers, timeout=timeout)


def show(g, mrid) -> dict | None:
    done = run_cli(g["env"], "network", "show", mrid, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def stats(g) -> dict:
    return json.loads(run_cli(g["env"], "network", "stats", "--json").stdout)


def test_a_document_with_bad_changes_is_partial_naming_each_and_only_the_good_ones_are_applied(gis):
    # Given a network SS-1 → F-1 → DT-1 (C-1), DT-2, pushed by the GIS
    assert post(gis, document(BASE, "base")).json()["Reply"]["Result"] == "OK"
    # When it pushes a bad parent, a cycle, a wrong parent type and a stale sequence among good changes
    answer = post(gis, document([
        change(20, "create", "consumer", "C-2", "DT-1", meter="M-2"),
        change(21, "create", "consumer", "C-3", "DT-404", meter="M-3"),
        change(22, "move", "dt", "DT-1", "C-1"),
        change(23, "create", "consumer", "C-4", "F-1", meter="M-4"),
        change(5, "update", "dt", "DT-2", rating_kva=250),
        change(25, "update", "consumer", "C-1", category="commercial")], "mixed"))
    # Then 200 PARTIAL after the commit, one Error per refused change with its code and xpath
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["Reply"]["Result"] == "PARTIAL" and reply["Header"]["CorrelationID"] == "mixed"
    assert [(e["code"], e["level"], e["details"], e["xpath"]) for e in reply["Reply"]["Error"]] == [
        ("UNKNOWN_PARENT", "ERROR", "g-21", "Payload.changes[1]"), ("CYCLE", "ERROR", "g-22", "Payload.changes[2]"),
        ("WRONG_PARENT_TYPE", "ERROR", "g-23", "Payload.changes[3]"), ("STALE", "ERROR", "g-5", "Payload.changes[4]")]
    assert reply["summary"]["applied"] == 2
    # and the store holds the good changes and nothing of the refused ones
    consumers = {row["consumer"]: row for row in csv.DictReader(io.StringIO(
        run_cli(gis["env"], "network", "export").stdout))}
    assert sorted(consumers) == ["C-1", "C-2"]  # neither C-3 (bad parent) nor C-4 (under a feeder)
    assert (consumers["C-2"]["dt"], consumers["C-1"]["dt"], consumers["C-1"]["feeder"]) == ("DT-1", "DT-1", "F-1")
    assert consumers["C-1"]["category"] == "commercial"
    dt1 = show(gis, "DT-1")  # not moved under its own consumer
    assert dt1["parent"] == "F-1" and dt1["version"] == 1
    assert show(gis, "DT-2")["attributes"]["rating_kva"] == 63  # the stale update not applied


def test_the_same_document_twice_is_applied_once_and_the_repeat_answered_ok_as_duplicates(gis):
    # Given a document the gateway has applied
    first = post(gis, document(BASE, "twice")).json()
    assert first["Reply"]["Result"] == "OK" and first["summary"]["applied"] == len(BASE)
    # When the GIS sends it again (it never saw the answer, say)
    again = post(gis, document(BASE, "twice")).json()
    # Then OK, every change reported a duplicate (INFO), none applied again
    assert again["Reply"]["Result"] == "OK" and again["summary"]["applied"] == 0
    assert {(e["code"], e["level"]) for e in again["Reply"]["Error"]} == {("DUPLICATE", "INFO")}
    assert len(again["Reply"]["Error"]) == len(BASE)
    assert stats(gis)["changesApplied"] == len(BASE) and show(gis, "C-1")["version"] == 1


def test_a_master_data_linkage_config_is_applied_too(gis):
    # Given the network  When the GIS sends a 61968-9 create of a usage point's links, as XML
    post(gis, document(BASE, "base"))
    xml = b"""<RequestMessage><Header><Verb>create</Verb><Noun>MasterDataLinkageConfig</Noun>
      <MessageID>mdlc-1</MessageID></Header><Payload><MasterDataLinkageConfig><ConfigurationEvent>
      <effectiveDateTime>2026-11-02T00:00:00+05:30</effectiveDateTime></ConfigurationEvent>
      <Meter><Names><name>M-77</name></Names></Meter>
      <UsagePoint><mRID>C-77</mRID><Equipments><mRID>DT-2</mRID></Equipments></UsagePoint>
      </MasterDataLinkageConfig></Payload></RequestMessage>"""
    answer = post(gis, xml, content_type="application/xml")
    # Then OK, and the consumer hangs under DT-2 with its meter
    assert answer.status_code == 200 and answer.json()["Reply"]["Result"] == "OK", answer.text
    assert show(gis, "C-77")["meter"] == "M-77"


def test_who_may_push_and_bodies_that_are_no_change_document_are_refused_and_nothing_applied(gis):
    # Given no key, an unknown key, another system's key: 401, 401, 403
    assert post(gis, document(BASE), key=None).status_code == 401
    bad = requests.post(f"{gis['url']}/v1/push/{PATH}", json=document(BASE), headers={"X-API-Key": "x.y"}, timeout=10)
    assert bad.status_code == 401
    assert post(gis, document(BASE), key="hes-a").status_code == 403
    # Not JSON, 10 MB of garbage, 10,000 levels deep, wrong shape, wrong media type: 4xx naming the reason
    for body, status, code in [(b"{not json", 400, "MALFORMED_JSON"), (b"x" * 10_000_000, 400, "MALFORMED_JSON"),
                               (b"[" * 10_000 + b"]" * 10_000, 400, "TOO_DEEP"),
                               (b'{"Payload": {"changes": {"a": 1}}}', 400, "NOT_A_CHANGE_DOCUMENT")]:
        answer = post(gis, body)
        assert (answer.status_code, answer.json()["Reply"]["Error"][0]["code"]) == (status, code), answer.text[:300]
    assert post(gis, b"a,b", content_type="text/csv").status_code == 415
    # Changes of the wrong JSON types: each refused INVALID with the field named (FAILED), not a 500
    answer = post(gis, document([{"changeId": 1}, "x", None, change(1, "create", "substation", ["SS"]),
                                 {**change(2, "create", "substation", "SS-2"), "sequence": "2"}]))
    assert answer.status_code == 200 and answer.json()["Reply"]["Result"] == "FAILED"
    assert {e["code"] for e in answer.json()["Reply"]["Error"]} == {"INVALID"}
    # Then nothing is in the store
    assert stats(gis)["changesApplied"] == 0


@pytest.mark.slow
def test_a_huge_body_is_refused_before_it_is_read_and_100000_changes_are_taken_or_refused_clearly(gis):
    # Given a Content-Length beyond the route's 32 MB: 413 at once, the body never sent
    with socket.create_connection(("127.0.0.1", int(gis["url"].rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(f"POST /v1/push/{PATH} HTTP/1.1\r\nHost: x\r\nX-API-Key: {gis['keys']['gis']}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 40000000\r\n\r\n".encode())
        assert s.recv(200).startswith(b"HTTP/1.1 413")
    # When 100,000 changes come, half of them garbage
    changes = []
    for n in range(50_000):
        changes += [change(n + 1, "create", "substation", f"S{n}"), {"changeId": f"bad-{n}", "kind": 7}]
    started = time.monotonic()
    answer = post(gis, document(changes, "big"))
    # Then PARTIAL: the 50,000 good ones applied, each bad one named
    assert answer.status_code == 200, answer.text[:300]
    reply = answer.json()
    assert reply["summary"]["applied"] == 50_000 and len(reply["Reply"]["Error"]) == 50_000
    assert reply["Reply"]["Error"][0]["xpath"] == "Payload.changes[1]"
    assert time.monotonic() - started < 60
    # and one more change than the route takes is refused whole, saying how many it takes
    refused = post(gis, document(changes + [change(10**6, "create", "substation", "S-X")]))
    assert refused.status_code == 413 and refused.json()["Reply"]["Error"][0]["code"] == "TOO_MANY_CHANGES"
    assert stats(gis)["elements"]["substation"] == 50_000


def test_a_slow_sender_is_cut_off_and_holds_nobody_else_up(gis):
    # Given a sender that trickles its body a byte at a time
    port = int(gis["url"].rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), timeout=15)
    slow.sendall(f"POST /v1/push/{PATH} HTTP/1.1\r\nHost: x\r\nX-API-Key: {gis['keys']['gis']}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
    started = time.monotonic()
    # When another push comes meanwhile  Then it is answered at once
    assert post(gis, document(BASE), timeout=5).json()["Reply"]["Result"] == "OK"
    # and the slow one gets 408 once the route's 2 s are up, not whenever it pleases
    answer = b""
    try:
        while not answer:
            slow.sendall(b" ")
            time.sleep(0.3)
            slow.setblocking(False)
            try:
                answer = slow.recv(200)
            except BlockingIOError:
                pass
            slow.setblocking(True)
            assert time.monotonic() - started < 10, "the slow sender was never cut off"
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        slow.close()
    assert not answer or answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 10


def consumers_document(count: int) -> dict:
    dts = [change(100 + d, "create", "dt", f"DT-{d}", "F-1", dt_meter=f"DM-{d}") for d in range(50)]
    return document(dts + [change(1000 + i, "create", "consumer", f"C-{i:06d}", f"DT-{i % 50}", meter=f"M-{i:06d}",
                                  category="domestic") for i in range(count)], "large-1")


@pytest.mark.slow
def test_a_gateway_killed_while_applying_then_sent_the_document_again_equals_a_clean_run(gis, tmp_path):
    # Given the network's top, and a document of 20,000 consumers on its way
    post(gis, document(BASE[:2], "top"))
    large = consumers_document(20_000)
    pool = ThreadPoolExecutor(1)
    first = pool.submit(post, gis, large)
    # When the gateway is killed -9 once it has checked the first chunk, before the commit
    wait_for(lambda: "5000 of 20050 changes checked" in gis["server"].log(), 60, "the first chunk checked",
             every_s=0.01)
    gis["server"].kill9()
    try:
        said = first.result(30)
    except requests.RequestException:
        said = None  # no answer at all: the GIS sends it again
    consumers = stats(gis)["elements"]["consumer"]
    # Then the store holds all of the document or nothing, and no answer said OK without it
    assert consumers in (0, 20_000)
    assert said is None or (said.json()["Reply"]["Result"] == "OK" and consumers == 20_000)
    # When it restarts and the GIS sends the same document again
    gis["server"], gis["url"] = start_gateway(gis["env"], gis["logs"], "--rate-per-system", "0")
    again = post(gis, large).json()
    assert again["Reply"]["Result"] == "OK"
    assert again["summary"]["applied"] == (20_050 if consumers == 0 else 0)
    # Then the store equals a clean run of the same documents
    clean_env = {**gis["env"], "GRIDBUS_HOME": str(tmp_path / "clean")}
    (tmp_path / "clean").mkdir()
    for name, doc in (("top", document(BASE[:2])), ("large", large)):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        assert run_cli(clean_env, "network", "apply", str(tmp_path / f"{name}.json"), "--quiet").returncode == 0
    exported = run_cli(gis["env"], "network", "export").stdout
    assert exported == run_cli(clean_env, "network", "export").stdout and exported.count("\n") == 20_001


def test_the_gis_stand_in_pushes_a_generated_network_that_the_store_then_holds(gis):
    # Given the GIS stand-in with a generated network of 300 consumers, pushing to the gateway
    stand_in = Mdms(gis["env"], gis["logs"], name="gis", module="simulators.gis",
                    args=("--consumers", "300", "--seed", "3", "--bus-url", f"{gis['url']}/v1/push/{PATH}",
                          "--bus-key", gis["keys"]["gis"]))
    try:
        # When it pushes the whole network in documents of 100 changes
        pushed = requests.post(f"{stand_in.url}/push", json={"stream": "full", "batch": 100}, timeout=120).json()
        # Then every document was answered 200, and the store counts what the GIS has
        assert pushed["stopped"] is None and set(pushed["status"]) == {"200"}, pushed
        model = stand_in.stats()
        assert stats(gis)["elements"] == {"substation": model["substations"], "feeder": model["feeders"],
                                          "dt": model["dts"], "consumer": model["consumers"]}
    finally:
        stand_in.stop()
