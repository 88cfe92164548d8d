"""The ADMS stand-in's AMQP side: it consumes its outage queue and keeps outages by mRID.

``OutageStore`` keeps, per ``Outage.mRID``, the latest document and every message's verb and
``messageId`` in arrival order; a message whose ``messageId`` it already has is dropped and
counted as a duplicate (the bus delivers at least once).  What it cannot use (not JSON,
larger than ``max_body``, no ``Outage.mRID``, no message id) is counted as rejected and
acked: a stand-in never crashes on a message, and never gets stuck on one either.

``OutageConsumer`` is a pika consumer with manual acks (a test stand-in, not bus code) in
a background thread.  It never declares anything (the ADMS's broker user may only read its
queue): a queue that does not exist yet, a refused login or a broker that restarts is
retried with a backoff (0.2 s doubling to 5 s) until ``stop()``.  An ``amqps://`` URL is
spoken over TLS, as an ADMS of its own would configure it: the broker's certificate verified
against ``ADMS_AMQP_CA`` (unset: the system's store), its client certificate
``ADMS_AMQP_CERT``/``ADMS_AMQP_KEY`` shown when set.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Any

import orjson

log = logging.getLogger("simulators.adms")

DEFAULT_MAX_BODY = 16 * 1024 * 1024   # a feeder outage lists its meters: a few hundred KB at most
MAX_KEPT_IDS = 1_000_000              # message ids remembered for duplicates (oldest forgotten first)


class OutageStore:
    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.outages: dict[str, dict[str, Any]] = {}
            self._ids: dict[str, None] = {}   # insertion-ordered: the oldest are forgotten first
            self.counts = dict.fromkeys(("outage_messages", "duplicates", "rejected_messages"), 0)
            self.rejections: list[dict[str, str]] = []   # the last 100: why

    def _reject(self, message_id: str | None, reason: str) -> str:
        with self._lock:
            self.counts["rejected_messages"] += 1
            self.rejections.append({"messageId": message_id or "", "reason": reason[:300]})
            del self.rejections[:-100]
        return "rejected"

    def take(self, body: bytes, message_id: str | None = None) -> str:
        """One AMQP message: ``stored``, ``duplicate`` or ``rejected``; never raises on its content."""
        if len(body) > self.max_body:
            return self._reject(message_id, f"too large: {len(body)} bytes (at most {self.max_body})")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:   # not JSON, not UTF-8, nested over orjson's 1,024 levels
            return self._reject(message_id, f"not JSON: {exc}")
        outage = doc.get("Outage") if isinstance(doc, dict) else None
        mrid = outage.get("mRID") if isinstance(outage, dict) else None
        if not isinstance(mrid, str) or not mrid:
            return self._reject(message_id, "no Outage.mRID")
        doc_id = doc.get("messageId")
        message_id = doc_id if isinstance(doc_id, str) and doc_id else message_id
        if not message_id:
            return self._reject(None, f"outage {mrid[:80]}: no messageId and no AMQP message_id")
        verb = doc.get("verb") if isinstance(doc.get("verb"), str) else None
        with self._lock:
            if message_id in self._ids:
                self.counts["duplicates"] += 1
                return "duplicate"
            self._ids[message_id] = None
            if len(self._ids) > MAX_KEPT_IDS:
                del self._ids[next(iter(self._ids))]
            kept = self.outages.get(mrid)
            if kept is None:
                kept = self.outages[mrid] = {"mRID": mrid, "messages": []}
            kept["messages"].append({"verb": verb, "messageId": message_id, "receivedAt": time.time()})
            kept["verb"] = verb
            kept["open"] = verb != "closed"
            kept["Outage"] = outage
            self.counts["outage_messages"] += 1
        return "stored"

    def listing(self, only_open: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            found = [_copy(o) for o in self.outages.values() if o["open"] or not only_open]
        return sorted(found, key=lambda o: o["mRID"])

    def get(self, mrid: str) -> dict[str, Any] | None:
        with self._lock:
            kept = self.outages.get(mrid)
            return _copy(kept) if kept else None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "outages": len(self.outages),
                    "outages_open": sum(1 for o in self.outages.values() if o["open"])}


def _copy(kept: dict[str, Any]) -> dict[str, Any]:
    return {**kept, "messages": [dict(m) for m in kept["messages"]]}


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=os.environ.get("ADMS_AMQP_CA") or None)
    if os.environ.get("ADMS_AMQP_CERT"):
        context.load_cert_chain(os.environ["ADMS_AMQP_CERT"], os.environ.get("ADMS_AMQP_KEY") or None)
    return context


class OutageConsumer:
    """Consume ``queue`` at ``url`` into ``store`` in a background thread, reconnecting until stopped."""

    def __init__(self, url: str, queue: str, store: OutageStore, prefetch: int = 100,
                 name: str = "adms-stand-in") -> None:
        self.url, self.queue, self.store = url, queue, store
        self.prefetch, self.name = prefetch, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.connected = False
        self.connections = 0          # connections made (more than one: it reconnected)
        self.last_error = ""

    def start(self) -> "OutageConsumer":
        self._thread = threading.Thread(target=self._run, name=f"adms-amqp-{self.queue}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"queue": self.queue, "connected": self.connected, "connections": self.connections,
                    "last_error": self.last_error}

    def _run(self) -> None:
        import pika

        params = pika.URLParameters(self.url)
        if self.url.startswith("amqps://"):
            params.ssl_options = pika.SSLOptions(_tls_context(), params.host)
        params.client_properties = {"connection_name": self.name}
        params.heartbeat = 30
        params.connection_attempts = 1
        params.socket_timeout = 5
        delay = 0.2
        while not self._stop.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(params)
                channel = conn.channel()
                channel.basic_qos(prefetch_count=self.prefetch)
                channel.basic_consume(self.queue, self._on_message, auto_ack=False)
                with self._lock:
                    self.connected, self.connections, self.last_error = True, self.connections + 1, ""
                delay = 0.2
                log.info("consuming %s", self.queue)
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=0.2)
            except Exception as exc:  # noqa: BLE001 - any broker trouble: wait, then connect again
                with self._lock:
                    self.connected, self.last_error = False, f"{type(exc).__name__}: {exc}"[:500]
                log.warning("AMQP consumer of %s: %s; again in %.1f s", self.queue, self.last_error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with self._lock:
                    self.connected = False
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass

    def _on_message(self, channel, method, properties, body: bytes) -> None:
        try:
            outcome = self.store.take(body, getattr(properties, "message_id", None))
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the consumer; it is counted
            outcome = self.store._reject(None, f"stand-in error: {type(exc).__name__}: {exc}")
        log.debug("%s: %s", getattr(properties, "message_id", None), outcome)
        channel.basic_ack(method.delivery_tag)
