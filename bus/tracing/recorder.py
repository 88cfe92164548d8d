"""The recorder: trace events from the bus into the store; prunes what is older than the retention;
counts them as Prometheus metrics (``bus.tracing.metrics``) when asked to."""
from __future__ import annotations

import json
import logging
import threading
import time

from bus import naming
from bus.amqp_client import pika_connect, pika_errors, until_stopped
from bus.tracing.metrics import TraceMetrics
from bus.tracing.store import TraceStore

log = logging.getLogger("gridbus.recorder")
BATCH_MESSAGES = 200


def record(broker_url: str, store: TraceStore, stop: threading.Event, retention_s: float,
           prune_every_s: float = 60.0, metrics: TraceMetrics | None = None) -> None:
    """Consume until ``stop``; commit a batch of events, count it, then ack it."""
    conn = pika_connect(broker_url, "gridbus-recorder")
    last_prune = 0.0
    try:
        with pika_errors("recording trace events"):
            ch = conn.channel()
            ch.basic_qos(prefetch_count=BATCH_MESSAGES * 2)
            pending: list[tuple[int, bytes]] = []

            def flush() -> None:
                if not pending:
                    return
                events = [e for _tag, body in pending for e in json.loads(body)]
                store.add(events)
                if metrics is not None:
                    metrics.observe(events)
                ch.basic_ack(pending[-1][0], multiple=True)
                pending.clear()

            def on_message(channel, method, props, body):
                pending.append((method.delivery_tag, body))
                if len(pending) >= BATCH_MESSAGES:
                    flush()

            ch.basic_consume(naming.TRACE_QUEUE, on_message)
            while not stop.is_set():
                conn.process_data_events(time_limit=0.2)
                flush()
                if time.monotonic() - last_prune > prune_every_s:
                    pruned = store.prune(retention_s)
                    if pruned:
                        log.info("pruned %d trace events older than %.0fs", pruned, retention_s)
                    last_prune = time.monotonic()
            flush()
    finally:
        try:
            conn.close()
        except Exception:
            pass


def serve(broker_url: str, store: TraceStore, stop: threading.Event, retention_s: float,
          prune_every_s: float = 60.0, metrics: TraceMetrics | None = None) -> None:
    until_stopped("recorder", lambda: record(broker_url, store, stop, retention_s, prune_every_s, metrics), stop)
