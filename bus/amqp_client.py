"""The one place where py-amqp's exceptions become BrokerError."""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any, Callable, Iterator

import amqp
from kombu.utils.url import parse_url

from bus.errors import BrokerError

log = logging.getLogger("gridbus.amqp")
RECONNECT_S = 2.0


@contextlib.contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except (amqp.exceptions.AMQPError, OSError, socket.timeout) as exc:
        raise BrokerError(f"{doing}: {exc.__class__.__name__}: {exc}") from exc


def connect(url: str, name: str = "gridbus") -> amqp.Connection:
    parts = parse_url(url)
    host = f"{parts['hostname'] or '127.0.0.1'}:{parts['port'] or 5672}"
    with broker_errors(f"connecting to {host}"):
        conn = amqp.Connection(host=host, userid=parts["userid"] or "guest",
                               password=parts["password"] or "guest",
                               virtual_host=parts["virtual_host"] or "/",
                               client_properties={"connection_name": name},
                               heartbeat=0, connect_timeout=10)
        conn.connect()
        return conn


@contextlib.contextmanager
def pika_errors(doing: str) -> Iterator[None]:
    import pika.exceptions
    try:
        yield
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerError(f"{doing}: {exc.__class__.__name__}: {exc}") from exc


def pika_connect(url: str, name: str = "gridbus"):
    """A pika BlockingConnection for the same URL (kombu's '//' means vhost '/').

    pika reads a stream of deliveries about twice as fast as py-amqp here, so
    bulk consumers (the dead-letter collector) use it."""
    import pika

    precise_pika_doubles()
    parts = parse_url(url)
    params = pika.ConnectionParameters(
        host=parts["hostname"] or "127.0.0.1", port=parts["port"] or 5672,
        virtual_host=parts["virtual_host"] or "/",
        credentials=pika.PlainCredentials(parts["userid"] or "guest", parts["password"] or "guest"),
        client_properties={"connection_name": name}, heartbeat=0, blocked_connection_timeout=60)
    with pika_errors(f"connecting to {params.host}:{params.port}"):
        return pika.BlockingConnection(params)


def precise_pika_doubles() -> None:
    """Make pika read an AMQP double header ('d') as the float it is.

    pika decodes a double as ``long(value)``: a failure time such as
    ``gridbus-dl-last-failure`` arrived cut to the whole second, so the
    dead-letter store showed times a second off and two failures of one message
    within a second looked like one.  py-amqp and aio-pika read it exactly.
    Patched once, at the boundary, before the first connection."""
    import struct

    from pika import data

    if getattr(data.decode_value, "gridbus_doubles", False):
        return
    original = data.decode_value

    def decode_value(encoded: bytes, offset: int):
        if encoded[offset:offset + 1] == b"d":
            return struct.unpack_from(">d", encoded, offset + 1)[0], offset + 9
        return original(encoded, offset)

    decode_value.gridbus_doubles = True
    data.decode_value = decode_value  # decode_table looks it up here, for nested tables too


def until_stopped(what: str, attempt: Callable[[], Any], stop: threading.Event,
                  after_failure: Callable[[], None] | None = None, delay_s: float = RECONNECT_S) -> None:
    """Run ``attempt`` (connect, then consume until ``stop``) again and again until ``stop``.

    A broker restart ends an attempt with an error; the next one reconnects ``delay_s``
    later, and the messages wait in their queues meanwhile.  ``after_failure`` lets go of
    what the failed attempt left half-open (a publisher's connection)."""
    while not stop.is_set():
        try:
            attempt()
        except Exception as exc:  # noqa: BLE001 - whatever it was, the next attempt starts clean
            log.warning("%s: %s; reconnecting in %gs", what, exc, delay_s)
            if after_failure is not None:
                after_failure()
            stop.wait(delay_s)
