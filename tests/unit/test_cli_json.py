"""`--json` on every list and show command: one JSON document on stdout that a script can
read (a list for a list, an object for a show; times as epoch seconds), nothing else there.

Each store is filled directly, as the commands' own writers would fill it; the broker is an
address nobody listens on (the dlq commands then say so on stderr and read the store), or a
stand-in for its management API where a command only reads it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bus.cli import broker as broker_cli
from bus.cli import dlq as dlq_cli
from bus.cli import routes as routes_cli
from bus.cli.commands import commands
from bus.cli.gateway import gateway
from bus.cli.keeper import keeper
from bus.cli.operators import operators
from bus.cli.run import ingress, send, worker
from bus.cli.trace import recorder, trace
from bus.deadletters import headers as dl
from bus.deadletters.store import DeadLetterStore, dumps
from bus.operators import OperatorStore, operators_path
from bus.requests.store import RequestStore, requests_path
from bus.tracing.store import SqliteTraceStore
from connectors.http_push.keys import KeyStore, keys_path
from tests.support import ROOT, ROUTE_ENV

NOW = time.time()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A gridbus home with no broker behind it (port 1 refuses at once)."""
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    for name, value in {**ROUTE_ENV, "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
                        "GRIDBUS_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/t",
                        "GRIDBUS_MANAGEMENT_URL": "http://guest:guest@127.0.0.1:1",
                        "GRIDBUS_ROUTES": str(ROOT / "routes"),
                        "GRIDBUS_TRACE_STORE": str(home / "state" / "trace.sqlite")}.items():
        monkeypatch.setenv(name, value)
    return home


def run_json(command: click.Command, *args: str, exit_code: int = 0):
    """Run ``command`` the way a script would and parse its stdout as one JSON document."""
    done = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    assert done.exit_code == exit_code, done.output
    return json.loads(done.stdout), done.stderr


def dead_letter(i: int, route: str = "hes-a-csv-to-mdms-1", reason: str = "MDMS answered 400") -> dict:
    message_id = f"msg-{i}"
    return {"dl_id": f"dl-{i}", "message_id": message_id, "correlation_id": f"corr-{i}", "route": route,
            "destination": "mdms-1", "fingerprint": f"fp-{route}", "error_class": "PermanentDeliveryError",
            "reason": reason, "traceback": "Traceback ...", "attempts": 3, "first_failure": NOW - 60,
            "last_failure": NOW - 30, "worker_host": "host-a", "collected_at": NOW, "body": b"reading\xff",
            "properties": dumps({"message_id": message_id, "correlation_id": f"corr-{i}"}),
            "headers": dumps({"id": message_id, dl.DL_ROUTE: route, dl.DL_REASON: reason})}


@pytest.fixture
def dead_letters(home) -> DeadLetterStore:
    store = DeadLetterStore(home / "state" / "dead-letters.sqlite")
    store.add([dead_letter(1), dead_letter(2), dead_letter(3, route="hes-b-csv-to-mdms-2", reason="timeout")])
    return store


def test_dlq_list_json_is_a_list_of_counts_per_route_with_the_oldest_as_epoch_seconds(dead_letters):
    # Given three dead letters on two routes, and no broker to collect from
    # When a script lists them, plain and grouped
    listed, stderr = run_json(dlq_cli.dlq, "list")
    grouped, _ = run_json(dlq_cli.dlq, "list", "--group")
    # Then stdout is one JSON list a script can count with; the broker's absence is said on stderr
    assert {(r["route"], r["count"]) for r in listed} == {("hes-a-csv-to-mdms-1", 2), ("hes-b-csv-to-mdms-2", 1)}
    assert all(isinstance(r["oldest"], float) and abs(r["oldest"] - (NOW - 30)) < 1 for r in listed)
    assert "broker unreachable" in stderr
    assert {(r["route"], r["fingerprint"], r["error_class"]) for r in grouped} == {
        ("hes-a-csv-to-mdms-1", "fp-hes-a-csv-to-mdms-1", "PermanentDeliveryError"),
        ("hes-b-csv-to-mdms-2", "fp-hes-b-csv-to-mdms-2", "PermanentDeliveryError")}


def test_a_list_with_nothing_in_it_is_an_empty_json_list_not_a_sentence(home):
    # Given no dead letters, no operators, no commands
    # When each is listed with --json  Then stdout is [] (the sentence is for people)
    assert run_json(dlq_cli.dlq, "list")[0] == []
    assert run_json(operators, "list")[0] == []
    assert run_json(commands, "list")[0] == []
    assert run_json(gateway, "keys", "list")[0] == []
    assert run_json(trace, "--meter", "UPM404")[0] == []


