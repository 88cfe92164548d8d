"""aio-pika for the event-loop processes (the gateway's request loop, the asyncio worker).

The connection is aio-pika's robust one (channels, qos and consumers come back
by themselves after a reconnect), made to move across the addresses of the
setting: aio-pika reconnects only to the URL it first reached, so when that
node dies it would knock on its door for ever.  aio-pika hands every end of a
connection, a failed attempt as much as a lost connection, to
``_on_connection_close``; ``AddressRotatingConnection`` takes the next address
there, so each reconnect attempt tries the next node (aio-pika issues #104,
#141 ask for this; PR #680 proposed the same, not merged).

Broker alarms: a blocked connection (``connection.blocked``) takes no publish
until the alarm clears.  ``ConfirmedPublisher`` with ``timeout_s`` refuses at
once (``BrokerBlocked``, nothing handed over) while the connection is known to be
blocked; the publish that meets the alarm is given up at once and reported
``BrokerUnconfirmed``: the broker may take it when the alarm clears.  The connection
is kept: resetting it now and then left aio-pika's robust connection on a dead
transport still marked blocked, refusing every request after the alarm.
"""
from __future__ import annotations

import asyncio
import logging

from bus.errors import BrokerBlocked, BrokerError, BrokerUnavailable, BrokerUnconfirmed
from bus.messaging import tls as broker_tls
from bus.messaging.addresses import broker_urls
from bus.messaging.errors import aio_errors

log = logging.getLogger("gridbus.amqp")
FAILOVER_S = 60.0  # how long a publish without a timeout waits for a node to take the connection back
RETRY_PAUSE_S = 0.2
NEW_CHANNEL_TIMEOUT_S = 2.0
BLOCKED_POLL_S = 0.1  # how soon a publish waiting for its confirm notices connection.blocked


def precise_float_headers() -> None:
    """Make aio-pika send a float header as an AMQP double ('d'), as py-amqp and pika do.

    pamqp (aio-pika's codec) writes a Python float as a 32-bit 'f': an epoch time such as
    ``gridbus-expires-at`` then arrives rounded to 128 s, so a command could run up to a
    minute after its expiry and trace timings were off by as much.  RabbitMQ and every
    client gridbus uses read 'd'.  Patched once, at the boundary, before the first publish."""
    from pamqp import encode

    if getattr(encode.encode_table_value, "gridbus_doubles", False):
        return
    original = encode.encode_table_value

    def encode_table_value(value):
        if isinstance(value, float):
            return b"d" + encode.double(value)
        return original(value)

    encode_table_value.gridbus_doubles = True
    encode.encode_table_value = encode_table_value


def next_address(urls: list[str], at: int) -> int:
    """Where the next connection attempt goes after one at ``at`` ended: the next address, round."""
    return (at + 1) % len(urls)


def _rotating_connection_class():
    import aio_pika
    from yarl import URL

    class AddressRotatingConnection(aio_pika.RobustConnection):
        """A robust connection whose every reconnect attempt goes to the next address."""

        def __init__(self, urls: list[str], at: int, **kwargs):
            self.urls, self.at = urls, at
            super().__init__(URL(urls[at]), **kwargs)

        async def _on_connection_close(self, closing: asyncio.Future) -> None:
            # called for a lost connection and for a failed attempt alike (UnderlayConnection.connect)
            self.at = next_address(self.urls, self.at)
            self.url = URL(self.urls[self.at])
            await super()._on_connection_close(closing)

    return AddressRotatingConnection


