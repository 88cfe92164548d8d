"""`gridbus keeper` as a process: dead letters reach the store with no `dlq` command run.

Real RabbitMQ, a real keeper process (killed with SIGKILL where the test says
so), dead letters made by a real worker whose destination refuses every batch or
published to the route's dead-letter exchange as the worker publishes them.  The
store is read from its file, as `gridbus dlq` reads it, and no `dlq` command is
ever run: each one collects too, which would hide a keeper that stores nothing.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from bus import naming
from bus.deadletters import headers as dl
from bus.messaging.publisher import ConfirmingPublisher
from tests.integration.keeper_stack import ROUTE, KeeperStack
from tests.support import wait_for

pytestmark = pytest.mark.broker
CSV = ("meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg\n"
       "{meter},2026-11-01T00:15:00+05:30,0.120,0.000,0.130,0.000,231.2,2.1\n")
REASON = "mdms-t answered 400: meter unknown"


def dead_letter(message_id: str) -> tuple[bytes, dict, dict]:
    """(body, properties, headers) of a dead letter as bus/worker/task.py `dead_letter` makes one."""
    now = time.time()
    headers = {"id": message_id, dl.DL_ROUTE: ROUTE, dl.DL_DESTINATION: "mdms-t",
               dl.DL_ERROR_CLASS: "PermanentDeliveryError", dl.DL_REASON: REASON, dl.DL_TRACEBACK: "",
               dl.DL_ATTEMPTS: 1, dl.DL_FIRST_FAILURE: now, dl.DL_LAST_FAILURE: now,
               dl.DL_WORKER_HOST: "test-host",
               dl.DL_FINGERPRINT: dl.fingerprint(ROUTE, "PermanentDeliveryError", REASON)}
    properties = {"message_id": message_id, "content_type": "application/json", "delivery_mode": 2}
    return f"reading of {message_id}".encode(), properties, headers


def publish(publisher: ConfirmingPublisher, letter: tuple[bytes, dict, dict]) -> None:
    """To the route's dead-letter exchange, as the worker publishes a dead letter."""
    body, properties, headers = letter
    publisher.publish(naming.dead_letter_exchange_name(ROUTE), "", body, properties, headers)


def reconnects(log: str) -> int:
    return log.count("reconnecting in")


@pytest.fixture
def keeper_stack(bus_env, tmp_path):
    made = []

    def make(**options) -> KeeperStack:
        s = KeeperStack(dict(bus_env), tmp_path, **options)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def test_dead_letters_of_a_refusing_destination_reach_the_store_through_the_keeper_alone(keeper_stack):
    # Given a route whose destination refuses every batch with 400, its worker, and the keeper running
    s = keeper_stack(refusing_destination=True)
    s.start_worker()
    s.start_keeper()
    # When three batches are sent and the worker dead-letters each
    sent = [s.send(CSV.format(meter=f"UPM0000090{i}"), f"reads-{i}.csv") for i in range(3)]
    # Then each reaches the store once, with the destination's reason, and no `dlq` command was run
    rows = wait_for(lambda: (r := s.stored()) and len(r) >= 3 and r, 60,
                    f"three dead letters in the store (keeper log: {s.keeper.log()[-2000:]}; "
                    f"worker log: {s.worker.log()[-1500:]})")
    assert sorted(r.message_id for r in rows) == sorted(sent)
    assert all(r.route == ROUTE and "answered 400" in r.reason for r in rows)
    assert s.mdms.stats()["readings"] == 0
    # and the keeper, still running, never went round a reconnect loop
    assert s.keeper.popen.poll() is None
    assert reconnects(s.keeper.log()) == 0, s.keeper.log()[-3000:]
    # and, stopped with SIGTERM, it exits cleanly having acked each dead letter it stored
    assert s.stop_keeper() == 0, s.keeper.log()[-3000:]
    assert s.ready() == 0
    assert len(s.stored()) == 3


def test_a_keeper_killed_mid_stream_and_restarted_stores_every_dead_letter_exactly_once(keeper_stack):
    # Given the keeper running (ending a round to look for new queues every second, so rounds
    # end mid-stream too), and 500 dead letters arriving in a stream (chunks of 20, a pause
    # between chunks so the keeper commits and acks in many batches while they arrive)
    s = keeper_stack()
    keeper = s.start_keeper("--rescan-s", "1")
    total, chunk = 500, 20
    letters = {f"dl-msg-{n:04d}": dead_letter(f"dl-msg-{n:04d}") for n in range(total)}
    sent: list[str] = []
    stream_done = threading.Event()
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            with ConfirmingPublisher(s.env["GRIDBUS_BROKER_URL"], "test-dead-letters") as publisher:
                ids = list(letters)
                for start in range(0, total, chunk):
                    for message_id in ids[start:start + chunk]:
                        publish(publisher, letters[message_id])
                    publisher.flush()  # confirmed: in the dead-letter queue now
                    sent.extend(ids[start:start + chunk])
                    stream_done.wait(0.25)  # the pace of the stream, not a wait for a result
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)
        finally:
            stream_done.set()

    producer = threading.Thread(target=stream, daemon=True)
    producer.start()
    kills = []
    # When the keeper is killed with SIGKILL twice while dead letters still arrive, each time with
    # a confirmed chunk not yet in the store (in the queue or in the keeper's hands), and restarted
    for threshold in (100, 250):
        wait_for(lambda: len(sent) > s.count() >= threshold, 60,
                 f"{threshold} dead letters stored and more on their way (keeper log: {keeper.log()[-2000:]})",
                 every_s=0.01)
        keeper.kill9()
        kills.append((len(sent), s.count()))
        assert not stream_done.is_set(), f"the stream ended before the kill: {kills}"
        keeper = s.start_keeper("--rescan-s", "1")
    producer.join(60)
    assert not failures, failures
    assert len(sent) == total
    # Then every dead letter ends in the store exactly once, as it was published
    rows = wait_for(lambda: (r := s.stored()) and len(r) >= total and r, 60,
                    f"{total} dead letters stored (kills: {kills}; keeper log: {keeper.log()[-2000:]})")
    counts = Counter(r.message_id for r in rows)
    assert len(rows) == total and set(counts) == set(sent) and set(counts.values()) == {1}, kills
    assert all(r.reason == REASON and r.state == "dead" and r.body == letters[r.message_id][0] for r in rows)
    # When 20 stored dead letters are delivered again exactly as they were (what the broker gives
    # a keeper that was killed between its commit and its ack)
    with ConfirmingPublisher(s.env["GRIDBUS_BROKER_URL"], "test-dead-letters") as publisher:
        for message_id in sent[:20]:
            publish(publisher, letters[message_id])
        publisher.flush()
    wait_for(lambda: s.ready() == 0, 30, "the keeper to take the dead letters delivered again")
    # and the keeper is stopped with SIGTERM
    assert s.stop_keeper() == 0, keeper.log()[-3000:]
    # Then they are not stored twice, and nothing is left in the queue: all 520 were acked
    assert s.count() == total
    assert s.ready() == 0
    # and no keeper run went round a reconnect loop
    assert reconnects(keeper.log()) == 0, keeper.log()[-3000:]
    print("at each kill (sent, stored):", kills)
