"""A dead letter is replayed at most once per replay request: real RabbitMQ, a real store (a SQLite
file, or the shared PostgreSQL state store: each test runs on both).

Replay runs are separate processes, each with its own store connection and its
own ConfirmingPublisher, as two operators' `gridbus dlq replay` are; what they
publish lands in a queue bound to the route's key on the ingress exchange, and
the test counts it there.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import amqp
import pytest

from bus import naming
from bus.deadletters import headers as dl
from bus.deadletters import replay as replays
from bus.deadletters.store import DeadLetterStore, dumps
from bus.messaging import ConfirmingPublisher, connect
from bus.topology.compile import ingress_exchange
from tests.keeper_state import DEAD_LETTER_TABLES, clean, keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401
from tests.support import run_cli

pytestmark = pytest.mark.broker
ROUTE = "replay-once"
QUEUE = "test.replay-once.published"
TRIALS = 20
LETTERS = 12


def _row(i: int, trial: int = 0) -> dict:
    now = time.time()
    message_id = f"msg-{trial}-{i:04d}"
    return {"dl_id": f"dl-{trial}-{i:04d}", "message_id": message_id, "correlation_id": f"corr-{i:04d}",
            "route": ROUTE, "destination": "mdms-1", "fingerprint": "fp-1",
            "error_class": "PermanentDeliveryError", "reason": "MDMS answered 400", "traceback": "",
            "attempts": 1, "first_failure": now, "last_failure": now, "worker_host": "host-a",
            "collected_at": now, "body": f"reading {i}".encode(),
            "properties": dumps({"message_id": message_id, "correlation_id": f"corr-{i:04d}", "delivery_mode": 2}),
            "headers": dumps({"id": message_id, dl.DL_ROUTE: ROUTE, dl.DL_REASON: "MDMS answered 400"})}


@pytest.fixture
def published(bus_env):
    """The route's key on the ingress exchange bound to a queue the test reads (drain() empties it)."""
    conn = connect(bus_env["GRIDBUS_BROKER_URL"], "test-replay-once")
    ch = conn.channel()
    spec = ingress_exchange()
    ch.exchange_declare(spec.name, spec.type, durable=True, auto_delete=False, arguments=spec.args)
    ch.queue_declare(QUEUE, durable=True, auto_delete=False)
    ch.queue_bind(QUEUE, naming.INGRESS_EXCHANGE, naming.route_routing_key(ROUTE))

    def drain() -> list[amqp.Message]:
        out = []
        while (message := ch.basic_get(QUEUE, no_ack=True)) is not None:
            out.append(message)
        return out
    yield drain
    conn.close()