def test_dlq_show_json_is_one_object_with_what_a_script_needs_to_decide_on_a_replay(dead_letters):
    # When one dead letter is shown with --json (by its message id)
    shown, _ = run_json(dlq_cli.dlq, "show", "msg-1")
    # Then it is an object: ids, route, why, when (epoch seconds), state, headers, the body
    assert (shown["dl_id"], shown["message_id"], shown["correlation_id"], shown["route"]) == (
        "dl-1", "msg-1", "corr-1", "hes-a-csv-to-mdms-1")
    assert (shown["error_class"], shown["reason"], shown["attempts"], shown["state"]) == (
        "PermanentDeliveryError", "MDMS answered 400", 3, "dead")
    assert shown["last_failure"] == pytest.approx(NOW - 30) and shown["replay_id"] is None
    assert shown["headers"][dl.DL_REASON] == "MDMS answered 400" and shown["traceback"] == "Traceback ..."
    # and a body that is not UTF-8 comes as base64, never as broken text
    assert "body" not in shown and shown["body_base64"] == "cmVhZGluZ/8="


def test_dlq_audit_json_lists_who_did_what_with_epoch_times(dead_letters):
    # Given an audited replay and purge
    dead_letters.audit("dl-1", "replay", "operator-a", {"replay_id": "r-1"})
    dead_letters.audit(None, "purge", "operator-b", {"count": 2})
    # When the audit trail is read with --json, of all and of one dead letter
    trail, _ = run_json(dlq_cli.dlq, "audit")
    one, _ = run_json(dlq_cli.dlq, "audit", "dl-1")
    # Then each entry says who, what, when (a number) and the detail
    assert [(e["action"], e["who"], e["dl_id"]) for e in trail] == [
        ("replay", "operator-a", "dl-1"), ("purge", "operator-b", None)]
    assert all(abs(e["at"] - time.time()) < 60 for e in trail)
    assert [e["detail"] for e in one] == [{"replay_id": "r-1"}]
    # and without --json it is a table for people
    table = CliRunner().invoke(dlq_cli.dlq, ["audit"]).stdout
    assert table.splitlines()[0].split() == ["at", "action", "who", "dead", "letter", "detail"]


def event(kind: str, message_id: str, at: float, **extra) -> dict:
    return {"event_id": f"{message_id}-{kind}-{at}", "kind": kind, "at": at, "message_id": message_id,
            "correlation_id": "corr-1", "route": "hes-a-csv-to-mdms-1", "attempt": 1, **extra}


def test_trace_json_is_one_list_of_events_for_an_id_a_meter_and_a_route(home):
    # Given a batch that touched meter UPM1 and was dead-lettered
    SqliteTraceStore(home / "state" / "trace.sqlite").add([
        event("transformed", "m1", NOW - 3, meters=["UPM1"]),
        event("dead-lettered", "m1", NOW - 2, reason="MDMS answered 400")])
    # When a script traces it by id, by meter and by route
    by_id, _ = run_json(trace, "m1")
    by_meter, _ = run_json(trace, "--meter", "UPM1")
    failed, _ = run_json(trace, "--route", "hes-a-csv-to-mdms-1", "--failed", "--since", "1h")
    # Then each is a JSON list of events with kind, time (epoch seconds), ids and route
    assert [e["kind"] for e in by_id] == [e["kind"] for e in by_meter] == ["transformed", "dead-lettered"]
    assert by_id[0]["at"] == pytest.approx(NOW - 3) and by_id[0]["correlation_id"] == "corr-1"
    assert [(e["message_id"], e["reason"]) for e in failed] == [("m1", "MDMS answered 400")]


def test_commands_list_and_show_json_carry_state_people_and_epoch_times(home):
    # Given a command waiting for approval
    store = RequestStore(requests_path(home / "state"))
    store.create(id="r1", system="billing-1", requested_by="alice", kind="commands", route="billing-1-commands",
                 client_key="cmd-1", action="disconnect", meters=2, state="pending-approval",
                 expires=NOW + 3600, reply_address=None, correlation_id="c1",
                 document={"Request": {"commandId": "cmd-1"}})
    # When a script lists and shows it
    listed, _ = run_json(commands, "list", "--state", "pending-approval")
    shown, _ = run_json(commands, "show", "r1")
    # Then the list has the fields an approver's script filters on, and the show the audit trail
    assert [(c["request_id"], c["action"], c["meters"], c["requested_by"], c["state"]) for c in listed] == [
        ("r1", "disconnect", 2, "alice", "pending-approval")]
    assert listed[0]["expires"] == pytest.approx(NOW + 3600) and isinstance(listed[0]["created"], float)
    assert shown["request"] == {"commandId": "cmd-1"} and shown["reply"] is None
    assert [(a["who"], a["event"]) for a in shown["audit"]] == [("alice", "pending-approval")]


