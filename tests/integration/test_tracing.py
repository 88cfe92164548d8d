"""Tracing end to end: events from every hop, over the bus, into the store; `gridbus trace`.

Real RabbitMQ, real MDMS stand-in, real worker, ingress and recorder processes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridbus_dev.cli.demo_metrics import scrape
from tests.integration.conftest import Uc1Stack
from tests.integration.test_retries_and_dead_letters import CSV, READINGS_PER_FILE, RetryStack
from tests.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support import Proc, free_port, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker
HOPS = ["received", "published", "consumed", "transformed", "delivered"]


def trace_json(env: dict, *args: str) -> list[dict]:
    done = run_cli(env, "trace", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def kinds(events: list[dict], message_id: str | None = None) -> list[str]:
    return [e["kind"] for e in events if message_id is None or e.get("message_id") == message_id]


@pytest.fixture
def traced(bus_env, tmp_path):
    stack = Uc1Stack(dict(bus_env), tmp_path)
    port = free_port()
    stack.metrics_url = f"http://127.0.0.1:{port}/metrics"
    stack.recorder = Proc("recorder", gridbus("recorder", "--metrics-port", str(port)), stack.env,
                          stack.logs).start()
    yield stack
    stack.recorder.stop()
    stack.stop()


def test_a_file_chunk_shows_every_hop_with_consistent_ids_and_meter_search_finds_it(traced):
    # Given a block-load file from HES-A, delivered to MDMS-1
    block = traced.generate("--profile", "block-load", "--meters", "30", "--days", "1", "--first-serial", "4000",
                            "--malformed-rows", "0")
    traced.drop(Path(block["path"]))
    report = traced.report(Path(block["path"]).name)
    assert report["chunks"] >= 2
    message_id = f"file-{report['checksum'][:24]}-000001"
    # When the operator traces one chunk's message id
    events = wait_for(lambda: (lambda ev: ev if set(HOPS) <= set(kinds(ev, message_id)) else None)(
        trace_json(traced.env, message_id)), 30, "the five hops in the trace store")
    own = [e for e in events if e["message_id"] == message_id]
    # Then received → published → consumed → transformed → delivered, in that order
    order = [k for k in kinds(own) if k in HOPS]
    assert order == HOPS
    # with one correlation id (the file's) and one trace id on every hop
    assert {e["correlation_id"] for e in own} == {f"file-{report['checksum'][:24]}"}
    assert len({e["traceparent"].split("-")[1] for e in own}) == 1
    # and plausible durations: the whole path took less than a minute, each hop non-negative
    ats = [e["at"] for e in own]
    assert ats == sorted(ats) and ats[-1] - ats[0] < 60
    delivered = next(e for e in own if e["kind"] == "delivered")
    assert delivered["destination"] == "mdms-1" and delivered["status"] == "200" and delivered["duration_s"] > 0
    received = next(e for e in own if e["kind"] == "received")
    assert received["file"] == Path(block["path"]).name and received["first_line"] >= 2
    # When the operator searches by a meter of that chunk
    assert next(e for e in own if e["kind"] == "transformed")["meter_count"] >= 1
    archived = Path(report["archived_as"]).read_text().splitlines()
    meter = archived[received["first_line"] - 1].split(",")[0]
    hits = trace_json(traced.env, "--meter", meter)
    # Then the batch holding it is there, delivered; and a meter not in the file finds nothing
    assert message_id in {e["message_id"] for e in hits}
    assert run_cli(traced.env, "trace", "--meter", "UPM99999999").stdout.startswith("no message touched")
    # and the human view draws the path
    text = run_cli(traced.env, "trace", message_id).stdout
    assert "received" in text and "delivered" in text and "mdms-1 200" in text


def test_the_recorders_metrics_count_what_reached_the_mdms(traced):
    # Given a block-load file from HES-A with a few bad rows
    block = traced.generate("--profile", "block-load", "--meters", "25", "--days", "1", "--first-serial", "7000",
                            "--malformed-rows", "3")
    traced.drop(Path(block["path"]))
    report = traced.report(Path(block["path"]).name)
    route = (("route", "hes-a-csv-to-mdms-1"),)
    delivered = ("gridbus_deliveries_total", (("destination", "mdms-1"), *route, ("status", "200")))
    # When Prometheus scrapes the recorder once the trace has come in
    samples = wait_for(lambda: (lambda m: m if m.get(delivered) == report["chunks"] else None)(
        scrape(traced.metrics_url)), 30, "every chunk's delivery in the metrics")
    # Then the readings counted are the readings MDMS-1 holds, and every chunk was received and taken once
    assert samples[("gridbus_readings_total", route)] == traced.mdms.stats()["readings"] > 0
    assert samples[("gridbus_rows_rejected_total", route)] == report["rows_rejected"] > 0
    assert samples[("gridbus_messages_received_total", route)] == report["chunks"]
    assert samples[("gridbus_messages_consumed_total", route)] == report["chunks"]
    assert samples[("gridbus_delivery_seconds_count", (("destination", "mdms-1"), *route))] == report["chunks"]
    assert samples.get(("gridbus_dead_letters_total", route), 0) == 0


def test_with_the_recorder_stopped_data_flows_and_the_trace_completes_when_it_returns(traced):
    # Given the recorder is stopped
    traced.recorder.stop()
    # When a file is ingested meanwhile
    block = traced.generate("--profile", "block-load", "--meters", "20", "--days", "1", "--first-serial", "6000",
                            "--malformed-rows", "0")
    traced.drop(Path(block["path"]))
    report = traced.report(Path(block["path"]).name)
    # Then every read still reaches MDMS-1
    assert traced.mdms.stats()["readings"] == block["expected_readings"]
    # and when the recorder starts again, the trace of every chunk is complete
    traced.recorder = Proc("recorder", gridbus("recorder"), traced.env, traced.logs).start()
    correlation = f"file-{report['checksum'][:24]}"

    def complete():
        done = run_cli(traced.env, "trace", correlation, "--json")
        if done.returncode:  # nothing recorded yet
            return False
        events = json.loads(done.stdout)
        per_message = {}
        for e in events:
            per_message.setdefault(e["message_id"], set()).add(e["kind"])
        return len(per_message) == report["chunks"] and all(set(HOPS) <= k for k in per_message.values())
    wait_for(complete, 60, "a complete trace after the recorder came back")


@pytest.fixture
def retry_stack(bus_env, tmp_path):
    made = []

    def make(**options):
        s = RetryStack(dict(bus_env), tmp_path, **options)
        s.recorder = Proc("recorder", gridbus("recorder"), s.env, s.logs).start()
        made.append(s)
        return s
    yield make
    for s in made:
        s.recorder.stop()
        s.stop()


def test_a_message_retried_twice_shows_three_attempts(retry_stack):
    # Given an MDMS that answers 503 twice
    s = retry_stack()
    s.mdms.control(mode="error", status=503, times=2)
    message_id = s.send(CSV.format(meter="UPM00000401"))
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 60, "delivery")
    # When it is traced
    events = wait_for(lambda: (lambda ev: ev if "delivered" in kinds(ev) else None)(
        trace_json(s.env, message_id)), 30, "the delivered event")
    # Then three attempts were consumed, two retries scheduled, one delivery
    assert sorted(e["attempt"] for e in events if e["kind"] == "consumed") == [1, 2, 3]
    assert [e["attempt"] for e in events if e["kind"] == "retried"] == [2, 3]
    assert kinds(events).count("delivered") == 1


def test_a_dead_lettered_then_replayed_message_shows_both_linked(retry_stack):
    # Given a message dead-lettered on a 400, then replayed after the fix
    s = retry_stack()
    s.mdms.control(mode="error", status=400, times=1)
    message_id = s.send(CSV.format(meter="UPM00000402"))
    wait_for(lambda: s.dead_letters(), 30, "the dead letter")
    replayed = s.cli("dlq", "replay", message_id)
    replay_id = replayed.stdout.split("-> ")[1].split()[0]
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 30, "the replayed delivery")
    # When the original message is traced
    events = wait_for(lambda: (lambda ev: ev if "delivered" in kinds(ev, replay_id) else None)(
        trace_json(s.env, message_id)), 30, "the replay's delivery in the trace")
    # Then the dead letter and the replay are both there, the replay caused by the original
    assert "dead-lettered" in kinds(events, message_id)
    replay_events = [e for e in events if e["message_id"] == replay_id]
    assert {e["causation_id"] for e in replay_events} == {message_id}
    assert "replayed" in kinds(replay_events) and "delivered" in kinds(replay_events)
    # and the tree view puts the replay under the original
    text = run_cli(s.env, "trace", message_id).stdout
    assert text.index(f"message {message_id}") < text.index(f"└─ message {replay_id}")
    # and --route --failed lists the dead letter
    failed = trace_json(s.env, "--route", "retry-route", "--failed")
    assert [e["message_id"] for e in failed] == [message_id]


def test_the_recorder_writes_to_postgresql_when_given_a_url(bus_env, tmp_path, postgres_url):  # noqa: F811
    # Given the stack with its trace store on PostgreSQL
    env = {**bus_env, "GRIDBUS_TRACE_STORE": postgres_url}
    stack = Uc1Stack(env, tmp_path)
    stack.env["GRIDBUS_TRACE_STORE"] = postgres_url
    recorder = Proc("recorder", gridbus("recorder"), stack.env, stack.logs).start()
    try:
        # When a file is delivered
        block = stack.generate("--profile", "daily", "--meters", "4", "--days", "2", "--first-serial", "7000")
        stack.drop(Path(block["path"]))
        report = stack.report(Path(block["path"]).name)
        message_id = f"file-{report['checksum'][:24]}-000000"
        # Then `gridbus trace` reads every hop back from PostgreSQL
        events = wait_for(lambda: (lambda ev: ev if set(HOPS) <= set(kinds(ev, message_id)) else None)(
            _maybe(stack.env, message_id)), 30, "the hops in PostgreSQL")
        assert {e["correlation_id"] for e in events} == {f"file-{report['checksum'][:24]}"}
    finally:
        recorder.stop()
        stack.stop()


def _maybe(env, ident):
    done = run_cli(env, "trace", ident, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else []
