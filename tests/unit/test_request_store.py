"""The request store's states, idempotency and audit, the Result rule, and the disconnect budget."""
from __future__ import annotations

import threading
import time

import pytest

from bus.requests import replies
from bus.requests.store import RequestStateError, RequestStore
from connectors.http_push.ratelimit import RateLimiter
from tests.state_stores import postgres_url, state_url  # noqa: F401 - every store test runs on both databases


@pytest.fixture
def store(tmp_path, state_url):
    store = RequestStore(tmp_path / "requests.sqlite", url=state_url)
    yield store
    store.close()


def new(store, request_id="r1", client_key="cmd-1", state="requested", expires=None, meters=2):
    return store.create(id=request_id, system="billing-1", requested_by="alice", kind="commands",
                        route="billing-1-commands", client_key=client_key, action="disconnect", meters=meters,
                        state=state, expires=expires, reply_address=None, correlation_id="c1",
                        document={"Request": {"commandId": client_key}})


def test_a_client_key_is_taken_once_per_system(store):
    # Given a command stored under its command id
    assert new(store).state == "requested"
    # When the same command id comes again  Then it is not stored twice; the first is found
    assert new(store, "r2") is None
    assert store.by_client_key("billing-1", "billing-1-commands", "cmd-1").id == "r1"


def test_states_move_only_along_the_allowed_paths_and_every_move_is_audited(store):
    new(store, state="pending-approval")
    # a pending command cannot be marked sent without approval
    with pytest.raises(RequestStateError, match="pending-approval; cannot become sent"):
        store.transition("r1", "sent", "bob", {"requested"})
    store.transition("r1", "requested", "bob", {"pending-approval"}, "approved", approved_by="bob")
    store.transition("r1", "sent", "bob", {"requested"})
    reply = replies.reply("EndDeviceControls", "c1", "OK")
    assert store.record_reply("r1", reply, "executed").state == "executed"
    # a second (redelivered) reply does not change a finished request
    assert store.record_reply("r1", replies.failed("EndDeviceControls", "c1", "X", "late"), "failed").state == "executed"
    assert [(a["who"], a["event"]) for a in store.audit_of("r1")] == [
        ("alice", "pending-approval"), ("bob", "requested"), ("bob", "sent"), ("gridbus", "executed")]
    assert store.get("r1").approved_by == "bob"


def test_a_read_published_at_once_is_stored_as_sent_in_one_step_and_its_row_is_its_trail(store):
    # Given a request the gateway publishes as soon as it is stored
    stored = store.create(id="r1", system="mdms-1", requested_by="mdms-1", kind="meter-readings",
                          route="mdms-1-reads-to-hes", client_key=None, action=None, meters=1, state="requested",
                          expires=None, reply_address=None, correlation_id=None,
                          document={"Request": {"meters": ["M1"]}}, sent_on="mdms-1-reads-to-hes")
    # Then it is sent, as the store reads it back, and the trail says requested, then sent on its route
    assert stored.state == store.get("r1").state == "sent"
    assert stored.document == store.get("r1").document
    assert [(a["who"], a["event"], a["detail"]) for a in store.trail(store.get("r1"))] == [
        ("mdms-1", "requested", "meter-readings for 1 meter(s) by mdms-1"),
        ("mdms-1", "sent", "published on route mdms-1-reads-to-hes")]
    # When a reply finishes it  Then the stored request comes back, and the trail ends with its Result
    kept = store.record_reply("r1", replies.failed("MeterReadings", None, "TIMEOUT", "no answer", ["M1"]), "replied")
    assert (kept.state, kept.reply["Reply"]["Result"]) == ("replied", "FAILED")
    last = store.trail(kept)[-1]
    assert (last["who"], last["event"], last["detail"]) == ("gridbus", "replied", "Result FAILED; 1 error(s): no answer")
    assert last["at"] == kept.updated
    # and no audit row was written for it: a read's row is its record
    assert store.audit_of("r1") == []


def test_a_read_that_could_not_be_published_shows_why_in_its_trail(store):
    # Given a read stored as sent whose publish the broker refused
    store.create(id="r1", system="mdms-1", requested_by="mdms-1", kind="meter-readings", route="r",
                 client_key=None, action=None, meters=1, state="requested", expires=None, reply_address=None,
                 correlation_id=None, document={"Request": {"meters": ["M1"]}}, sent_on="r")
    # When the gateway marks it failed
    store.transition("r1", "failed", "gridbus", {"sent"}, "not published: broker away")
    # Then its trail is requested, sent, failed with the reason
    assert [(a["event"], a["detail"]) for a in store.trail(store.get("r1"))][1:] == [
        ("sent", "published on route r"), ("failed", "not published: broker away")]


