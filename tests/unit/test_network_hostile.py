"""Hostile change documents: each gives a clear refusal or error, never a crash, and nothing of it
lands in the store half-read."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from bus.cli.network import network
from bus.errors import DecodeError, ValidationError
from bus.network import open_store
from bus.network.model import Reason, read_document

T = "2026-11-01T00:00:00+05:30"


def change(n, **over):
    base = {"changeId": f"h-{n}", "sequence": n, "effectiveFrom": T, "kind": "create", "type": "substation",
            "mrid": f"SS-{n}"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "network.sqlite")


@pytest.mark.parametrize("raw, says", [
    ("not a change", "must be an object"),
    (change(1, changeId=42), "changeId must be a non-empty string"),
    (change(1, changeId=None), "changeId must be a non-empty string"),
    (change(1, mrid="x" * 10_000), "mrid is 10,000 characters long"),
    (change(1, mrid="   "), "mrid must be a non-empty string"),
    (change(1, sequence="7"), "sequence must be a whole number"),
    (change(1, sequence=True), "sequence must be a whole number"),
    (change(1, sequence=-1), "sequence must be a whole number"),
    (change(1, sequence=2**70), "sequence must be a whole number"),
    (change(1, kind="delete"), "kind 'delete' is not one of"),
    (change(1, kind=["create"]), "kind must be a non-empty string, not a list"),
    (change(1, type="pole"), "type 'pole' is not one of"),
    (change(1, effectiveFrom="yesterday"), "is not an ISO 8601 time"),
    (change(1, effectiveFrom="2026-11-01T00:00:00"), "has no UTC offset"),
    (change(1, effectiveFrom=1762000000), "effectiveFrom must be a non-empty string"),
    (change(1, type="dt", parent=...), "a create of a dt needs its parent"),
    (change(1, kind="move", parent="SS-9"), "a substation has no parent to move to"),
    (change(1, attributes=[1, 2]), "attributes must be an object, not a list"),
    (change(1, attributes={"deep": {"deeper": {"deepest": 1}}}), "attribute 'deep' must be a string, number"),
    (change(1, attributes={"k": "v" * 100_000}), "attribute 'k' is 100,000 characters long"),
    (change(1, attributes={f"k{i}": i for i in range(1000)}), "attributes has 1,000 keys"),
    (change(1, attributes={"k" * 500: 1}), "an attribute name is 500 characters long"),
    (change(1, attributes={"x": float("nan")}), "is NaN"),
    (change(1, attributes={"rating_kva": 10 ** 20}), "integer beyond 64 bits"),
    (change(1, type="consumer", parent="DT-1"), "created with its meter serial"),
    (change(1, type="consumer", parent="DT-1", attributes={"meter": 12345}), "attribute meter must be a meter serial"),
    (change(1, name=["a"]), "name must be a non-empty string, not a list"),
])
def test_a_malformed_change_is_refused_as_invalid_saying_which_field(store, raw, says):
    result = store.apply([raw])
    assert result.result == "FAILED"
    (outcome,) = result.outcomes
    assert outcome.code is Reason.INVALID and says in outcome.reason, outcome.reason
    assert store.counts()["substation"] == 0


def test_a_document_of_100000_changes_half_of_them_garbage_is_answered_change_by_change(store):
    # Given 100,000 changes: substations, every other one with a wrong type of sequence
    raws = [change(n) if n % 2 else change(n, sequence=str(n)) for n in range(1, 100_001)]
    # When applied  Then the good half is applied and each bad one named, in a few seconds
    start = time.monotonic()
    result = store.apply(raws)
    assert time.monotonic() - start < 60  # about 3 s of CPU: a bound against the pathological, not a benchmark
    assert result.result == "PARTIAL" and result.count("applied") == 50_000 and len(result.refused) == 50_000
    assert store.counts()["substation"] == 50_000


@pytest.mark.parametrize("data, error, says", [
    (b"[" * 100_000 + b"]" * 100_000, DecodeError, "not a JSON document"),
    (b"\xff\xfe garbage", DecodeError, "not a JSON document"),
    (b'{"Payload": {"changes": {"a": 1}}}', ValidationError, "Payload.changes, a list"),
    (b'[1, 2, 3]', ValidationError, "is an object, not a list"),
    (b'{"Header": {"Noun": "MeterReadings"}, "Payload": {"changes": []}}', ValidationError, "not NetworkChanges"),
    (b'{"Header": "x", "changes": []}', ValidationError, "Header must be an object"),
    # found by the gateway fuzz test: an empty Payload.changes beside a top-level list of bad changes
    # answered OK with nothing applied
    (b'{"Payload": {"changes": []}, "changes": [{"kind": "retire", "sequence": -1}]}', ValidationError,
     "not both"),
])
def test_a_document_that_is_not_one_is_a_message_error_not_a_crash(data, error, says):
    with pytest.raises(error, match=says):
        read_document(data)


def test_cli_apply_prints_each_refused_change_and_exits_1(tmp_path, monkeypatch):
    # Given a document with one good and one refused change
    monkeypatch.setenv("GRIDBUS_NETWORK_STORE", str(tmp_path / "n.sqlite"))
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"Header": {"Verb": "changed", "Noun": "NetworkChanges", "MessageID": "m-1"},
                               "Payload": {"changes": [change(1), change(2, type="feeder", parent="SS-404")]}}))
    # When applied with the CLI
    result = CliRunner().invoke(network, ["apply", str(doc)])
    # Then the refused one is named with its reason, the summary says PARTIAL, exit 1
    assert result.exit_code == 1
    assert "changes[1] h-2 SS-2: refused UNKNOWN_PARENT: parent SS-404 is not known" in result.output
    assert "PARTIAL: 1 applied, 0 duplicate, 1 refused" in result.output
    # and --json says the same for a script; the second time the good one is a duplicate
    again = CliRunner().invoke(network, ["apply", str(doc), "--json"])
    out = json.loads(again.output)
    assert out["result"] == "PARTIAL" and out["duplicate"] == 1 and out["outcomes"][1]["code"] == "UNKNOWN_PARENT"
    # and show, stats, export answer from the same store
    shown = json.loads(CliRunner().invoke(network, ["show", "SS-1", "--json"]).output)
    assert shown["mrid"] == "SS-1" and shown["children"] == {"feeder": 0}
    assert json.loads(CliRunner().invoke(network, ["stats", "--json"]).output)["elements"]["substation"] == 1
    assert CliRunner().invoke(network, ["export"]).output.startswith("consumer,consumer_no,meter,")
    missing = CliRunner().invoke(network, ["show", "SS-2"])
    assert missing.exit_code == 1 and "no element SS-2 now" in missing.output


def test_cli_apply_of_a_file_that_is_not_json_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDBUS_NETWORK_STORE", str(tmp_path / "n.sqlite"))
    doc = tmp_path / "doc.json"
    doc.write_bytes(b"\x00\x01 not json")
    result = CliRunner().invoke(network, ["apply", str(doc)])
    assert result.exit_code == 1 and "error: not a JSON document" in result.output
