"""A dead letter nobody shaped never blocks the keeper (issue 16).

Anyone who may publish to a route's dead-letter exchange can send headers of any
AMQP type: a nested table where the route's name belongs, a number, bytes that
are not UTF-8, a value of 100,000 characters, an ``x-death`` that is not a list.
A real `gridbus keeper` process must store each such message as a row with
whatever it carried, and go on to the next: before, one of them failed its
insert, the keeper reconnected every 2 s, and the same message came back first
each time, holding every dead letter behind it.
"""
from __future__ import annotations

import json
import sys
import time

import pytest

from bus import naming
from bus.deadletters import headers as dl
from bus.deadletters.store import HEADER_DEPTH
from bus.messaging.publisher import ConfirmingPublisher
from tests.integration.keeper_stack import KeeperStack
from tests.keeper_state import keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401
from tests.support import run_cli, wait_for

pytestmark = pytest.mark.broker
ROUTE = "keeper-hostile"
REASON = "mdms-t answered 400: meter unknown"


def gridbus_headers(message_id: str, **overrides) -> dict:
    """The headers a worker puts on a dead letter, with ``overrides`` replacing some."""
    now = time.time()
    headers = {"id": message_id, dl.DL_ROUTE: ROUTE, dl.DL_DESTINATION: "mdms-t",
               dl.DL_ERROR_CLASS: "PermanentDeliveryError", dl.DL_REASON: REASON, dl.DL_TRACEBACK: "",
               dl.DL_ATTEMPTS: 1, dl.DL_FIRST_FAILURE: now, dl.DL_LAST_FAILURE: now,
               dl.DL_WORKER_HOST: "test-host",
               dl.DL_FINGERPRINT: dl.fingerprint(ROUTE, "PermanentDeliveryError", REASON)}
    headers.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return headers


