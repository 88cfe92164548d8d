"""What a partition of the correlator takes from its queue (bus/outages/partition.py, router.py):
events, ticks and replies are inputs; anything else is refused with a reason, before the engine
sees any of the batch."""
from __future__ import annotations

import orjson
import pytest

from bus.messaging import Delivery
from bus.outages.partition import BadInput, _merge_ticks, event_of, event_row
from bus.outages.events import MeterEvent
from bus.outages.router import H_TICK, canonical_of, tick_in_route_queue, tick_of


class Props:
    def __init__(self, **kw):
        self.headers = kw.pop("headers", None)
        for k in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                  "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"):
            setattr(self, k, kw.get(k))


def delivery(body: bytes, **props) -> Delivery:
    return Delivery("q", body, False, "k", 1, Props(**props))


def test_an_event_row_round_trips_and_a_bad_row_is_refused_by_what_is_wrong():
    e = MeterEvent("UPM00000001", 101, 1_796_000_000.5, 1_796_000_001.0, "hes-a", "hes-a:A1")
    assert event_of(event_row(e)) == e
    for row in ([1, 101, 1.0, None, "", ""], ["M", 103, 1.0, None, "", ""], ["M", 101, "now", None, "", ""],
                ["M", 101, 1.0, "later", "", ""], ["M", 101], "M,101", None):
        with pytest.raises(BadInput, match="not an event row"):
            event_of(row)


def test_consecutive_ticks_are_one_and_a_tick_between_events_keeps_its_place():
    ev = {"t": "ev", "now": 5.0, "src": [["m", 0]], "ev": []}
    merged = _merge_ticks([{"t": "tick", "w": 1.0}, {"t": "tick", "w": 3.0}, {"t": "tick", "w": 2.0}, ev,
                           {"t": "tick", "w": 4.0}])
    assert merged == [{"t": "tick", "w": 3.0}, ev, {"t": "tick", "w": 4.0}]


def test_a_tick_on_the_route_queue_carries_its_watermark_and_expires():
    exchange, key, body, props, headers = tick_in_route_queue("outages-to-adms", 1_796_000_000.0)
    assert key == "route.outages-to-adms" and headers == {H_TICK: 1} and props["expiration"] == "10000"
    assert tick_of(delivery(body, headers=headers)) == 1_796_000_000.0
    for bad in (b"{", b'{"w": "soon"}', b'{"w": -1}', b'{"w": 1e300}', b"[]"):
        with pytest.raises(ValueError):
            tick_of(delivery(bad, headers=headers))


def test_a_route_message_gives_its_canonical_document_and_anything_else_a_reason():
    from bus import task_message
    from bus.envelope import Envelope

    doc = {"noun": "EndDeviceEvents", "EndDeviceEvent": []}
    body, props, headers = task_message.build(Envelope(route_id="r1", source="hes-a", verb="created",
                                                       noun="EndDeviceEvents", message_id="m-1"), doc)
    assert canonical_of(delivery(body, headers=headers, **props)) == ("m-1", doc)
    for bad in (b"not json", b"[" * 5000 + b"]" * 5000, orjson.dumps([[["a list"]], {}, {}]), orjson.dumps({"a": 1})):
        with pytest.raises(ValueError):
            canonical_of(delivery(bad, headers={}))


def test_a_first_breath_also_goes_to_the_partitions_of_the_feeders_its_meter_was_under_lately():
    from bus import task_message
    from bus.envelope import Envelope
    from bus.outages.events import iso
    from bus.outages.rules import partition_of
    from bus.outages.router import Router
    from bus.outages.topology import CONSUMER, Place
    from bus.routes.model import CorrelateOptions, Endpoint, QueueOptions, RetryPolicy, Route

    feeders = [f"FDR-{i:04d}" for i in range(20)]
    old = next(f for f in feeders if partition_of(f, 4) == 1)
    new = next(f for f in feeders if partition_of(f, 4) == 3)

    class Moved:  # the DT is on `new` now, and was on `old` an hour ago
        def prefetch(self, meters, t_min, t_max):
            pass

        def locate(self, meter, at):
            return Place(CONSUMER, "DT-1", new)

        def feeders_over(self, meters, t_from, t_to):
            return {m: {old, new} for m in meters}

    class Pub:
        def __init__(self):
            self.sent = []

        def publish(self, exchange, key, body, props, headers):
            self.sent.append((key, orjson.loads(body)))

        def flush(self):
            pass

    route = Route(id="r1", use_case=3, description="", source=Endpoint("adms", "subscription"), method="correlate",
                  transform=(), destinations=(), retry=RetryPolicy(), queue=QueueOptions(), message={}, file="f",
                  line=1, correlate=CorrelateOptions(partitions=4))
    pub = Pub()
    t = 1_796_000_000
    doc = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
        {"meter": "M1", "isCode": 101, "createdDateTime": iso(t), "alarmId": "a1"},
        {"meter": "M2", "isCode": 102, "createdDateTime": iso(t), "alarmId": "a2"}]}
    body, props, headers = task_message.build(Envelope(route_id="r1", source="hes-a", verb="created",
                                                       noun="EndDeviceEvents", message_id="m-1"), doc)
    # When the router takes a gasp and a first breath of meters now on `new`
    Router(route, Moved(), pub).handle([delivery(body, headers=headers, **props)])
    # Then the gasp goes to the partition of `new` only, the breath to those of `new` and `old`
    got = {key: [row[0] for row in msg["ev"]] for key, msg in pub.sent}
    assert got == {"r1.3": ["M1", "M2"], "r1.1": ["M2"]}
