"""The billing stand-ins for network updates: billing-1 (JSON) and billing-2 (CIM-style XML)
keep a path and version per consumer, refuse an older version with 409 and the batch whole,
take a redelivery, fail one named consumer with 422 and answer hostile bodies 400."""
from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import pytest
import requests

from simulators.billing_network import BillingNetworkServer, parse_xml, to_xml


def path(consumer="CON-00000001", version=1, dt="DT-000001", **more):
    return {"consumer": consumer, "consumerNo": "000100000001", "meter": "UPM00000001", "category": "domestic",
            "circle": "C01", "division": "C01D1", "subdivision": "C01D1S1", "dt": dt, "feeder": "FDR-0001",
            "substation": "SS-001", "effectiveFrom": "2026-11-03T02:00:00+05:30", "version": version,
            "retired": False, "changeId": f"gis-{version:06d}", **more}


@pytest.fixture(scope="module", params=["json", "xml"])
def billing(request):
    with BillingNetworkServer(name=f"billing-{request.param}", fmt=request.param, max_body_bytes=1 << 20) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(billing):
    requests.post(f"{billing.url}/_reset", timeout=5)
    yield


def post(billing, *paths, body=None):
    if body is None:
        body = (to_xml(list(paths)) if billing.app.format == "xml"
                else requests.models.complexjson.dumps({"updates": list(paths)}).encode())
    return requests.post(f"{billing.url}/consumers/updates", data=body, timeout=10,
                         headers={"Content-Type": "application/xml" if billing.app.format == "xml" else "application/json"})


def held(billing, consumer="CON-00000001"):
    answer = requests.get(f"{billing.url}/consumers/{consumer}", timeout=5)
    return answer.json() if answer.status_code == 200 else None


def stats(billing):
    return requests.get(f"{billing.url}/stats", timeout=5).json()


def test_a_newer_version_replaces_and_the_same_version_again_is_taken_without_change(billing):
    # Given version 1 and then version 2 (the DT moved) of one consumer
    assert post(billing, path(version=1)).status_code == 200
    assert post(billing, path(version=2, dt="DT-000002")).status_code == 200

    # When version 2 is delivered again
    again = post(billing, path(version=2, dt="DT-000002"))

    # Then it is 200 and the consumer holds version 2 with the new DT, stored once
    assert again.status_code == 200
    assert held(billing)["version"] == 2 and held(billing)["path"]["dt"] == "DT-000002"
    assert held(billing)["versions"] == [1, 2]
    s = stats(billing)
    assert (s["stored"], s["duplicates"], s["consumers"], s["stale_409"]) == (2, 1, 1, 0)


def test_an_older_version_is_409_naming_it_and_the_whole_batch_is_refused(billing):
    # Given consumer 1 at version 5
    post(billing, path(version=5))

    # When a batch brings a new consumer 2 and version 3 of consumer 1
    answer = post(billing, path("CON-00000002", version=1), path(version=3))

    # Then 409 names consumer 1 with the versions, and nothing of the batch is stored
    assert answer.status_code == 409
    assert "CON-00000001" in answer.text and "STALE_VERSION" in answer.text
    if billing.app.format == "json":
        [error] = answer.json()["Reply"]["Error"]
        assert (error["consumer"], error["sent"], error["held"]) == ("CON-00000001", 3, 5)
    else:
        root = ET.fromstring(answer.content)
        assert root.find(".//{*}Result").text == "FAILED" and root.find(".//{*}details").text == "CON-00000001"
    assert held(billing, "CON-00000002") is None and held(billing)["version"] == 5
    assert stats(billing)["stale_409"] == 1


def test_versions_inside_one_batch_must_not_go_back_either(billing):
    # When one batch carries versions 2 then 1 of the same consumer
    answer = post(billing, path(version=2), path(version=1))

    # Then 409 and nothing stored; in order (1 then 2) both are stored
    assert answer.status_code == 409 and held(billing) is None
    assert post(billing, path(version=1), path(version=2)).status_code == 200
    assert held(billing)["versions"] == [1, 2]