async def connect(broker_url: str, name: str):
    """A robust aio-pika connection to the first broker of the setting that answers.  When
    it is lost it reconnects (an attempt a second, each to the next address) and consumes
    again; what was in flight and unacked is redelivered by the broker."""
    precise_float_headers()
    tls = broker_tls.for_broker(broker_url)
    urls = [_with_tls_login(url, tls) for url in broker_urls(broker_url)]
    # one context for every address: aiormq hands each URL's host to the handshake as the name
    # the certificate must carry, so a rotation to another node checks that node's name
    secure = {"ssl_context": broker_tls.client_context(tls)} if tls else {}
    connection_class = _rotating_connection_class()
    failures, away = [], False
    for at, url in enumerate(urls):
        connection = connection_class(urls, at, client_properties={"connection_name": name}, reconnect_interval=1,
                                      **secure)
        try:
            async with aio_errors(f"connecting to {url.rpartition('@')[2]}"):
                await connection.connect()
            return connection
        except BrokerError as exc:
            failures.append(str(exc))
            away = away or isinstance(exc, BrokerUnavailable)
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - an attempt that never connected has little to close
                pass
    raise (BrokerUnavailable if away else BrokerError)("; ".join(failures))


def _with_tls_login(url: str, tls: broker_tls.TlsSettings | None) -> str:
    """aiormq chooses its SASL mechanism from the URL's ``auth`` query parameter."""
    if not tls or not tls.external:
        return url
    return f"{url}{'&' if '?' in url else '?'}auth=external"


def _nacked(exc: BaseException) -> bool:
    import aio_pika.exceptions

    return isinstance(exc.__cause__, aio_pika.exceptions.DeliveryError)


def _refused(exc: BaseException) -> bool:
    """Whether the last attempt ended in the broker's own "no" (a nack or a return): it did not
    take the message.  A lost connection or a timeout (a blocked connection's included) says nothing
    of whether an earlier hand-over was taken."""
    import aio_pika.exceptions

    seen = exc
    while seen is not None:
        if isinstance(seen, aio_pika.exceptions.DeliveryError):
            return True
        seen = seen.__cause__
    return False


def blocked(connection) -> bool:
    """Whether the broker blocks this connection's publishing (a memory or disk alarm) as far
    as the connection knows: it learns it from the broker's ``connection.blocked``, sent the
    first time it publishes during the alarm.  aiormq keeps it only as the event its ``ready()``
    waits on (private, read here and nowhere else; a version without it reads as not blocked)."""
    transport = getattr(connection, "transport", None)
    underlying = getattr(transport, "connection", None)
    unblocked = getattr(underlying, "_Connection__connection_unblocked", None)
    return unblocked is not None and underlying.connected.is_set() and not unblocked.is_set()