def test_operators_and_gateway_keys_list_json_name_each_account_and_never_a_secret(home):
    # Given an approver and an API key
    OperatorStore(operators_path(home / "state")).add("bob", "approver", "correct horse battery")
    key = KeyStore(keys_path(home / "state")).add("billing-1")
    # When both are listed with --json
    people, _ = run_json(operators, "list")
    keys, _ = run_json(gateway, "keys", "list")
    # Then each row names who or what, with the time it was added; no password, no key
    assert [(o["name"], o["role"]) for o in people] == [("bob", "approver")]
    assert abs(people[0]["added"] - time.time()) < 60
    assert [(k["key_id"], k["system"]) for k in keys] == [(key.split(".")[0], "billing-1")]
    assert key.split(".")[1] not in json.dumps(keys) and "correct horse" not in json.dumps(people)


def test_routes_list_json_describes_each_route_as_a_script_would_filter_it(home):
    # When the repository's routes are listed with --json
    listed, _ = run_json(routes_cli.routes_group, "list")
    # Then every route is there with its source, chain, destinations, queue and where it is written
    by_id = {r["id"]: r for r in listed}
    route = by_id["hes-a-csv-to-mdms-1"]
    assert route["source"] == {"system": "hes-a", "connector": "file-drop"} and route["method"] == "file-batch"
    assert route["destinations"] == [{"system": "mdms-1", "connector": "rest"}]
    assert route["queue"] == "gridbus.route.hes-a-csv-to-mdms-1" and route["kind"] == "deliveries"
    assert route["file"].endswith("uc1-meter-data-files.yaml") and route["retry"]["attempts"] >= 1
    assert by_id["billing-1-reads"]["kind"] == "requests"


class EmptyBroker:
    """The management API of a broker with nothing declared and no users yet."""

    def __init__(self, *_args):
        pass

    def exchanges(self):
        return []

    queues = bindings = users = exchanges

    def permissions_of(self, user):
        return {}

    def topic_permissions_of(self, user):
        return []

    def broker_version(self):
        return "3.10.8"


def test_routes_plan_json_says_what_is_missing_and_still_exits_2_when_out_of_sync(home, monkeypatch):
    # Given a broker with nothing declared
    monkeypatch.setattr(routes_cli, "BrokerAdmin", EmptyBroker)
    # When the plan is read with --json
    plan, _ = run_json(routes_cli.routes_group, "plan", exit_code=2)
    # Then it is an object a script can test, and every route's queue is missing
    assert plan["in_sync"] is False and plan["to_declare"] > 0
    assert "gridbus.route.hes-a-csv-to-mdms-1" in plan["missing"]["queues"]
    assert {"source", "destination", "routing_key"} <= set(plan["missing"]["bindings"][0])
    assert plan["differing"] == {"exchanges": [], "queues": []} and plan["broker_only"]["queues"] == []


def test_broker_users_list_json_is_a_list(home, monkeypatch):
    # Given a broker with no gridbus-made users  When they are listed with --json  Then []
    monkeypatch.setattr(broker_cli, "BrokerAdmin", EmptyBroker)
    assert run_json(broker_cli.broker, "users", "list")[0] == []


def _commands(group: click.Group, path: str = ""):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path}{name} ")
        else:
            yield f"{path}{name}", command


RUNTIME_GROUPS = (dlq_cli.dlq, commands, routes_cli.routes_group, operators, broker_cli.broker, gateway)


def runtime_commands() -> list[tuple[str, click.Command]]:
    return [(name, c) for g in RUNTIME_GROUPS for name, c in _commands(g, f"{g.name} ")] + [
        ("trace", trace), ("recorder", recorder), ("keeper", keeper), ("worker", worker), ("ingress", ingress),
        ("send", send)]


def test_every_list_and_show_command_takes_json():
    # Given every list and show command of the runtime (a routes plan and an audit trail are shown too)
    found = [(name, c) for name, c in runtime_commands()
             if name.split()[-1] in ("list", "show", "plan", "audit", "trace")]
    # Then each takes --json
    assert len(found) >= 11
    for name, command in found:
        assert "--json" in {o for p in command.params for o in p.opts}, name


def test_every_runtime_command_says_in_its_help_what_it_does_with_an_example():
    for name, command in runtime_commands():
        assert command.help and "gridbus " in command.help, f"{name}: no example in --help"
