"""The outbox publisher's messages of several updates and how the delivery process splits them
(no broker): order per consumer is kept, each update can be dead-lettered or held on its own."""
from __future__ import annotations

import json

from bus.messaging.consumer import Delivery
from bus.network.delivery import Update, chunks, rounds
from bus.network.delivery_topology import slot_of
from bus.network.publish import H_UPDATES, MESSAGE_TYPE, messages_of
from bus.network.store import PathUpdate


class Props:
    """pika's BasicProperties as the consumer reads them."""

    def __init__(self, headers: dict, **properties):
        self.headers = headers
        for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                     "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"):
            setattr(self, name, properties.get(name))


def delivered(key: str, body: bytes, properties: dict, headers: dict) -> Delivery:
    return Delivery("q", body, False, key, 1, Props(headers, **properties))


def path(consumer: str, version: int) -> dict:
    return {"consumer": consumer, "version": version, "dt": f"DT-{version}"}


def test_updates_are_grouped_by_slot_in_the_order_written():
    # Given the outbox: three versions of A among updates of many other consumers
    outbox = [PathUpdate(i, c, v, path(c, v)) for i, (c, v) in enumerate(
        [("A", 1)] + [(f"C-{n}", 1) for n in range(300)] + [("A", 2), ("B", 1), ("A", 3)])]
    # When it becomes messages of at most 50 updates
    messages = messages_of(outbox, per_message=50)
    # Then every update is in exactly one message, each message holds one slot's updates, at most 50
    seen = []
    for key, body, properties, headers in messages:
        doc = json.loads(body)
        ups = doc["updates"] if "updates" in doc else [doc]
        assert {f"slot.{slot_of(u['consumer'])}" for u in ups} == {key}
        assert len(ups) <= 50 and properties["delivery_mode"] == 2
        assert headers.get(H_UPDATES, 1) == len(ups)
        seen += [(u["consumer"], u["version"]) for u in ups]
    assert sorted(seen) == sorted((u.consumer, u.version) for u in outbox)
    # And A's versions come in the order written (its slot's messages are published in order)
    assert [v for c, v in seen if c == "A"] == [1, 2, 3]


def test_a_message_of_several_updates_is_split_into_updates_of_their_own():
    # Given a message of three updates and a message of one
    outbox = [PathUpdate(1, "A", 1, path("A", 1)), PathUpdate(2, "A", 2, path("A", 2)), PathUpdate(3, "B", 4, path("B", 4))]
    several = [m for m in messages_of(outbox) if H_UPDATES in m[3]]
    assert len(several) <= 2
    one = messages_of(outbox[:1])[0]
    # When the delivery process reads them
    updates = []
    for message in several + [one]:
        ups, bad = Update.all_of(delivered(*message))
        assert bad == []
        updates += ups
    # Then each update stands alone: its path, a body of its own, its consumer and version in the headers
    for u in updates:
        assert json.loads(u.body) == u.path
        assert (u.headers["gridbus-consumer"], u.headers["gridbus-version"]) == (u.consumer, u.version)
        assert u.properties["type"] == MESSAGE_TYPE and u.properties["message_id"] == f"{u.consumer}@{u.version}"
        assert H_UPDATES not in u.headers


def test_an_undecodable_update_among_good_ones_is_reported_alone():
    # Given a message of updates, one of them without a version
    body = json.dumps({"updates": [path("A", 1), {"consumer": "B"}, path("C", 2)]}).encode()
    # When it is read
    ups, bad = Update.all_of(delivered("slot.1", body, {"delivery_mode": 2}, {H_UPDATES: 3}))
    # Then the good ones are updates, the bad one is reported with why
    assert [(u.consumer, u.version) for u in ups] == [("A", 1), ("C", 2)]
    assert len(bad) == 1 and json.loads(bad[0][0]) == {"consumer": "B"} and "version" in bad[0][1]
    # And a body that is no JSON at all is reported whole
    assert Update.all_of(delivered("slot.1", b"{", {}, {}))[1][0][0] == b"{"


def test_a_round_goes_out_as_posts_of_at_most_batch_max_updates():
    # Given a round of 1,201 consumers
    round_ = rounds([Update(path(f"C-{n}", 1)) for n in range(1201)])[0]
    # When it is cut for a route whose batch_max is 500
    posts = chunks(round_, 500)
    # Then three POSTs, in order, nothing lost
    assert [len(p) for p in posts] == [500, 500, 201]
    assert [u for p in posts for u in p] == round_
