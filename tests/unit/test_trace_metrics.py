"""The recorder's Prometheus metrics, counted from trace events as the emitters send them."""
from __future__ import annotations

from prometheus_client import generate_latest

from bus.tracing.metrics import TraceMetrics


def value(metrics: TraceMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_batch_of_trace_events_is_counted_by_route_destination_and_status():
    # Given the events of two file chunks (one retried once) and of an on-demand read
    route, read = "hes-a-csv-to-mdms-1", "mdms-1-reads-to-hes"
    events = [
        {"kind": "received", "route": route}, {"kind": "received", "route": route},
        {"kind": "consumed", "route": route, "waited_s": 0.004}, {"kind": "consumed", "route": route, "waited_s": None},
        {"kind": "transformed", "route": route, "readings": 400, "events": 2, "rejected": 1},
        {"kind": "transformed", "route": route, "readings": 380, "events": 0, "rejected": 0},
        {"kind": "delivered", "route": route, "destination": "mdms-1", "status": "200", "duration_s": 0.12},
        {"kind": "retried", "route": route, "attempt": 2, "dropped_before": 3},
        {"kind": "consumed", "route": route, "waited_s": 2.0},
        {"kind": "delivered", "route": route, "destination": "mdms-1", "status": "200", "duration_s": 0.3},
        {"kind": "delivered", "route": read, "destination": "hes", "status": "PARTIAL", "duration_s": 0.002},
        {"kind": "dead-lettered", "route": read}, {"kind": "replayed", "route": read},
        {"kind": "delivered", "route": "hes-a-alarms", "destination": "events",
         "status": "published to 4 subscriber(s)", "duration_s": 0.001},
        {"kind": "transformed", "route": "hes-a-alarms", "readings": 0, "events": 0, "rejected": 0},
        {"kind": "refused", "route": "billing-1-commands", "source": "hes-a", "status": 403, "code": "FORBIDDEN"},
    ]
    metrics = TraceMetrics()
    # When the recorder counts them
    metrics.observe(events)
    # Then each count is what the events say
    assert value(metrics, "gridbus_messages_received_total", route=route) == 2
    assert value(metrics, "gridbus_messages_consumed_total", route=route) == 3
    assert value(metrics, "gridbus_queue_wait_seconds_count", route=route) == 2  # one had no publish time
    assert value(metrics, "gridbus_readings_total", route=route) == 780
    assert value(metrics, "gridbus_meter_events_total", route=route) == 2
    assert value(metrics, "gridbus_rows_rejected_total", route=route) == 1
    assert value(metrics, "gridbus_deliveries_total", route=route, destination="mdms-1", status="200") == 2
    assert value(metrics, "gridbus_delivery_seconds_sum", route=route, destination="mdms-1") == 0.42
    assert value(metrics, "gridbus_delivery_seconds_bucket", route=route, destination="mdms-1", le="0.25") == 1
    assert value(metrics, "gridbus_deliveries_total", route=read, destination="hes", status="PARTIAL") == 1
    assert value(metrics, "gridbus_retries_total", route=route) == 1
    assert value(metrics, "gridbus_dead_letters_total", route=read) == 1
    assert value(metrics, "gridbus_replays_total", route=read) == 1
    assert value(metrics, "gridbus_trace_events_dropped_total") == 3
    assert value(metrics, "gridbus_trace_events_total", kind="delivered") == 4
    # a connector's sentence for a status is labelled by its first word; zero readings make no series
    assert value(metrics, "gridbus_deliveries_total", route="hes-a-alarms", destination="events",
                 status="published") == 1
    assert value(metrics, "gridbus_readings_total", route="hes-a-alarms") is None
    # a refusal by the gateway, by the system that asked and why
    assert value(metrics, "gridbus_requests_refused_total", route="billing-1-commands", source="hes-a",
                 code="FORBIDDEN") == 1
    # and the exposition names no meter and no message id
    assert b"UPM" not in generate_latest(metrics.registry)


def test_an_event_without_route_or_numbers_is_counted_without_failing():
    # Given events as an older or foreign emitter might send them
    metrics = TraceMetrics()
    # When counted  Then nothing raises, and they land under route "?"
    metrics.observe([{"kind": "transformed"}, {"kind": "delivered"}, {}])
    assert value(metrics, "gridbus_deliveries_total", route="?", destination="?", status="?") == 1
    assert value(metrics, "gridbus_trace_events_total", kind="?") == 1