class ConfirmedPublisher:
    """Publish a message as gridbus builds it (exchange, routing key, body, AMQP properties,
    headers: ``task_message.build``, ``dispatch``, ``task.reply_message``) on an event loop:
    mandatory, and returned only once the broker confirmed it, else ``BrokerError``.

    Without ``timeout_s`` a publish waits as long as the broker blocks publishing.  With it
    (the gateway, whose callers must not hang) a publish on a connection known to be blocked
    is refused at once (``BrokerBlocked``), and one that meets the alarm is given up at once,
    ``BrokerUnconfirmed`` (handed over: the broker may take it when the alarm clears)."""

    def __init__(self, channel, connection=None, timeout_s: float | None = None):
        self.channel = channel  # opened with publisher_confirms=True, on_return_raises=True
        self.connection, self.timeout_s = connection, timeout_s
        self._exchanges: dict = {}

    async def publish(self, exchange: str, key: str, body: bytes, props: dict, headers: dict) -> None:
        """Returns once the broker confirmed the message.  Raises ``BrokerBlocked`` or another
        ``BrokerError`` when it was never handed over or the broker refused it (a nack, a return),
        and ``BrokerUnconfirmed`` when some attempt handed it over and its fate is unknown."""
        handed = [False]  # set by an attempt that gave the message to the connection
        try:
            await self._publish(exchange, key, body, props, headers, handed)
        except BrokerError as exc:
            if handed[0] and not _refused(exc):
                raise BrokerUnconfirmed(f"not confirmed, may have been taken: {exc}") from exc
            raise

    async def _publish(self, exchange: str, key: str, body: bytes, props: dict, headers: dict,
                       handed: list[bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout_s or FAILOVER_S)
        while True:
            if self.timeout_s is not None and self.connection is not None and blocked(self.connection):
                raise BrokerBlocked("the broker blocks publishing (a memory or disk alarm)")
            try:
                await self._publish_once(exchange, key, body, props, headers,
                                         None if self.timeout_s is None else max(0.1, deadline - loop.time()),
                                         handed)
                return
            except BrokerUnavailable as exc:
                # the connection went, or the broker nacked: once the robust connection is back (on
                # another node), the message goes again; it may so arrive twice, receivers are
                # idempotent by message id
                if self.connection is None or loop.time() + RETRY_PAUSE_S >= deadline:
                    raise
                await asyncio.sleep(RETRY_PAUSE_S)
                if _nacked(exc) or (self.connection.connected.is_set() and self.channel.is_closed):
                    await self._new_channel()
                try:
                    await asyncio.wait_for(self.connection.connected.wait(), max(0.01, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise BrokerUnavailable("no broker node took the connection back in time") from exc
            except BrokerError:
                if self.connection is not None and blocked(self.connection):
                    # the connection is kept: resetting it (to keep the broker from taking what it
                    # holds once the alarm clears) now and then left aio-pika's robust connection on
                    # a dead transport still marked blocked, every request refused and no reply
                    # consumed after the alarm (seen in CI).  What it holds may be taken: the caller
                    # hears BrokerUnconfirmed (a command stays "sent")
                    raise BrokerBlocked("the broker blocks publishing (a memory or disk alarm)") from None
                raise

    async def renew_channel(self) -> None:
        """A new publishing channel (after a reconnect whose restored channel cannot be trusted)."""
        await self._new_channel()

    async def _new_channel(self) -> None:
        """A channel whose quorum queue lost its leader may go on nacking after a new leader is
        elected (seen for a minute on RabbitMQ 3.10); a new channel takes messages at once."""
        old, self._exchanges = self.channel, {}
        try:
            async with aio_errors("opening a new publishing channel"):
                self.channel = await asyncio.wait_for(
                    self.connection.channel(publisher_confirms=True, on_return_raises=True), NEW_CHANNEL_TIMEOUT_S)
        except BrokerError:
            return  # the connection is going too: the next attempt waits for it
        try:
            await asyncio.wait_for(old.close(), 1)
        except Exception:  # noqa: BLE001 - it is let go either way
            pass

    async def _publish_once(self, exchange: str, key: str, body: bytes, props: dict, headers: dict,
                            timeout_s: float | None, handed: list[bool]) -> None:
        import aio_pika

        async with aio_errors(f"publishing to {exchange or 'the default exchange'}"):
            target = self._exchanges.get(exchange)
            if target is None:
                target = self._exchanges[exchange] = (self.channel.default_exchange if not exchange else
                                                      await self.channel.get_exchange(exchange, ensure=False))
            publishing = asyncio.ensure_future(target.publish(aio_pika.Message(body, headers=headers, **props),
                                                              routing_key=key, mandatory=True))
            handed[0] = True
            try:
                await self._confirmed(publishing, timeout_s)
            finally:
                if not publishing.done():
                    publishing.cancel()

    async def _confirmed(self, publishing: asyncio.Future, timeout_s: float | None) -> None:
        """The publish's confirm; with ``timeout_s``, a ``TimeoutError`` after it, or as soon as
        the broker says it blocks the connection (it does on the publish that meets an alarm)."""
        if timeout_s is None:
            await publishing
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not publishing.done():
            left = deadline - loop.time()
            if left <= 0 or (self.connection is not None and blocked(self.connection)):
                raise asyncio.TimeoutError()
            await asyncio.wait((publishing,), timeout=min(left, BLOCKED_POLL_S))
        publishing.result()

