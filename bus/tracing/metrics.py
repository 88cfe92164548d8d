"""Prometheus metrics of the whole bus, counted by the recorder from the trace events.

Every process of the bus (Celery prefork children, the event-loop worker, the
ingress, the gateway, `dlq replay`) already sends each hop of each message to
the recorder.  Counting there gives one endpoint to scrape for all of them,
instead of an endpoint per process and prometheus_client's multiprocess mode
for Celery's forked children.  What that costs, said where operators read it
(docs/operations.md, "Metrics"):

- with tracing off (``GRIDBUS_TRACING=off``) there are no metrics either;
- events the emitters dropped under overload are not counted, but their
  number is (``gridbus_trace_events_dropped_total``), so a gap is visible;
- counters start again from zero when the recorder restarts (Prometheus's
  ``rate()`` and ``increase()`` allow for that), and a batch redelivered after
  a recorder crash is counted twice.

Labels are route ids, destination systems, delivery statuses (an HTTP status or
an IEC 61968 Result) and event kinds: all bounded by the route files, never a
meter or a message id.
"""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

# seconds: an on-demand read answers in milliseconds, an MDMS batch POST in seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class TraceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("gridbus_trace_events", "Trace events recorded, by kind.", ["kind"], registry=r)
        self.dropped = Counter("gridbus_trace_events_dropped",
                               "Trace events the emitters dropped (buffer full, broker away); not counted below.",
                               registry=r)
        self.received = Counter("gridbus_messages_received", "Messages taken in by an ingress or the gateway.",
                                ["route"], registry=r)
        self.consumed = Counter("gridbus_messages_consumed", "Messages a worker took from a route queue "
                                "(each attempt).", ["route"], registry=r)
        self.waited = Histogram("gridbus_queue_wait_seconds", "From publish to a worker taking the message.",
                                ["route"], buckets=BUCKETS, registry=r)
        self.readings = Counter("gridbus_readings", "Meter readings transformed for delivery.", ["route"], registry=r)
        self.meter_events = Counter("gridbus_meter_events", "Meter events (alarms) transformed for delivery.",
                                    ["route"], registry=r)
        self.rejected = Counter("gridbus_rows_rejected", "Rows a decoder rejected (bad values, wrong shape).",
                                ["route"], registry=r)
        self.deliveries = Counter("gridbus_deliveries", "Deliveries to a destination, by its status (HTTP status, "
                                  "or the Result of a request).", ["route", "destination", "status"], registry=r)
        self.delivery_s = Histogram("gridbus_delivery_seconds", "How long a destination took to take a delivery "
                                    "or answer a request.", ["route", "destination"], buckets=BUCKETS, registry=r)
        self.retries = Counter("gridbus_retries", "Attempts that failed and wait in the broker for another.",
                               ["route"], registry=r)
        self.dead_letters = Counter("gridbus_dead_letters", "Messages dead-lettered (permanent failure, or out of "
                                    "attempts).", ["route"], registry=r)
        self.replays = Counter("gridbus_replays", "Dead letters replayed.", ["route"], registry=r)
        self.refused = Counter("gridbus_requests_refused", "Requests the gateway refused, by the asking system "
                               "and the refusal's code (FORBIDDEN, DISCONNECT_RATE, BUSY, ...).",
                               ["route", "source", "code"], registry=r)

    def observe(self, events: Iterable[dict]) -> None:
        """Count a batch of trace events (as the recorder stores them)."""
        for event in events:
            kind, route = event.get("kind", "?"), str(event.get("route") or "?")
            self.events.labels(kind).inc()
            if event.get("dropped_before"):
                self.dropped.inc(event["dropped_before"])
            if kind == "received":
                self.received.labels(route).inc()
            elif kind == "consumed":
                self.consumed.labels(route).inc()
                if isinstance(event.get("waited_s"), (int, float)):
                    self.waited.labels(route).observe(event["waited_s"])
            elif kind == "transformed":
                for counter, field in ((self.readings, "readings"), (self.meter_events, "events"),
                                       (self.rejected, "rejected")):
                    if event.get(field):  # no series of zeros for routes that never carry any
                        counter.labels(route).inc(event[field])
            elif kind == "delivered":
                destination = str(event.get("destination") or "?")
                self.deliveries.labels(route, destination, status_label(event.get("status"))).inc()
                if isinstance(event.get("duration_s"), (int, float)):
                    self.delivery_s.labels(route, destination).observe(event["duration_s"])
            elif kind == "retried":
                self.retries.labels(route).inc()
            elif kind == "dead-lettered":
                self.dead_letters.labels(route).inc()
            elif kind == "replayed":
                self.replays.labels(route).inc()
            elif kind == "refused":
                self.refused.labels(route, str(event.get("source") or "?"), str(event.get("code") or "?")).inc()


def status_label(status) -> str:
    """An HTTP status or a Result as it is; a connector's sentence ("published to 4
    subscriber(s)", "written") by its first word, so that a label never takes a count."""
    words = str(status or "?").split()
    return (words[0] if words else "?")[:32]
