"""The gateway's OpenAPI document lists the GIS push path when it serves one: the change document
it takes (JSON or MasterDataLinkageConfig XML) and every answer, with the shapes the gateway
really sends (checked here against the document, as a client generated from it would)."""
from __future__ import annotations

import copy
import io
import json
import re

import jsonschema_rs
import pytest
import schemathesis

from bus.network.model import ApplyResult, Outcome, Reason
from bus.routes import load_routes
from connectors.http_push.app import Gateway, reply
from connectors.http_push.gis_push import NOUN, network_reply
from connectors.http_push.keys import KeyStore
from tests.support import ROOT, ROUTE_ENV

GIS = "/v1/push/gis/network"
T = "2026-11-03T02:00:00+05:30"


def served(tmp_path, *files: str) -> tuple[dict, str]:
    """The OpenAPI document and docs page a gateway of these route files serves (through its WSGI
    application, as GET /openapi.json and GET /docs are answered; no broker is asked)."""
    routes = list(load_routes([ROOT / "routes" / f for f in files], env=ROUTE_ENV))
    gateway = Gateway(routes, "amqp://guest:guest@127.0.0.1:1/t", KeyStore(tmp_path / "keys.json"))

    def get(path: str) -> str:
        answered = []
        body = gateway({"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO()},
                       lambda status, headers: answered.append(status))
        assert answered == ["200 OK"]
        return b"".join(body).decode()

    return json.loads(get("/openapi.json")), get("/docs")


@pytest.fixture
def document(tmp_path) -> dict:
    return served(tmp_path, "uc2-4-5-alarms.yaml", "uc9-network.yaml")[0]


def json_schema(document: dict, name: str) -> dict:
    """Component ``name`` as plain JSON Schema: references inlined, OpenAPI 3.0's ``nullable``
    spelled as JSON Schema says it."""
    def plain(node):
        if isinstance(node, list):
            return [plain(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return plain(document["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]])
        node = {k: plain(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [{"type": "null"}, node]}
        return node
    return plain(copy.deepcopy(document["components"]["schemas"][name]))


def change(n: int, **kw) -> dict:
    return {"changeId": f"g-{n}", "sequence": n, "effectiveFrom": T, "kind": "create", "type": "substation",
            "mrid": f"SS-{n}", **kw}


def test_a_gateway_serving_a_gis_push_route_documents_its_path_with_body_and_answers(tmp_path):
    # Given a gateway serving the alarm pushes and the GIS's change route (uc9-network.yaml)
    document, page = served(tmp_path, "uc2-4-5-alarms.yaml", "uc9-network.yaml")
    # When its OpenAPI document is read
    post = document["paths"][GIS]["post"]
    # Then POST /v1/push/gis/network is there: a change document in JSON or a
    # MasterDataLinkageConfig in XML, with the API key
    assert post["security"] == [{"ApiKey": []}] and post["requestBody"]["required"] is True
    content = post["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/NetworkChangeDocument"}
    assert "MasterDataLinkageConfig" in content["application/xml"]["schema"]["description"]
    # And its answers: 200 with the store's Reply, every refusal the gateway's FAILED Reply
    answers = {int(code): r["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
               for code, r in post["responses"].items()}
    assert answers == {200: "NetworkReply", **dict.fromkeys((400, 401, 403, 408, 411, 413, 415, 429, 503), "Reply")}
    assert "TOO_MANY_CHANGES" in post["responses"]["413"]["description"]
    assert "BUSY" in post["responses"]["503"]["description"]
    # And the other pushes are still documented as before, and the docs page lists the GIS path
    assert "/v1/push/hes-a/alarms" in document["paths"]
    assert f"POST {GIS}" in page and "NetworkChangeDocument" in page


def test_a_gateway_without_a_gis_push_route_does_not_document_one(tmp_path):
    # Given a gateway serving only the alarm pushes
    document, page = served(tmp_path, "uc2-4-5-alarms.yaml")
    # When its OpenAPI document is read  Then no GIS path and none of its schemas
    assert GIS not in document["paths"] and "gis/network" not in page
    assert not [name for name in document["components"]["schemas"] if name.startswith("Network")]


def test_the_change_document_of_network_formats_md_is_what_the_document_describes(document):
    # Given the documented request body, and the example of docs/network-formats.md
    schema = jsonschema_rs.validator_for(json_schema(document, "NetworkChangeDocument"))
    text = (ROOT / "docs" / "network-formats.md").read_text()
    example = json.loads(re.search(r"## The change document.*?```json\n(.*?)```", text, re.S).group(1))
    # When each is checked  Then the example and a bare {"changes": [...]} are taken
    assert schema.is_valid(example)
    assert schema.is_valid({"changes": [change(1), change(2, kind="update", attributes={"x": None, "y": 1.5})]})
    assert schema.is_valid({"changes": [change(3, type="dt", parent="FDR-1", name=None,
                                               attributes={"rating_kva": 100, "dt_meter": "DTM1"})]})
    # And a document without changes, or a change with no changeId, an unknown kind, a list as an
    # attribute or an integer beyond 64 bits is not
    assert not schema.is_valid({"Header": {"Noun": "NetworkChanges"}})
    assert not schema.is_valid({"changes": [{k: v for k, v in change(1).items() if k != "changeId"}]})
    assert not schema.is_valid({"changes": [change(1, kind="delete")]})
    assert not schema.is_valid({"changes": [change(1, attributes={"x": [1]})]})
    assert not schema.is_valid({"changes": [change(1, attributes={"x": 2 ** 64})]})


def test_the_answers_the_gateway_gives_have_the_documented_shapes(document):
    # Given a document of four changes: one applied, one duplicate, two refused
    result = ApplyResult([Outcome(0, "g-1", "SS-1", "applied"),
                          Outcome(1, "g-2", "SS-2", "duplicate", Reason.DUPLICATE, "change g-2 was applied before"),
                          Outcome(2, "g-3", "DT-3", "refused", Reason.UNKNOWN_PARENT, "parent FDR-404 is not known"),
                          Outcome(3, None, None, "refused", Reason.INVALID, "changeId must be a non-empty string")])
    # When the gateway answers it (200), with and without a MessageID, and refuses a body (4xx)
    partial, anonymous = network_reply(result, "msg-1", "gis-msg-42"), network_reply(result, "msg-2", None)
    refused = reply("FAILED", NOUN, errors=[("TOO_MANY_CHANGES", "101 changes; at most 100 per document")])
    # Then each answer is what its status is documented to give
    assert partial["Reply"]["Result"] == "PARTIAL" and len(partial["Reply"]["Error"]) == 3
    network = jsonschema_rs.validator_for(json_schema(document, "NetworkReply"))
    for answer in (partial, anonymous):
        network.validate(answer)
    jsonschema_rs.validator_for(json_schema(document, "Reply")).validate(refused)
    # And every code a change can be refused with is in the documented list
    codes = json_schema(document, "NetworkReply")["properties"]["Reply"]["properties"]["Error"]["items"]
    assert set(codes["properties"]["code"]["enum"]) == {r.value for r in Reason}


def test_the_document_with_the_gis_path_loads_in_the_gateway_fuzzer(document):
    # Given the document (tests/integration/test_gateway_fuzz.py calls every operation in it)
    # When schemathesis reads it  Then the GIS push is one of its operations
    operations = [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]
    assert ("POST", GIS) in {(op.method.upper(), op.path) for op in operations}