def hostile_letters() -> dict[str, dict]:
    """message id → headers that no worker writes, each of a kind seen to stop the keeper."""
    big = "r" * 100_000
    return {
        "route-is-a-table": gridbus_headers("route-is-a-table", gridbus_dl_route={"a": {"b": [1, 2]}}),
        "route-is-a-number": gridbus_headers("route-is-a-number", gridbus_dl_route=42),
        "route-is-bytes": gridbus_headers("route-is-bytes", gridbus_dl_route=b"\xff\xfe\x00not utf-8"),
        "route-is-huge": gridbus_headers("route-is-huge", gridbus_dl_route=big),
        "fields-of-every-wrong-type": gridbus_headers(
            "fields-of-every-wrong-type", id={"nested": True}, gridbus_dl_fingerprint={"x": 1},
            gridbus_dl_error_class=[1, 2], gridbus_dl_reason=b"\xff" * 10, gridbus_dl_traceback=7,
            gridbus_dl_attempts="many", gridbus_dl_first_failure="yesterday",
            gridbus_dl_last_failure={"t": 1}, gridbus_dl_destination=None, gridbus_dl_worker_host=True),
        "huge-reason-and-traceback": gridbus_headers(
            "huge-reason-and-traceback", gridbus_dl_reason="why " * 20_000, gridbus_dl_traceback="tb" * 20_000,
            gridbus_dl_attempts=10 ** 18, gridbus_dl_first_failure=1e308, gridbus_dl_last_failure=-1),
        # dead-lettered "by the broker" (no fingerprint): x-death read from its headers
        "x-death-is-text": {"id": "x-death-is-text", "x-death": "not a list"},
        "x-death-of-strings": {"id": "x-death-of-strings", "x-death": ["a", "b"],
                               "x-first-death-reason": 5},
        "x-death-of-wrong-fields": {"id": "x-death-of-wrong-fields",
                                    "x-death": [{"time": "soon", "count": {"a": 1}, "reason": ["x"]}],
                                    dl.PENDING_DESTINATIONS: [1, {"a": 2}, b"\xff"]},
        # pika reads -2**40 as an unsigned 2**64 - 2**40, more than SQLite's INTEGER holds
        "attempts-beyond-sqlite": gridbus_headers("attempts-beyond-sqlite", gridbus_dl_attempts=-2 ** 40),
        "headers-nested-200-deep": {**gridbus_headers("headers-nested-200-deep"), "deep": nested(200)},
        # deeper than pika's decoder recursed with Python's default limit (about 550 levels)
        "headers-nested-600-deep": {**gridbus_headers("headers-nested-600-deep"), "deep": nested(600)},
        # as deep as one frame of 128 KiB holds: arrays of arrays, 5 bytes a level
        "headers-nested-20000-deep": {**gridbus_headers("headers-nested-20000-deep"), "deep": arrays(20_000)},
    }


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def arrays(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def publish(keeper: KeeperStack, letters: dict[str, dict]) -> None:
    """To the route's dead-letter exchange as a worker publishes dead letters (confirmed); bytes
    travel as a long string, so bytes that are not UTF-8 reach the keeper as bytes."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 50_000))  # py-amqp's encoder recurses once per level too
    try:
        with ConfirmingPublisher(keeper.env["GRIDBUS_BROKER_URL"], "test-hostile-dead-letters") as publisher:
            for message_id, headers in letters.items():
                publisher.publish(naming.dead_letter_exchange_name(ROUTE), "",
                                  f"body of {message_id}".encode(),
                                  {"message_id": message_id, "delivery_mode": 2}, headers)
            publisher.flush()
    finally:
        sys.setrecursionlimit(limit)


def stored(keeper: KeeperStack) -> dict:
    """message id → row, for every row in the store file."""
    return {r.message_id: r for r in keeper.stored()}


@pytest.fixture
def keeper(bus_env, tmp_path, state_url):
    """The keeper, storing into a SQLite file or the shared PostgreSQL store (NUL characters and
    lone surrogates, which SQLite keeps and PostgreSQL's text refuses, are the second's test)."""
    k = KeeperStack(dict(bus_env), tmp_path, route=ROUTE, state_url=state_url)
    k.start_keeper()
    yield k
    k.stop()


def test_hostile_dead_letters_and_a_normal_one_after_them_all_reach_the_store(keeper):
    # Given a keeper running on a route's dead-letter queue
    hostile = hostile_letters()
    # When dead letters with headers of every wrong type and size are published, then a normal one
    publish(keeper, hostile)
    publish(keeper, {"normal-after-them": gridbus_headers("normal-after-them")})
    # Then every one of them is a row in the store, the normal one as the worker described it
    rows = wait_for(lambda: (r := stored(keeper)) and len(r) == len(hostile) + 1 and r, 60,
                    f"{len(hostile) + 1} rows in the store (have {sorted(stored(keeper))}; "
                    f"keeper log: {keeper.keeper.log()[-3000:]})")
    normal = rows["normal-after-them"]
    assert (normal.route, normal.reason, normal.attempts) == (ROUTE, REASON, 1)
    # and each hostile one with what it carried: its body and headers as sent, its columns readable
    for message_id, headers in hostile.items():
        row = rows[message_id]
        assert row.body == f"body of {message_id}".encode()
        assert set(row.headers) == set(headers)
        assert all(isinstance(v, str) and len(v) <= 65_536 for v in
                   (row.route, row.fingerprint, row.error_class, row.reason, row.traceback, row.destination,
                    row.worker_host)), row
        assert row.attempts is None or isinstance(row.attempts, int)
        assert all(isinstance(t, float) for t in (row.first_failure, row.last_failure)), row
    # a route name that is not one is the route whose queue it came from
    assert {rows[m].route for m in ("route-is-a-table", "route-is-a-number", "route-is-bytes",
                                    "route-is-huge")} == {ROUTE}
    assert rows["huge-reason-and-traceback"].reason.startswith("why why")
    # headers nested deeper than the store keeps are cut, saying so, so that reading them back never recurses far
    for message_id in ("headers-nested-200-deep", "headers-nested-600-deep", "headers-nested-20000-deep"):
        assert f"nested deeper than {HEADER_DEPTH} levels" in json.dumps(rows[message_id].headers)
    # and an operator reads them as any other: listed, shown, exported
    assert run_cli(keeper.env, "dlq", "list", "--group").returncode == 0
    shown = run_cli(keeper.env, "dlq", "show", "fields-of-every-wrong-type")
    assert shown.returncode == 0 and "attempts      None" in shown.stdout, shown.stderr
    exported = run_cli(keeper.env, "dlq", "export")
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == len(hostile) + 1, exported.stderr
    # and nothing is left in the queue, with the keeper never going round a reconnect loop
    assert keeper.ready() == 0
    assert keeper.keeper.popen.poll() is None
    assert "reconnecting in" not in keeper.keeper.log(), keeper.keeper.log()[-3000:]