def test_a_consumer_set_to_fail_makes_every_batch_with_it_422_while_others_flow(billing):
    # Given consumer 7 set to fail permanently
    control = requests.post(f"{billing.url}/_control", json={"fail_consumer": "CON-00000007"}, timeout=5)
    assert control.json()["fail_consumers"] == ["CON-00000007"] and control.json()["mode"]["mode"] == "healthy"

    # When a batch holds it, and another batch does not
    refused = post(billing, path("CON-00000001"), path("CON-00000007"))
    assert post(billing, path("CON-00000008")).status_code == 200

    # Then the first is 422 naming it with nothing stored, the second is stored
    assert refused.status_code == 422 and "CON-00000007" in refused.text
    assert held(billing) is None and held(billing, "CON-00000008")["version"] == 1
    assert stats(billing)["failed_422"] == 1

    # And once cleared, the consumer is taken
    requests.post(f"{billing.url}/control", json={"fail_consumers": []}, timeout=5)
    assert post(billing, path("CON-00000007")).status_code == 200


def test_failure_modes_error_and_down_refuse_without_storing(billing):
    # Given an error mode for one POST
    requests.post(f"{billing.url}/_control", json={"mode": "error", "status": 503, "times": 1}, timeout=5)

    # Then that POST is 503, the next is stored
    assert post(billing, path()).status_code == 503 and held(billing) is None
    assert post(billing, path()).status_code == 200

    # And a system that is down drops the connection
    requests.post(f"{billing.url}/_control", json={"mode": "down", "times": 1}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        post(billing, path(version=2))
    assert held(billing)["version"] == 1 and stats(billing)["refused_posts"] == 2


@pytest.mark.parametrize("body", [b"{not json", b"<EventMessage><Header>", b"", b"[]", b'{"updates": []}',
                                  b'{"updates": [{"consumer": "C", "version": "2"}]}',
                                  b"[" * 100_000 + b"]" * 100_000,
                                  b"<a>" * 50_000 + b"</a>" * 50_000])
def test_hostile_or_malformed_bodies_are_400_and_the_stand_in_keeps_serving(billing, body):
    # When a broken, empty, wrongly typed or deeply nested body is posted
    answer = post(billing, body=body)

    # Then 400, nothing stored, and the next good batch is taken
    assert answer.status_code == 400
    assert stats(billing)["consumers"] == 0
    assert post(billing, path()).status_code == 200


def test_xml_entities_and_doctypes_are_refused(billing):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            b"<EventMessage><Header><Noun>&b;</Noun></Header></EventMessage>")
    assert post(billing, body=bomb).status_code == 400


def test_a_body_over_the_limit_is_400_unread(billing):
    # When 2 MB is posted to a stand-in with a 1 MB limit
    answer = post(billing, body=b" " * (2 << 20))

    # Then 400 BODY_TOO_LARGE, and the stand-in still serves
    assert answer.status_code == 400 and "BODY_TOO_LARGE" in answer.text
    assert post(billing, path()).status_code == 200


def test_a_lying_content_length_does_not_hang_other_clients(billing):
    # Given a client that announces 100 bytes and sends 10, then hangs
    with socket.create_connection((billing.host, billing.port), timeout=5) as s:
        s.sendall(b"POST /consumers/updates HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"updates\"")
        # Then another client is served meanwhile
        assert post(billing, path()).status_code == 200


def test_the_xml_document_round_trips_and_is_well_formed():
    # Given two paths, one of a retired consumer without a meter
    paths = [path(), path("CON-00000002", version=4, retired=True, meter=None)]

    # When written as billing-2 XML and read back
    body = to_xml(paths, "m-9")
    message_id, read = parse_xml(body)

    # Then it parses as XML and gives back exactly the paths
    assert ET.fromstring(body).tag.endswith("EventMessage")
    assert message_id == "m-9" and read == paths


def test_all_consumers_are_listed_for_a_ground_truth_comparison(billing):
    post(billing, path("CON-00000001"), path("CON-00000002", version=3))
    listed = requests.get(f"{billing.url}/consumers", timeout=5).json()
    assert listed["count"] == 2 and listed["consumers"]["CON-00000002"]["version"] == 3
