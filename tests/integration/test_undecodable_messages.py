"""Messages no worker can read, published straight to a route queue: dead-lettered with the reason.

Real RabbitMQ, the real Celery worker (prefork) and event-loop worker, a real
keeper and MDMS stand-in.  The probe that found it: an alarm nested ~900
levels deep killed the worker's main process (pickling it raised
RecursionError) until the delivery limit dead-lettered it, stopping every
route meanwhile; at ~950-980 levels Celery acked and dropped it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bus import naming, task_message
from bus.deadletters.store import DeadLetterStore
from bus.envelope import Envelope
from bus.messaging import ConfirmingPublisher
from tests.support import Proc, gridbus, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROUTE = "hes-a-csv-to-mdms-1"


def deep(levels: int) -> bytes:
    return b'{"alarm":' * levels + b'1' + b'}' * levels


def hostile_messages() -> dict[str, tuple[bytes, dict, dict]]:
    """name → (body, properties, headers) as a sender bypassing every ingress would publish them."""
    out = {}
    for name, payload_bytes in (("deep-900", deep(900)), ("deep-975", deep(975)), ("deep-100000", b"[" * 100_000)):
        envelope = Envelope(route_id=ROUTE, source="hes-a", verb="created", noun="MeterReadings",
                            message_id=f"hostile-{name}")
        _, props, headers = task_message.build(envelope, None)
        out[name] = (b"[[" + payload_bytes + b"], {}, {}]", props, headers)
    for name, body, encoding in (("not-json", b"{not json", "utf-8"), ("not-utf8", b'[["\xff\xfe"], {}, {}]', "utf-8"),
                                 ("other-shape", b'{"task": "x"}', "utf-8")):
        envelope = Envelope(route_id=ROUTE, source="hes-a", verb="created", noun="MeterReadings",
                            message_id=f"hostile-{name}")
        _, props, headers = task_message.build(envelope, None)
        out[name] = (body, {**props, "content_encoding": encoding}, headers)
    return out


def test_messages_no_worker_can_read_are_dead_lettered_with_the_reason_and_the_rest_flows(uc1):
    # Given the keeper collecting dead letters, and the worker's process id
    keeper = Proc("keeper", gridbus("keeper", "--rescan-s", "1"), uc1.env, uc1.logs).start()
    worker_pid = uc1.worker.popen.pid
    store_path = Path(uc1.env["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite"
    try:
        # When six unreadable messages are published straight to the route's queue
        hostile = hostile_messages()
        publisher = ConfirmingPublisher(uc1.env["GRIDBUS_BROKER_URL"], "hostile-sender")
        for body, props, headers in hostile.values():
            publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(ROUTE), body, props, headers)
        publisher.flush()
        publisher.close()

        # Then every one of them reaches the dead-letter store, once, with a reason that says why
        def stored():
            if not store_path.exists():
                return None
            letters = DeadLetterStore(store_path).select(route=ROUTE)
            return letters if len(letters) >= len(hostile) else None
        letters = wait_for(stored, 150, f"{len(hostile)} dead letters in the store (worker log: "
                                       f"{uc1.worker.log()[-1500:]}; keeper log: {keeper.log()[-1000:]})")
        by_id = {letter.message_id: letter for letter in letters}
        assert set(by_id) == {f"hostile-{name}" for name in hostile}, sorted(by_id)
        assert "nested 902 levels" in by_id["hostile-deep-900"].reason
        assert "nested 100002 levels" in by_id["hostile-deep-100000"].reason
        assert by_id["hostile-not-utf8"].reason and by_id["hostile-other-shape"].reason
        # and kept as they came, byte for byte
        assert all(by_id[f"hostile-{n}"].body == body for n, (body, _, _) in hostile.items() if n != "not-utf8")
        # and the worker never died: the same process, still delivering files on the same route
        assert uc1.worker.popen.poll() is None and uc1.worker.popen.pid == worker_pid
        assert "Unrecoverable error" not in uc1.worker.log()
        block = uc1.generate("--profile", "block-load", "--meters", "5", "--days", "1", "--first-serial", "7100",
                             "--malformed-rows", "0")
        uc1.drop(Path(block["path"]))
        report = uc1.report(Path(block["path"]).name, timeout_s=150)
        assert report["chunks_dead_lettered"] == [] and report["rows_rejected"] == 0, report
        assert report["readings_delivered"] > 0, report
    finally:
        keeper.stop()
