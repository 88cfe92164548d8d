"""Publish with publisher confirms (py-amqp), many messages in flight, nothing unconfirmed forgotten.

Confirms are collected asynchronously (a window of unconfirmed messages) rather
than one blocking round trip per message; ``flush()`` returns only when the
broker has confirmed everything published so far, and raises BrokerError if
any message was nacked or returned.

Losing the node: the publisher keeps every message until its confirm comes, so
when the connection goes (the node died, shut down) it connects to the first
address of the setting that answers and publishes again, in order, what was not
confirmed; ``publish`` and ``flush`` carry on as if nothing happened.  A message
may so reach its queue twice (its confirm was lost with the node): receivers are
idempotent by message id.  Only when no node takes the connection within
``failover_s`` does the caller see ``BrokerUnavailable``.  A nack is the broker
saying it did not take a message (a quorum queue electing a new leader after
its node died nacks for a few seconds): those are published again too, with
backoff, and reported (``BrokerError`` from ``flush``) only once nacks of the
same messages have gone on for ``failover_s``.

A broker alarm (memory, disk) blocks publishing: the broker stops reading the
connection and says ``connection.blocked``.  By default the publisher waits as
long as that lasts (a confirm timeout does not run while blocked); with
``wait_while_blocked=False`` (the gateway, whose callers should not hang) it
drops the connection, so that nothing it published is taken later, and raises
``BrokerBlocked``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import amqp

from bus.errors import BrokerBlocked, BrokerError, BrokerUnavailable
from bus.messaging.connect import connect, reset
from bus.messaging.errors import amqp_errors
from bus.messaging.reconnect import Backoff

log = logging.getLogger("gridbus.amqp")


class ConfirmingPublisher:
    def __init__(self, broker_url: str, name: str = "gridbus-publisher", window: int = 64,
                 failover_s: float = 60.0, wait_while_blocked: bool = True):
        self.broker_url = broker_url
        self.name = name
        self.window = window
        self.failover_s = failover_s
        self.wait_while_blocked = wait_while_blocked
        self._conn: amqp.Connection | None = None
        self._channel = None
        self._next_tag = 1
        # delivery tag → (exchange, routing key, message, mandatory), until confirmed: what is
        # published again on the next connection when this one goes
        self._unconfirmed: dict[int, tuple] = {}
        self._nacked: list[tuple] = []  # to publish again after a pause (``_resend_nacked``)
        self._nacked_since = self._resend_at = 0.0
        self._resend_backoff = Backoff(first_s=0.2, cap_s=2.0)
        self._failed: list[str] = []
        self.blocked: str | None = None  # the broker's reason while it blocks this connection

    # -- connection -------------------------------------------------------
    def _open(self) -> None:
        self.blocked = None
        self._conn = connect(self.broker_url, self.name, on_blocked=self._on_blocked,
                             on_unblocked=self._on_unblocked)
        with amqp_errors("opening a confirm channel"):
            ch = self._conn.channel()
            ch.confirm_select()
            ch.events["basic_ack"].add(self._on_ack)
            ch.events["basic_nack"].add(self._on_nack)
            ch.events["basic_return"].add(self._on_return)
        self._channel = ch
        self._next_tag = 1

    def _on_blocked(self, reason: str) -> None:
        log.warning("%s: the broker blocks publishing (%s): waiting for it to clear", self.name, reason)
        self.blocked = reason or "blocked"

    def _on_unblocked(self) -> None:
        log.warning("%s: the broker takes publishes again", self.name)
        self.blocked = None

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)
        if self._nacked_since and not self._nacked:  # the broker takes messages again: a new streak next time
            self._nacked_since = 0.0
            self._resend_backoff = Backoff(first_s=0.2, cap_s=2.0)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        nacked = [t for t in self._unconfirmed if t <= tag] if multiple else [tag] if tag in self._unconfirmed else []
        if nacked and not self._nacked:
            self._nacked_since = self._nacked_since or time.monotonic()
            self._resend_at = time.monotonic() + self._resend_backoff.next_delay()
        self._nacked += [self._unconfirmed.pop(t) for t in nacked]

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        self._failed.append(f"unroutable: exchange {exchange!r} key {routing_key!r}")

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            for settled in [t for t in self._unconfirmed if t <= tag]:
                del self._unconfirmed[settled]
        else:
            self._unconfirmed.pop(tag, None)

    # -- publishing -------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any],
                headers: dict[str, Any], mandatory: bool = True) -> None:
        message = amqp.Message(body, application_headers=headers, **properties)
        if self._channel is None:
            self._open()  # every address once; a caller that finds none away decides (and says) what next
        elif self.blocked is not None and not self.wait_while_blocked:
            self._refuse_blocked()
        try:
            self._send((exchange, routing_key, message, mandatory))
        except BrokerUnavailable as exc:  # sent again with the rest of what was not confirmed
            self._unconfirmed[self._next_tag] = (exchange, routing_key, message, mandatory)
            self._next_tag += 1
            self._failover(self._reopen, exc)
        if len(self._unconfirmed) + len(self._nacked) >= self.window:
            self._wait_until(lambda: len(self._unconfirmed) + len(self._nacked) < self.window // 2)

    def _send(self, item: tuple) -> None:
        exchange, routing_key, message, mandatory = item
        with amqp_errors(f"publishing to {exchange}"):
            self._channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        self._unconfirmed[self._next_tag] = item
        self._next_tag += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every message published so far is confirmed (or nacked, or returned:
        ``BrokerError``).  ``timeout_s`` does not run while the broker blocks publishing."""
        if self._channel is not None or self._unconfirmed or self._nacked:
            self._wait_until(lambda: not self._unconfirmed and not self._nacked, timeout_s)
        if self._failed:
            failed, self._failed = self._failed, []
            raise BrokerError("; ".join(failed[:5]) + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""))

    def _wait_until(self, done, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.blocked is not None:
                if not self.wait_while_blocked:
                    self._refuse_blocked()
                deadline = time.monotonic() + timeout_s  # the clock runs again once unblocked
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"{len(self._unconfirmed)} messages not confirmed within {timeout_s}s")
            try:
                if self._nacked:  # bounded by failover_s, not by the confirm timeout
                    self._resend_nacked()
                    deadline = time.monotonic() + timeout_s
                    if done():
                        break
                    left = min(left, max(0.01, self._resend_at - time.monotonic())) if self._nacked else left
                with amqp_errors("waiting for publisher confirms"):
                    try:
                        self._conn.drain_events(timeout=min(left, 1.0))
                    except TimeoutError:
                        continue
            except BrokerUnavailable as exc:
                self._failover(self._reopen, exc)
                deadline = time.monotonic() + timeout_s

    def _refuse_blocked(self):
        reason = self.blocked
        self.abandon()  # what it holds would be taken once the alarm clears, though refused now
        raise BrokerBlocked(f"{self.name}: the broker blocks publishing ({reason})")

    def _resend_nacked(self) -> None:
        """Publish the nacked messages again once their pause is over; after ``failover_s`` of
        nacks they are reported as failed instead."""
        now = time.monotonic()
        if now - self._nacked_since > self.failover_s:
            self._failed.append(f"the broker nacked {len(self._nacked)} messages for {self.failover_s:.0f}s")
            self._nacked.clear()
            self._nacked_since = 0.0
            self._resend_backoff = Backoff(first_s=0.2, cap_s=2.0)
            return
        if now < self._resend_at:
            return
        # on a new connection: a channel whose quorum queue lost its leader may go on nacking
        # after a new leader is elected (seen for a minute on RabbitMQ 3.10), a new one does not
        log.warning("%s: the broker nacked %d messages; publishing them again on a new connection",
                    self.name, len(self._nacked))
        self._reopen()
        self._resend_at = time.monotonic() + self._resend_backoff.next_delay()

    # -- losing the node --------------------------------------------------
    def _reopen(self) -> None:
        """A new connection (the first address that answers), and on it, in their order, the
        messages not confirmed on the old one."""
        self.abandon(keep_unconfirmed=True)
        self._open()
        again, self._unconfirmed = list(self._unconfirmed.values()), {}
        again, self._nacked = again + self._nacked, []
        for item in again:
            self._send(item)
        if again:
            log.warning("%s: published %d unconfirmed messages again on a new connection", self.name, len(again))

    def _failover(self, attempt, lost: BrokerError | None = None) -> None:
        """``attempt`` until it works or ``failover_s`` has passed since the connection went."""
        deadline = time.monotonic() + self.failover_s
        backoff = Backoff(first_s=0.2, cap_s=2.0)
        while True:
            try:
                attempt()
                if lost is not None:
                    log.warning("%s: connected again after: %s", self.name, lost)
                return
            except BrokerUnavailable as exc:
                lost = lost or exc
                self.abandon(keep_unconfirmed=True)
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    self._unconfirmed.clear()
                    self._nacked.clear()
                    raise BrokerUnavailable(f"{self.name}: no broker node took the connection within "
                                            f"{self.failover_s:.0f}s: {exc}") from exc
                log.warning("%s: %s; trying the broker addresses again in %.1fs", self.name, exc, delay)
                time.sleep(delay)

    def abandon(self, keep_unconfirmed: bool = False) -> None:
        """Drop the connection without the closing handshake (a blocked broker reads nothing, a
        dead one answers nothing); what it had not sent dies with the socket."""
        conn, self._conn, self._channel, self.blocked = self._conn, None, None, None
        if not keep_unconfirmed:
            self._unconfirmed.clear()
            self._nacked.clear()
        if conn is not None:
            try:
                if conn.connected:
                    reset(conn.transport.sock)
                conn.collect()
            except Exception:  # noqa: BLE001 - a socket already gone
                pass

    def close(self) -> None:
        if self._conn is not None and self.blocked is None:
            try:
                with amqp_errors("closing"):
                    self._conn.close()
            except BrokerError:  # closing a dead connection must not hide the real error
                pass
        self.abandon()

    def __enter__(self) -> "ConfirmingPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
