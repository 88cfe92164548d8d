"""Connections to the first broker of the setting that answers (``addresses``).

py-amqp for publishing (Celery's kombu needs it anyway) and pika for the batch
consumer (docs/messaging.md says why, with the measurement).  Each address is
tried in turn; ``BrokerError`` only when none took the connection.
"""
from __future__ import annotations

import logging
import socket
import struct
from typing import Callable, TypeVar

from bus.errors import BrokerError, BrokerUnavailable
from bus.messaging import tls as broker_tls
from bus.messaging.addresses import BrokerAddress, broker_addresses
from bus.messaging.errors import amqp_errors, pika_errors

log = logging.getLogger("gridbus.amqp")
CONNECT_TIMEOUT_S = 10
T = TypeVar("T")


def first_answering(broker_url: str, open_one: Callable[[BrokerAddress], T],
                    tls: broker_tls.TlsSettings | None = None) -> T:
    """``open_one`` on each address in turn; the first connection made, else ``BrokerError``
    naming why each address failed: ``BrokerUnavailable`` when a node was away (so trying
    again later may succeed), a plain ``BrokerError`` when every node refused (bad login, vhost)."""
    failures, away = [], False
    for address in broker_addresses(broker_url):
        try:
            return open_one(address)
        except BrokerError as exc:
            failures.append(str(exc) + _hint(address, exc, tls))
            away = away or isinstance(exc, BrokerUnavailable)
            log.debug("%s", exc)
    raise (BrokerUnavailable if away else BrokerError)("; ".join(failures))


PLAIN_TO_TLS_HINT = " (a port that speaks TLS only resets a plain connection: is the URL to be amqps://?)"
NO_CLIENT_CERT_HINT = (" (a broker that requires a client certificate ends the handshake so: set GRIDBUS_TLS_CERT "
                       "and GRIDBUS_TLS_KEY)")


def _hint(address: BrokerAddress, exc: BaseException, tls: broker_tls.TlsSettings | None) -> str:
    """What a connection ended while it was being opened most likely means.  Both stay a lost
    connection (a node going away ends one the same way), with the likelier cause named."""
    seen, reset, eof = exc, False, False
    while seen is not None:
        text = f"{seen.__class__.__name__}: {seen}"
        reset = reset or isinstance(seen, ConnectionResetError) or "ConnectionResetError" in text
        eof = eof or "SSLEOFError" in text or "EOF occurred in violation of protocol" in text
        seen = seen.__cause__
    if not address.tls and reset:
        return PLAIN_TO_TLS_HINT
    if address.tls and (reset or eof) and tls is not None and not tls.cert:
        return NO_CLIENT_CERT_HINT
    return ""


def connect(broker_url: str, name: str = "gridbus", on_blocked=None, on_unblocked=None):
    """A py-amqp connection (heartbeats off: a blocked publisher must not lose it).
    ``on_blocked(reason)`` and ``on_unblocked()``: the broker's ``connection.blocked`` and
    ``unblocked`` (a memory or disk alarm), seen while the connection is read.  ``amqps://``
    addresses over TLS (``bus.messaging.tls``)."""
    import amqp

    tls = broker_tls.for_broker(broker_url)

    def open_one(address: BrokerAddress) -> amqp.Connection:
        with amqp_errors(f"connecting to {address}"):
            secure = {"ssl": broker_tls.amqp_ssl_options(tls, address.host),
                      "login_method": tls.login_method} if tls else {}
            conn = amqp.Connection(host=f"{address.host}:{address.port}", userid=address.userid,
                                   password=address.password, virtual_host=address.virtual_host,
                                   client_properties={"connection_name": name},
                                   heartbeat=0, connect_timeout=CONNECT_TIMEOUT_S,
                                   on_blocked=on_blocked, on_unblocked=on_unblocked, **secure)
            conn.connect()
            return conn

    return first_answering(broker_url, open_one, tls)


def pika_connect(broker_url: str, name: str = "gridbus"):
    """A pika BlockingConnection to the first broker that answers (``amqps://`` over TLS)."""
    import pika
    import pika.credentials

    precise_pika_doubles()
    tls = broker_tls.for_broker(broker_url)

    def open_one(address: BrokerAddress) -> pika.BlockingConnection:
        secure = {"ssl_options": pika.SSLOptions(broker_tls.client_context(tls), address.host)} if tls else {}
        credentials = (pika.credentials.ExternalCredentials() if tls and tls.external else
                       pika.PlainCredentials(address.userid, address.password))
        params = pika.ConnectionParameters(
            host=address.host, port=address.port, virtual_host=address.virtual_host, credentials=credentials,
            client_properties={"connection_name": name}, heartbeat=0, blocked_connection_timeout=60,
            socket_timeout=CONNECT_TIMEOUT_S, connection_attempts=1, **secure)
        with pika_errors(f"connecting to {address}"):
            return pika.BlockingConnection(params)

    return first_answering(broker_url, open_one, tls)


def reset(sock) -> None:
    """Make the next close of ``sock`` a reset (RST, SO_LINGER 0), not an orderly close: what
    it had sent and the broker had not read yet is then thrown away, not read later.  For a
    connection a broker alarm blocked, whose messages were refused to their callers."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # already closed
        pass


def precise_pika_doubles() -> None:
    """Make pika read an AMQP double header ('d') as the float it is.

    pika decodes a double as ``long(value)``: a failure time such as
    ``gridbus-dl-last-failure`` arrived cut to the whole second, so the
    dead-letter store showed times a second off and two failures of one message
    within a second looked like one.  py-amqp and aio-pika read it exactly.
    Patched once, at the boundary, before the first connection."""
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
