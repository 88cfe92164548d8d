"""Pure parts of the network delivery: slots and partitions, rounds, what is dropped, the
refusal's consumers (no broker).  The billing routes themselves: test_ordered_routes.py."""
from __future__ import annotations

import json

from bus.network.delivery import Update, newer_only, rounds
from bus.network.delivery_topology import SLOTS, partition_of, partition_slots, slot_of
from bus.network.publish import message_of
from bus.network.store import PathUpdate
from connectors.network_delivery import consumers_named
from tests.keeper_state import clean, keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401


def update(consumer: str, version: int) -> Update:
    return Update(path={"consumer": consumer, "version": version})


def test_a_consumer_has_one_slot_and_every_slot_one_partition():
    # Given consumers and 4 partitions
    # When their slots and partitions are computed twice
    # Then they are the same each time, and the partitions' slots cover every slot once
    assert [slot_of(f"CON-{i}") for i in range(100)] == [slot_of(f"CON-{i}") for i in range(100)]
    covered = sorted(s for p in range(4) for s in partition_slots(p, 4))
    assert covered == list(range(SLOTS))
    assert slot_of("CON-7") in partition_slots(partition_of("CON-7", 4), 4)


def test_the_outbox_message_is_persistent_and_routed_by_the_consumers_slot():
    # Given an outbox update
    u = PathUpdate(12, "CON-1", 3, {"consumer": "CON-1", "version": 3})
    # When it becomes a message
    key, body, properties, headers = message_of(u)
    # Then it is persistent, keyed by the slot, and carries the path unchanged
    assert key == f"slot.{slot_of('CON-1')}" and properties["delivery_mode"] == 2
    assert json.loads(body) == u.body and properties["message_id"] == "CON-1@3"


def test_rounds_hold_at_most_one_version_per_consumer_in_order():
    # Given a batch with three versions of A and one of B
    batch = [update("A", 1), update("B", 4), update("A", 2), update("A", 3)]
    # When it is split into rounds
    out = [[(u.consumer, u.version) for u in r] for r in rounds(batch)]
    # Then each round has one version per consumer, in version order
    assert out == [[("A", 1), ("B", 4)], [("A", 2)], [("A", 3)]]


def test_versions_not_newer_than_delivered_or_than_earlier_ones_are_dropped():
    # Given A delivered up to 2, and a batch that repeats versions (a republished outbox)
    batch = [update("A", 2), update("A", 3), update("B", 1), update("A", 3), update("B", 1), update("A", 1)]
    # When the batch is filtered
    keep, dropped = newer_only(batch, {"A": 2})
    # Then only A 3 and B 1 remain, once each
    assert [(u.consumer, u.version) for u in keep] == [("A", 3), ("B", 1)]
    assert len(dropped) == 4


def test_a_refusal_names_its_consumers_in_json_and_xml():
    # Given billing refusals as the stand-ins answer them
    j = json.dumps({"Reply": {"Result": "FAILED", "Error": [{"code": "CONSUMER_REFUSED", "consumer": "C-1"}]}})
    x = (b"<ResponseMessage xmlns='http://iec.ch/TC57/2011/schema/message'><Reply><Result>FAILED</Result>"
         b"<Error><code>STALE_VERSION</code><details>C-2</details></Error></Reply></ResponseMessage>")
    # Then the consumers are read from both; an unreadable body names none
    assert consumers_named(j.encode(), "application/json") == ["C-1"]
    assert consumers_named(x, "application/xml") == ["C-2"]
    assert consumers_named(b"<!DOCTYPE x><x/>", "application/xml") == []


def test_a_parked_consumers_updates_are_held_and_released_in_version_order(tmp_path, state_url):
    # Given consumer A parked on route r after its version 1 was dead-lettered (SQLite or PostgreSQL)
    from bus.network.delivery_state import DeliveryState
    clean(state_url, "parked_consumers", "parked_updates")
    state = DeliveryState(tmp_path / "d.sqlite", url=state_url)
    state.park("r", "A", 1, "billing refuses consumer A")
    held = [Update({"consumer": "A", "version": v}, b'{"v": %d}' % v, {"h": v}, {}) for v in (3, 2)]
    # When A's later updates and one of B's arrive
    parked = state.hold_if_parked("r", held + [update("B", 1)])
    # Then A's are held in version order, B's are not, and the listing says so
    assert parked == {"A"}
    assert [v for v, *_ in state.parked_updates("r", "A")] == [2, 3]
    assert [(p["consumer"], p["held"], p["lastHeldVersion"]) for p in state.parked("r")] == [("A", 2, 3)]
    # When only version 2 was sent before another arrived, the consumer stays parked
    assert state.unpark("r", "A", 2) is False
    # And once all are sent it flows again
    assert state.unpark("r", "A", 3) is True and state.parked() == []
    assert state.hold_if_parked("r", held) == set()
    state.close()


def test_a_delivered_version_never_goes_down(tmp_path, state_url):
    # Given versions delivered to route r (SQLite or PostgreSQL)
    from bus.network.delivery_state import DeliveryState
    clean(state_url, "delivered")
    state = DeliveryState(tmp_path / "d.sqlite", url=state_url)
    state.record("r", {"A": 3, "B": 1})
    # When older and newer versions are recorded after them (a redelivery, then progress)
    state.record("r", {"A": 2, "B": 4})
    # Then each consumer keeps its highest, per route
    assert state.delivered("r", ["A", "B", "C"]) == {"A": 3, "B": 4}
    assert state.delivered("other", ["A"]) == {}
    state.close()
