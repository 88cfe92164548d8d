"""Send trace events without ever holding up the data path.

``record()`` only appends to a bounded in-memory buffer; a background thread
wakes every ``LINGER_S`` and publishes what is there, with publisher confirms
it does not wait for.  Appending never wakes that thread: with a queue that
signals each put, three events per request meant three hand-overs of the GIL
to a thread that had nothing to send yet, on the request's own path.  A full buffer,
a broker that refuses (the trace queue is bounded: ``reject-publish``) or a
broker that is away make events *dropped and counted*, never a stall; the count
travels in the next event that gets through (``dropped_before``), so the
recorder can say how many are missing.
"""
from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time

import amqp
import orjson

from bus import naming
from bus.messaging import connect
from bus.envelope import new_event_id
from bus.settings import Settings

log = logging.getLogger("gridbus.tracing")
BUFFER = 20_000
# how often the sender looks for events: under a trickle of requests each event would
# otherwise be a message of its own, and the broker's and the recorder's cost per message,
# not per event, is what tracing would add to every request
LINGER_S = 0.05
_HOST = socket.gethostname()


class TraceEmitter:
    def __init__(self, broker_url: str, buffer: int = BUFFER):
        self.broker_url = broker_url
        self.limit = buffer
        self.buffer: collections.deque = collections.deque()
        self.dropped = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._busy = False

    def record(self, event: dict) -> None:
        if self._thread is None or self._pid != os.getpid():  # started lazily, after any fork
            self._start()
        if len(self.buffer) >= self.limit:
            with self._lock:
                self.dropped += 1
            return
        self.buffer.append(event)  # atomic; the sender thread picks it up on its next round

    def _start(self) -> None:
        self._pid = os.getpid()
        self.buffer = collections.deque()
        self._thread = threading.Thread(target=self._run, name="gridbus-trace", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 3.0) -> None:
        """Give the background thread a moment to send what is buffered (short-lived
        commands such as `dlq replay` call this at exit)."""
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._pid == os.getpid() and time.monotonic() < deadline:
            if not self.buffer and not self._busy:
                return
            time.sleep(0.02)

    def _take_dropped(self) -> int:
        with self._lock:
            n, self.dropped = self.dropped, 0
        return n

    def _run(self) -> None:
        conn = channel = None
        while True:
            if not self.buffer:
                time.sleep(LINGER_S)
                continue
            self._busy = True
            batch = []
            while self.buffer and len(batch) < 500:
                batch.append(self.buffer.popleft())
            try:
                if conn is None:
                    conn = connect(self.broker_url, "gridbus-trace-emitter")
                    channel = conn.channel()
                    channel.confirm_select()
                    channel.events["basic_nack"].add(self._on_nack)
                    channel.events["basic_ack"].add(self._on_ack)
                    self._sizes, self._tag = {}, 0
                dropped = self._take_dropped()
                if dropped:
                    batch[0] = {**batch[0], "dropped_before": dropped}
                # orjson: this thread shares the GIL with the data path; anything it cannot
                # encode (a Path, a Decimal) becomes its str, as before
                body = orjson.dumps(batch, default=str,
                                    option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)
                channel.basic_publish(amqp.Message(body, content_type="application/json", delivery_mode=2),
                                      exchange=naming.TRACE_EXCHANGE, routing_key="trace")
                self._tag += 1
                self._sizes[self._tag] = len(batch)
                # process confirms that have arrived; never wait for them
                try:
                    conn.drain_events(timeout=0)
                except (TimeoutError, BlockingIOError, socket.timeout):
                    pass
                self._busy = False
            except Exception as exc:  # broker away: count and carry on, the data path does not care
                with self._lock:
                    self.dropped += len(batch)
                log.debug("trace events dropped: %s", exc)
                try:
                    if conn:
                        conn.close()
                except Exception:
                    pass
                conn = channel = None
                self._busy = False
                time.sleep(1)

    def _settled(self, tag: int, multiple: bool) -> int:
        tags = [t for t in self._sizes if t <= tag] if multiple else [tag]
        return sum(self._sizes.pop(t, 0) for t in tags)

    def _on_ack(self, tag, multiple) -> None:
        self._settled(tag, multiple)

    def _on_nack(self, tag, multiple) -> None:
        # the bounded trace queue refused these events (recorder stopped long enough to fill it)
        refused = self._settled(tag, multiple)
        with self._lock:
            self.dropped += refused


_emitter: TraceEmitter | None = None


def emitter() -> TraceEmitter:
    global _emitter
    if _emitter is None:
        _emitter = TraceEmitter(Settings.load().broker_url)
    return _emitter


def event(kind: str, **fields) -> dict:
    return {"event_id": new_event_id(), "kind": kind, "at": time.time(), "host": _HOST,
            "pid": os.getpid(), **fields}


def flush_at_exit() -> None:
    if _emitter is not None:
        _emitter.flush()


def hook(kind: str, fields: dict) -> None:
    """The listener bus.hooks calls: every hop's event goes to the recorder."""
    emitter().record(event(kind, **fields))


def enabled() -> bool:
    return os.environ.get("GRIDBUS_TRACING", "on").lower() not in ("0", "off", "false", "no")