def test_a_transition_of_an_unknown_request_says_so(store):
    with pytest.raises(RequestStateError, match="no request nobody"):
        store.transition("nobody", "sent", "bob", {"requested"})


def test_pending_commands_past_their_expiry_become_expired(store):
    new(store, state="pending-approval", expires=time.time() - 1)
    new(store, "r2", "cmd-2", state="pending-approval", expires=time.time() + 600)
    assert store.expire_overdue() == ["r1"]
    assert (store.get("r1").state, store.get("r2").state) == ("expired", "pending-approval")


def test_a_reply_for_an_unknown_request_is_not_kept(store):
    assert store.record_reply("nobody", replies.reply("MeterReadings", None, "OK"), "replied") is None


@pytest.mark.parametrize("meters, errors, result", [
    (["m1", "m2"], [], "OK"),
    (["m1", "m2"], [replies.error("METER_UNREACHABLE", "x", "m2")], "PARTIAL"),
    (["m1", "m2"], [replies.error("X", "x", "m1"), replies.error("X", "x", "m2")], "FAILED"),
    (["m1", "m2"], [replies.error("TIMEOUT", "whole request")], "FAILED"),
    ([], [], "OK"),
])
def test_the_result_rule(meters, errors, result):
    assert replies.result_of(meters, errors) == result


def test_merged_replies_concatenate_payloads_and_gather_errors():
    a = replies.reply("MeterReadings", "c", "OK", payload={"MeterReadings": {"MeterReading": [{"meter": "m1"}]}})
    b = replies.reply("MeterReadings", "c", "PARTIAL", [replies.error("METER_UNREACHABLE", "x", "m3")],
                      payload={"MeterReadings": {"MeterReading": [{"meter": "m2"}]}})
    merged = replies.merge("MeterReadings", "c", ["m1", "m2", "m3", "m4"], [a, b],
                           [replies.error("UNKNOWN_METER", "y", "m4")])
    assert merged["Reply"]["Result"] == "PARTIAL"
    assert [r["meter"] for r in merged["Payload"]["MeterReadings"]["MeterReading"]] == ["m1", "m2"]
    assert {e["meter"] for e in merged["Reply"]["Error"]} == {"m3", "m4"}


def test_the_disconnect_budget_counts_meters_not_requests():
    # Given 120 disconnects a minute (2 a second, a burst of 120)
    budget = RateLimiter(2.0, burst=120)
    # Then 100 meters pass, and 30 more must wait about 5 s
    assert budget.take("billing-1", cost=100) == 0
    assert budget.take("billing-1", cost=30) == pytest.approx(5.0, abs=0.2)
    # and another system's budget is its own
    assert budget.take("billing-2", cost=100) == 0


def test_a_read_audited_step_by_step_by_an_earlier_gridbus_shows_its_rows_once(store):
    # Given a read whose every step an earlier gridbus wrote to the audit table
    store.create(id="r1", system="mdms-1", requested_by="mdms-1", kind="meter-readings", route="r",
                 client_key=None, action=None, meters=1, state="requested", expires=None, reply_address=None,
                 correlation_id=None, document={"Request": {"meters": ["M1"]}}, sent_on="r")
    with store.batch():
        for event in ("requested", "sent", "replied"):
            store._audit("r1", "mdms-1", event)
    # Then its trail is those rows, each step once
    assert [a["event"] for a in store.trail(store.get("r1"))] == ["requested", "sent", "replied"]



def _made_at(store, request_id: str, kind: str, created: float) -> None:
    store.create(id=request_id, system="mdms-1", requested_by=None, kind=kind, route="r",
                 client_key=f"k-{request_id}" if kind == "commands" else None, action=None, meters=1,
                 state="requested", expires=None, reply_address=None, correlation_id=None,
                 document={"Request": {}})
    with store.batch() as db:
        db.execute("UPDATE requests SET created = ? WHERE id = ?", (created, request_id))


