"""The correlator's promises under failure, with real processes: kill -9 mid-storm loses,
duplicates and reopens nothing; two processes splitting the partitions decide what one decides."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.integration.outage_stack import OutageStack, kind, now, storm
from tests.support import wait_for

pytestmark = pytest.mark.slow


def outcome(stack: OutageStack) -> dict[str, tuple]:
    """mRID → (kind, equipment, meters affected at creation, verbs in order) as the ADMS has them."""
    return {o["mRID"]: (kind(o), o["Outage"]["Equipment"]["mRID"], o["Outage"]["originalMetersAffected"],
                        tuple(m["verb"] for m in o["messages"])) for o in stack.adms_outages()}


def settle(stack: OutageStack, truth: set, timeout_s: float = 90) -> dict[str, tuple]:
    def complete(_):
        got = {(k, e) for k, e, _, _ in outcome(stack).values()}
        return truth <= got
    stack.wait_adms(complete, timeout_s, f"the storm's {len(truth)} outages")
    time.sleep(6)  # past every hold: what would still come, comes
    return outcome(stack)


def send_spread(stack: OutageStack, events, seconds: float, on_half=None) -> None:
    """The events in 20 slices over ``seconds``; ``on_half`` is called after the tenth."""
    n = len(events)
    for i in range(20):
        stack.send(events[i * n // 20:(i + 1) * n // 20], chunk=200)
        if i == 9 and on_half is not None:
            on_half()
        time.sleep(seconds / 20)


def test_kill_9_of_the_correlator_mid_storm_loses_duplicates_and_reopens_nothing(bus_env, tmp_path):
    # Given one correlator process, checkpointing every 2 s
    stack = OutageStack(bus_env, tmp_path, partitions=2, checkpoint_s=2)
    try:
        first = stack.start()
        stack.wait_consuming()
        events, truth = storm(stack, now())
        # When it is killed with SIGKILL halfway through the storm, and started again 2 s later
        def crash():
            first.kill9()
        send_spread(stack, events, 8, on_half=crash)
        time.sleep(2)
        stack.start()
        # Then the ADMS has every outage of the storm, each created exactly once, and no other
        got = settle(stack, truth)
        assert {(k, e) for k, e, _, _ in got.values()} == truth, got
        assert all(verbs == ("created",) for _, _, _, verbs in got.values()), got
        # And the redelivered gasps reopened nothing (the engine's ids came back with its state)
        stats = requests.get(f"{stack.adms.url}/stats", timeout=5).json()
        assert stats["outages"] == len(truth)
        # And the store has sent every message it decided
        assert stack.store().counts()["unsent_messages"] == 0
        # And a restoration afterwards closes them, once each
        back = [(m, 102, now()) for k, e in truth for m in (
            stack.feeder_meters(e) if k == "feeder" else stack.dt_meters(e) if k == "dt" else [e])]
        stack.send(back, chunk=500)
        stack.wait_adms(lambda os: all(o["verb"] == "closed" for o in os), 60, "every outage closed")
        for o in stack.adms_outages():
            assert [m["verb"] for m in o["messages"]] == ["created", "closed"], o["messages"]
    finally:
        stack.stop()


def test_two_correlator_processes_give_the_same_outages_as_one(bus_env, tmp_path):
    # Given the storm through one correlator process
    stack = OutageStack(bus_env, tmp_path, partitions=2)
    try:
        one = stack.start()
        stack.wait_consuming()
        events, truth = storm(stack, now())
        send_spread(stack, events, 4)
        alone = settle(stack, truth)
        one.stop()
        # When the same storm (an hour later, into a fresh store and ADMS) goes through two
        # processes, one per partition, each also routing
        stack.env["GRIDBUS_OUTAGE_STORE"] = str(tmp_path / "outages-2.sqlite")
        requests.post(f"{stack.adms.url}/_reset", timeout=5).raise_for_status()
        stack.start("outages-a", "--partitions", "0")
        stack.start("outages-b", "--partitions", "1")
        stack.wait_consuming()
        events2, _ = storm(stack, now())
        send_spread(stack, events2, 4)
        shared = settle(stack, truth)
        # Then they decide the same outages, with the same meters and messages (which number of its
        # feeder a single-customer outage gets may differ: the storm's second run has its own times,
        # and two singles whose holds end in the same second are numbered in the order they arrived)
        assert sorted(shared.values()) == sorted(alone.values())
        assert {(k, e) for k, e, _, _ in alone.values()} == truth
    finally:
        stack.stop()
