"""The recorder: trace events from the bus into the store; prunes what is older than the retention;
counts them as Prometheus metrics (``bus.tracing.metrics``) when asked to."""
from __future__ import annotations

import json
import logging
import threading
import time

from bus import naming
from bus.messaging import BatchConsumer, Delivery
from bus.tracing.metrics import TraceMetrics
from bus.tracing.store import TraceStore

log = logging.getLogger("gridbus.recorder")
BATCH_MESSAGES = 200


def _consumer(broker_url: str, store: TraceStore, retention_s: float, prune_every_s: float,
              metrics: TraceMetrics | None) -> BatchConsumer:
    """Commit a batch of events, count it, then (the consumer) ack it; prune between batches."""
    def add(batch: list[Delivery]) -> None:
        events = [e for delivery in batch for e in json.loads(delivery.body)]
        store.add(events)
        if metrics is not None:
            metrics.observe(events)

    last_prune = [0.0]

    def prune() -> None:
        if time.monotonic() - last_prune[0] > prune_every_s:
            pruned = store.prune(retention_s)
            if pruned:
                log.info("pruned %d trace events older than %.0fs", pruned, retention_s)
            last_prune[0] = time.monotonic()

    return BatchConsumer(broker_url, [naming.TRACE_QUEUE], add, name="gridbus-recorder",
                         batch_max=BATCH_MESSAGES, window_s=0.2, between=prune)


def record(broker_url: str, store: TraceStore, stop: threading.Event, retention_s: float,
           prune_every_s: float = 60.0, metrics: TraceMetrics | None = None) -> None:
    """Consume until ``stop`` on one connection."""
    _consumer(broker_url, store, retention_s, prune_every_s, metrics).consume(stop)


def serve(broker_url: str, store: TraceStore, stop: threading.Event, retention_s: float,
          prune_every_s: float = 60.0, metrics: TraceMetrics | None = None) -> None:
    """Consume until ``stop``, reconnecting after broker outages."""
    _consumer(broker_url, store, retention_s, prune_every_s, metrics).serve(stop)