def test_pruning_deletes_old_reads_and_determinants_but_keeps_commands_and_new_requests(store):
    # Given requests of every kind, some older than the cut, one old read with an audit row
    # (a failure), and a gap in the rowids where requests were deleted before
    now = time.time()
    for n in range(40):
        _made_at(store, f"old-{n}", ("meter-readings", "billing-determinants")[n % 2], now - 100_000 + n)
    _made_at(store, "old-command", "commands", now - 90_000)
    store.transition("old-0", "failed", "gridbus", {"requested"}, "HES unreachable")
    with store.batch() as db:
        db.execute("DELETE FROM requests WHERE id IN ('old-10', 'old-11', 'old-12')")
    for n in range(10):
        _made_at(store, f"new-{n}", "meter-readings", now - 10 + n)
    # When requests made more than a day ago are pruned, in chunks of 15
    pruned = []
    while (deleted := store.prune(now - 86_400, limit=15)) > 0:
        pruned.append(deleted)
    # Then every old read and determinants request went, a chunk at a time, with its audit rows
    assert pruned == [15, 15, 7]
    assert sorted(r.id for r in store.listing(limit=1000)) == sorted(["old-command"] + [f"new-{n}" for n in range(10)])
    assert store.audit_of("old-0") == []
    # and the old command stays with its audit trail
    assert store.audit_of("old-command")


def test_pruning_an_empty_store_or_one_with_nothing_old_deletes_nothing(store):
    # Given no requests, then only new ones  When pruned  Then nothing goes
    assert store.prune(time.time()) == 0
    _made_at(store, "r1", "meter-readings", time.time())
    assert store.prune(time.time() - 60) == 0
    assert store.get("r1") is not None


def test_a_reply_orjson_cannot_write_is_kept_all_the_same(store):
    # Given a request, and a reply carrying an integer beyond 64 bits and a lone surrogate
    new(store)
    reply = {"Reply": {"Result": "OK"}, "Payload": {"big": 2 ** 70, "text": "\ud800"}}
    # When it is kept  Then it is stored (never an error that would requeue it for ever)
    kept = store.record_reply("r1", reply, "executed")
    assert kept.state == "executed" and store.get("r1").reply["Payload"]["big"] == 2 ** 70


def test_two_processes_moving_one_command_at_once_never_both_succeed(tmp_path, state_url):
    # Given pending commands seen by two stores: two gateways or CLIs, on one host or (PostgreSQL) two
    first, second = (RequestStore(tmp_path / "requests.sqlite", url=state_url) for _ in range(2))
    for n in range(20):
        new(first, f"r{n}", f"cmd-{n}", state="pending-approval")
    # When, for each, one approves it while the other rejects it at the same instant
    def move(store, request_id, to, who, barrier, outcomes):
        barrier.wait()
        try:
            store.transition(request_id, to, who, {"pending-approval"}, approved_by=who if to == "requested" else None)
            outcomes.append(to)
        except RequestStateError:
            outcomes.append("refused")
    for n in range(20):
        barrier, outcomes = threading.Barrier(2), []
        threads = [threading.Thread(target=move, args=(store, f"r{n}", to, who, barrier, outcomes))
                   for store, to, who in ((first, "requested", "bob"), (second, "rejected", "carol"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then exactly one of them moved it, the other was told it no longer could
        assert outcomes.count("refused") == 1 and {*outcomes} - {"refused"} <= {"rejected", "requested"}
        # and the audit trail has that one step after the request, never both
        assert [a["event"] for a in second.audit_of(f"r{n}")] == ["pending-approval", first.get(f"r{n}").state]
    first.close()
    second.close()


def test_one_client_key_sent_to_two_gateways_at_once_is_taken_once(tmp_path, state_url):
    # Given two stores (two gateways)  When each takes the same command id at the same instant, 20 times
    stores = [RequestStore(tmp_path / "requests.sqlite", url=state_url) for _ in range(2)]
    for n in range(20):
        barrier, taken = threading.Barrier(2), []

        def take(store, request_id):
            barrier.wait()
            taken.append(new(store, request_id, f"cmd-{n}"))
        threads = [threading.Thread(target=take, args=(s, f"r{n}-{i}")) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then one stored it and the other found the key taken (and is shown the first)
        assert sorted(t is None for t in taken) == [False, True]
        assert stores[1].by_client_key("billing-1", "billing-1-commands", f"cmd-{n}").id == \
            next(t for t in taken if t is not None).id
    for s in stores:
        s.close()
