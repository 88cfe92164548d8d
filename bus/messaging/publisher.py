"""Publish with publisher confirms (py-amqp), many messages in flight, nothing unconfirmed forgotten.

Confirms are collected asynchronously (a window of unconfirmed messages) rather
than one blocking round trip per message; ``flush()`` returns only when the
broker has confirmed everything published so far, and raises BrokerError if
any message was nacked or returned.
"""
from __future__ import annotations

import time
from typing import Any

import amqp

from bus.errors import BrokerError
from bus.messaging.connect import connect
from bus.messaging.errors import amqp_errors


class ConfirmingPublisher:
    def __init__(self, broker_url: str, name: str = "gridbus-publisher", window: int = 64):
        self.broker_url = broker_url
        self.name = name
        self.window = window
        self._conn: amqp.Connection | None = None
        self._channel = None
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._failed: list[str] = []

    # -- connection -------------------------------------------------------
    def _open(self) -> None:
        self._conn = connect(self.broker_url, self.name)
        with amqp_errors("opening a confirm channel"):
            ch = self._conn.channel()
            ch.confirm_select()
            ch.events["basic_ack"].add(self._on_ack)
            ch.events["basic_nack"].add(self._on_nack)
            ch.events["basic_return"].add(self._on_return)
        self._channel = ch
        self._next_tag = 1
        self._unconfirmed.clear()

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._failed.append(f"broker nacked delivery tag {tag}")
        self._settle(tag, multiple)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        self._failed.append(f"unroutable: exchange {exchange!r} key {routing_key!r}")

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    # -- publishing -------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any],
                headers: dict[str, Any], mandatory: bool = True) -> None:
        if self._channel is None:
            self._open()
        message = amqp.Message(body, application_headers=headers, **properties)
        with amqp_errors(f"publishing to {exchange}"):
            self._channel.basic_publish(message, exchange=exchange, routing_key=routing_key,
                                        mandatory=mandatory)
        self._unconfirmed.add(self._next_tag)
        self._next_tag += 1
        if len(self._unconfirmed) >= self.window:
            self._wait_until(lambda: len(self._unconfirmed) < self.window // 2)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every message published so far is confirmed."""
        if self._channel is not None:
            self._wait_until(lambda: not self._unconfirmed, timeout_s)
        if self._failed:
            failed, self._failed = self._failed, []
            raise BrokerError("; ".join(failed[:5]) + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""))

    def _wait_until(self, done, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with amqp_errors("waiting for publisher confirms"):
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError(f"{len(self._unconfirmed)} messages not confirmed within {timeout_s}s")
                try:
                    self._conn.drain_events(timeout=min(left, 1.0))
                except TimeoutError:
                    continue

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead connection must not hide the real error
                pass
        self._conn = self._channel = None

    def __enter__(self) -> "ConfirmingPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
