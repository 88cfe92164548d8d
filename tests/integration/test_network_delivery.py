"""Use case 9 out to billing: consumer-path updates from the network store's outbox to billing-1
(JSON) and billing-2 (XML), in version order per consumer, with two delivery processes, a billing
system down for a while, and a delivery process killed with kill -9 mid-batch.

Real RabbitMQ, real `gridbus network publish|deliver` processes, real billing stand-ins; the
stand-ins answer 409 to any update older than the version they hold, so ``stale_409 == 0`` proves
zero out-of-order deliveries.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
import requests

from bus.network import open_store
from tests.support import Proc, ROOT, free_port, gridbus, run_cli, serving, wait_for


ROUTES = ROOT / "routes" / "uc9-billing.yaml"  # only the billing routes: no other address needed


class Billing:
    """A billing stand-in (``simulators.billing_network``) as a real HTTP server process."""

    def __init__(self, fmt: str, name: str, env: dict, logs: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(name, [sys.executable, "-m", "simulators.billing_network", "--format", fmt,
                                "--port", str(self.port), "--name", name], env, logs).start()
        wait_for(lambda: serving(f"{self.url}/health"), 20, f"{name} to listen")

    def stats(self) -> dict:
        return requests.get(f"{self.url}/stats", timeout=5).json()

    def control(self, **mode) -> None:
        requests.post(f"{self.url}/_control", json=mode, timeout=5).raise_for_status()

    def consumer(self, consumer: str) -> dict:
        return requests.get(f"{self.url}/consumers/{consumer}", timeout=5).json()

    def versions(self) -> dict[str, int]:
        held = requests.get(f"{self.url}/consumers", timeout=10).json()
        held = held.get("consumers", held)
        return {c: (p["version"] if isinstance(p, dict) and "version" in p else p) for c, p in held.items()}


class Gis:
    """Change documents for a small network: DTs under two feeders, consumers under the DTs."""

    def __init__(self, dts: int, consumers: int):
        self.numbers = itertools.count(1)
        self.dts, self.consumers = dts, consumers
        self.clock = 0

    def change(self, kind, type_, mrid, parent=None, **attributes):
        n = next(self.numbers)
        out = {"changeId": f"gis-{n:06d}", "sequence": n, "effectiveFrom": self.at(), "kind": kind,
               "type": type_, "mrid": mrid, "attributes": attributes}
        if parent:
            out["parent"] = parent
        return out

    def at(self) -> str:
        return f"2026-11-{1 + self.clock // 24:02d}T{self.clock % 24:02d}:00:00+05:30"

    def network(self) -> list[dict]:
        out = [self.change("create", "substation", "SS-1")]
        out += [self.change("create", "feeder", f"FDR-{f}", "SS-1") for f in (1, 2)]
        out += [self.change("create", "dt", f"DT-{d}", f"FDR-{d % 2 + 1}") for d in range(self.dts)]
        out += [self.change("create", "consumer", f"CON-{c:05d}", f"DT-{c % self.dts}", meter=f"M-{c:05d}-0",
                            category="domestic", circle="C01") for c in range(self.consumers)]
        return out

    def round(self, r: int) -> list[dict]:
        """A new meter for every consumer, then every DT moved to the other feeder: two versions each."""
        self.clock += 1
        out = [self.change("update", "consumer", f"CON-{c:05d}", meter=f"M-{c:05d}-{r}") for c in range(self.consumers)]
        self.clock += 1
        out += [self.change("move", "dt", f"DT-{d}", f"FDR-{(d + r) % 2 + 1}") for d in range(self.dts)]
        return out


class Uc9Stack:
    def __init__(self, env: dict, tmp: Path):
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.billing1 = Billing("json", "billing-1", env, self.logs)
        self.billing2 = Billing("xml", "billing-2", env, self.logs)
        self.env = {**env, "BILLING_1_URL": self.billing1.url, "BILLING_2_URL": self.billing2.url,
                    "GRIDBUS_ROUTES": str(ROUTES)}
        self.store = open_store(Path(env["GRIDBUS_HOME"]) / "state" / "network.sqlite")
        self.procs: list[Proc] = []
        self.deliverers = [self.start("deliver-1", "deliver"), self.start("deliver-2", "deliver")]
        self.publishers = [self.start("publish-1", "publish", "--poll-s", "0.2"),
                           self.start("publish-2", "publish", "--poll-s", "0.2")]

    def start(self, name: str, *args: str) -> Proc:
        proc = Proc(name, gridbus("network", *args, "--routes", str(ROUTES)), self.env, self.logs).start()
        self.procs.append(proc)
        return proc

    def apply(self, changes: list[dict]) -> None:
        result = self.store.apply(changes)
        assert not [o for o in result.outcomes if o.status != "applied"], result.outcomes[:3]

    def expected(self) -> dict[str, int]:
        return {c: ups[-1].version for c in self.consumer_ids for ups in [self.store.updates_of(c)]}

    def delivered_everywhere(self, expected: dict[str, int], timeout_s: float = 90) -> None:
        def done():
            return self.billing1.versions() == expected and self.billing2.versions() == expected
        wait_for(done, timeout_s, f"every consumer at its last version at both billing systems "
                 f"(billing-1 {self.billing1.stats()}, billing-2 {self.billing2.stats()}; "
                 f"{self.log()})", every_s=0.5)

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-2000:]}" for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.billing1.proc.stop()
        self.billing2.proc.stop()


@pytest.fixture
def uc9(bus_env, tmp_path):
    stack = Uc9Stack(bus_env, tmp_path)
    yield stack
    stack.stop()


def fill(stack: Uc9Stack, consumers: int, dts: int, rounds: int) -> dict[str, int]:
    gis = Gis(dts=dts, consumers=consumers)
    stack.consumer_ids = [f"CON-{c:05d}" for c in range(consumers)]
    stack.apply(gis.network())
    for r in range(1, rounds + 1):
        stack.apply(gis.round(r))
    return stack.expected()


def assert_in_order(stack: Uc9Stack, expected: dict[str, int]) -> None:
    for billing in (stack.billing1, stack.billing2):
        stats = billing.stats()
        assert stats["stale_409"] == 0, stats
        for consumer in list(expected)[:20]:
            versions = billing.consumer(consumer)["versions"]
            assert versions == sorted(versions), (billing.url, consumer, versions)


def test_200_consumers_with_several_versions_reach_both_billing_systems_in_order(uc9):
    # Given two delivery processes, two publishers, and 200 consumers with 5 versions each
    expected = fill(uc9, consumers=200, dts=10, rounds=2)
    assert set(expected.values()) == {5}
    # When the outbox is published
    # Then every consumer reaches its last version at billing-1 and billing-2, with zero 409s
    uc9.delivered_everywhere(expected)
    assert_in_order(uc9, expected)
    assert uc9.store.stats()["outboxPending"] == 0
    # And of the two publishers one led; the other waited for the lease
    logs = [p.log() for p in uc9.publishers]
    assert sum("published" in log for log in logs) == 1, logs
    assert sum("not publishing" in log and "RESOURCE_LOCKED" in log for log in logs) == 1, logs


def test_billing_1_down_for_a_while_then_back_gets_everything_in_order(uc9):
    # Given billing-1 down
    uc9.billing1.control(mode="down")
    expected = fill(uc9, consumers=200, dts=10, rounds=1)
    # When updates are published while it is down, and it comes back after a while
    wait_for(lambda: uc9.billing2.versions() == expected, 60, "billing-2 to have everything")
    assert uc9.billing1.stats()["stored"] == 0
    uc9.billing1.control(mode="healthy")
    # Then everything reaches billing-1, in order, with zero 409s
    uc9.delivered_everywhere(expected)
    assert_in_order(uc9, expected)


def test_a_delivery_process_killed_mid_batch_loses_nothing(uc9):
    # Given billing-1 slow, so that batches are in flight in the delivery processes
    uc9.billing1.control(mode="slow", delay_s=0.5)
    expected = fill(uc9, consumers=200, dts=10, rounds=2)
    wait_for(lambda: uc9.billing1.stats()["posts"] >= 2, 30, "billing-1 to take some batches")
    # When both delivery processes are killed with kill -9 mid-batch, and one restarted
    for proc in uc9.deliverers:
        proc.kill9()
    uc9.billing1.control(mode="healthy")
    uc9.deliverers = [uc9.start("deliver-3", "deliver")]
    # Then nothing is lost and nothing arrives out of order
    uc9.delivered_everywhere(expected)
    assert_in_order(uc9, expected)


def test_a_consumer_refused_for_good_is_parked_while_others_flow_and_a_replay_releases_it_in_order(uc9):
    # Given billing-1 refusing one consumer for good (422)
    uc9.billing1.control(fail_consumer="CON-00003")
    # When 200 consumers get 3 versions each
    expected = fill(uc9, consumers=200, dts=10, rounds=1)
    others = {c: v for c, v in expected.items() if c != "CON-00003"}
    # Then every other consumer reaches billing-1, and all reach billing-2
    wait_for(lambda: uc9.billing1.versions() == others and uc9.billing2.versions() == expected, 60,
             f"the other consumers at billing-1, all at billing-2 ({uc9.log()})", every_s=0.5)
    # And the refused update is a dead letter, its consumer parked with its two later updates held
    parked = json.loads(run_cli(uc9.env, "network", "parked", "--json").stdout)
    assert [(p["route"], p["consumer"], p["deadLetteredVersion"], p["held"]) for p in parked] == [
        ("network-to-billing-1", "CON-00003", 1, 2)]
    dead = json.loads(run_cli(uc9.env, "dlq", "list", "--json").stdout)
    assert [(d["route"], d["count"]) for d in dead] == [("network-to-billing-1", 1)]
    # When billing-1 takes the consumer again and the dead letter is replayed
    uc9.billing1.control(fail_consumers=[])
    replayed = run_cli(uc9.env, "dlq", "replay", "--all", "--route", "network-to-billing-1")
    assert replayed.returncode == 0, replayed.stderr
    # Then the consumer's updates reach billing-1 in order, and nothing is parked any more
    uc9.delivered_everywhere(expected, timeout_s=30)
    assert uc9.billing1.consumer("CON-00003")["versions"] == [1, 2, 3]
    assert_in_order(uc9, expected)
    assert json.loads(run_cli(uc9.env, "network", "parked", "--json").stdout) == []


def test_a_discarded_dead_letter_and_a_release_let_the_held_updates_go_in_order(uc9):
    # Given one of 20 consumers refused for good by billing-1, parked with its later updates held
    uc9.billing1.control(fail_consumer="CON-00003")
    expected = fill(uc9, consumers=20, dts=2, rounds=1)
    wait_for(lambda: json.loads(run_cli(uc9.env, "network", "parked", "--json").stdout), 30,
             f"CON-00003 parked ({uc9.log()})")
    wait_for(lambda: uc9.billing2.versions() == expected, 30, "billing-2 to have everything")
    # When the dead letter is discarded and the consumer released
    uc9.billing1.control(fail_consumers=[])
    assert run_cli(uc9.env, "dlq", "purge", "--route", "network-to-billing-1", "--yes").returncode == 0
    released = run_cli(uc9.env, "network", "release", "network-to-billing-1", "CON-00003")
    assert released.returncode == 0, released.stderr
    # Then its held updates reach billing-1 in order (the discarded version 1 never), zero 409s
    uc9.delivered_everywhere(expected, timeout_s=30)
    assert uc9.billing1.consumer("CON-00003")["versions"] == [2, 3]
    assert_in_order(uc9, expected)
    assert json.loads(run_cli(uc9.env, "network", "parked", "--json").stdout) == []