def _dlq_replay(path: str, url: str, broker_url: str, batch: int, barrier, results) -> None:
    """One operator's `gridbus dlq replay --all`, in the order the command runs it, in a process of its own."""
    os.environ["GRIDBUS_USER"] = f"operator-{os.getpid()}"
    replays.BATCH = batch
    try:
        store = DeadLetterStore(Path(path), url=url)
        letters = store.select()
        barrier.wait(30)  # both listed the same dead letters; now both go
        with ConfirmingPublisher(broker_url, "gridbus-dlq-replay") as pub, store.replay_run() as run:
            resumed = replays.finish_interrupted(store, pub, run)
            result = replays.replay(store, pub, letters, run=run)
        results.put({"listed": len(letters), "resumed": len(resumed.done),
                     "done": [(x.dl_id, rid) for x, rid in result.done],
                     "lost": [(x.letter.dl_id, x.state, x.replay_id, x.why()) for x in result.lost]})
    except BaseException as exc:  # reported to the test, which fails with it
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def test_two_replay_runs_racing_publish_each_dead_letter_once_to_the_broker(bus_env, published, tmp_path,
                                                                           state_url):
    ctx = multiprocessing.get_context("fork")
    for trial in range(TRIALS if not state_url else TRIALS // 4):  # PostgreSQL: fewer, for CI's time
        # Given dead letters in a store, and two replay runs that both listed them as dead
        path = tmp_path / f"trial-{trial}" / "dead-letters.sqlite"
        clean(state_url, *DEAD_LETTER_TABLES)
        store = DeadLetterStore(path, url=state_url)
        store.add(_row(i, trial) for i in range(LETTERS))
        barrier, results = ctx.Barrier(2), ctx.Queue()
        batch = 500 if trial % 2 else 3  # 3: the two runs interleave batch by batch
        runs = [ctx.Process(target=_dlq_replay, args=(str(path), state_url, bus_env["GRIDBUS_BROKER_URL"], batch,
                                                       barrier, results)) for _ in range(2)]
        # When both replay them at the same moment
        for p in runs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in runs]
        for p in runs:
            p.join(10)
        assert not [o for o in outcomes if "error" in o], outcomes
        assert [o["listed"] for o in outcomes] == [LETTERS, LETTERS]
        # Then the broker got each dead letter once in total
        messages = published()
        per_letter = Counter(m.application_headers[dl.REPLAYED_FROM] for m in messages)
        assert per_letter == Counter({f"msg-{trial}-{i:04d}": 1 for i in range(LETTERS)}), (trial, per_letter)
        # and the store keeps the replay id that was published, the audit one replay per letter
        rows = {m: (s, r) for m, s, r in store.db.rows("SELECT message_id, state, replay_id FROM dead_letters")}
        assert rows == {m.application_headers[dl.REPLAYED_FROM]: ("replayed", m.properties["message_id"])
                        for m in messages}
        audited = Counter(e["dl_id"] for e in store.audit_trail() if e["action"] == "replay")
        assert audited == Counter({f"dl-{trial}-{i:04d}": 1 for i in range(LETTERS)})
        # and what a run did not publish it reports, with the replay id of the run that did
        assert sorted(d for o in outcomes for d, _ in o["done"]) == sorted(f"dl-{trial}-{i:04d}" for i in range(LETTERS))
        won = {d: rid for o in outcomes for d, rid in o["done"]}
        lost = [x for o in outcomes for x in o["lost"]]
        assert len(lost) == LETTERS
        for dl_id, state, replay_id, why in lost:
            assert state in ("replaying", "replayed") and replay_id == won[dl_id]
            assert why.endswith(f"by another run (replay id {replay_id})")
        assert [o["resumed"] for o in outcomes] == [0, 0]  # a live run's rows are not "finished" by the other
        store.close()


def test_dlq_replay_leaves_a_live_runs_rows_alone_and_finishes_them_once_that_run_is_gone(bus_env, published,
                                                                                          state_url):
    # Given a dead letter in the operator's store that another replay run (alive: on PostgreSQL,
    # another session holding its lock) marked `replaying`
    path = Path(bus_env["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite"
    clean(state_url, *DEAD_LETTER_TABLES)
    store = DeadLetterStore(path, url=state_url)
    store.add([_row(1)])
    env = {**bus_env, "GRIDBUS_USER": "operator-b", **({"GRIDBUS_STATE_STORE": state_url} if state_url else {})}
    other = store.replay_run()
    with store.transaction():
        assert store.mark_replaying([("dl-0-0001", "replay-of-the-other-run")], "operator-a", other.token)
    # When `gridbus dlq replay --all` runs meanwhile
    during = run_cli(env, "dlq", "replay", "--all")
    # Then it says so, publishes nothing and leaves the row to that run
    assert during.returncode == 0, during.stderr
    assert "1 replay(s) in progress in another run: left to it" in during.stderr
    assert "replayed 0 dead letter(s)" in during.stdout
    assert published() == []
    assert store.select(states=("replaying",))[0].replay_run == other.token
    # When that run ends without finishing (as a killed one), and `dlq replay` runs again
    other.close()
    after = run_cli(env, "dlq", "replay", "--all")
    # Then the row is published once, under the replay id it was marked with, and audited once
    assert after.returncode == 0, after.stderr
    assert "completed 1 replay(s) an earlier run left half-way" in after.stdout
    [message] = published()
    assert message.properties["message_id"] == "replay-of-the-other-run"
    assert [x.state for x in store.select(states=("replayed",))] == ["replayed"]
    [entry] = [e for e in store.audit_trail() if e["action"] == "replay"]
    assert entry["who"] == "operator-a" and entry["detail"]["completed_by"] == "operator-b"
    store.close()
