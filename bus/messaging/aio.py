"""aio-pika for the event-loop processes (the gateway's request loop, the asyncio worker)."""
from __future__ import annotations

import logging

from bus.errors import BrokerError
from bus.messaging.addresses import broker_urls
from bus.messaging.errors import aio_errors

log = logging.getLogger("gridbus.amqp")


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


async def connect(broker_url: str, name: str):
    """A robust aio-pika connection to the first broker of the setting that answers: after
    a broker restart it reconnects (after 1 s) to that broker and consumes again; what was
    in flight and unacked is redelivered by the broker."""
    import aio_pika

    precise_float_headers()
    failures = []
    for url in broker_urls(broker_url):
        try:
            async with aio_errors(f"connecting to {url.rpartition('@')[2]}"):
                return await aio_pika.connect_robust(url, client_properties={"connection_name": name},
                                                     reconnect_interval=1)
        except BrokerError as exc:
            failures.append(str(exc))
    raise BrokerError("; ".join(failures))


class ConfirmedPublisher:
    """Publish a message as gridbus builds it (exchange, routing key, body, AMQP properties,
    headers: ``task_message.build``, ``dispatch``, ``task.reply_message``) on an event loop:
    mandatory, and returned only once the broker confirmed it, else ``BrokerError``."""

    def __init__(self, channel):
        self.channel = channel  # opened with publisher_confirms=True, on_return_raises=True
        self._exchanges: dict = {}

    async def publish(self, exchange: str, key: str, body: bytes, props: dict, headers: dict) -> None:
        import aio_pika

        async with aio_errors(f"publishing to {exchange or 'the default exchange'}"):
            target = self._exchanges.get(exchange)
            if target is None:
                target = self._exchanges[exchange] = (self.channel.default_exchange if not exchange else
                                                      await self.channel.get_exchange(exchange, ensure=False))
            await target.publish(aio_pika.Message(body, headers=headers, **props), routing_key=key,
                                 mandatory=True)
