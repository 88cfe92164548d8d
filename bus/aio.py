"""Run an event-loop process (the request worker, the gateway) on uvloop.

uvloop is libuv under asyncio's API: the loop's own work per socket event
(the selector, transports, callbacks) is C instead of Python, and a round
trip through gateway and worker crosses about a dozen socket events.  The
benchmark's asyncio baseline runs on it too, so the comparison stays fair.
"""
from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> Any:
    # what was made while starting (modules, routes, schemas) lives as long as the process:
    # kept out of the cyclic collector's full passes, which otherwise walk it all again and
    # again, in pauses every request waiting on this loop shares
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # a platform without a wheel (Windows): the standard loop does the same job
        return asyncio.run(main)
    return uvloop.run(main)


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
    """A robust aio-pika connection: after a broker restart it reconnects (after 1 s) and
    consumes again; what was in flight and unacked is redelivered by the broker."""
    import aio_pika

    precise_float_headers()

    return await aio_pika.connect_robust(broker_url, client_properties={"connection_name": name},
                                         reconnect_interval=1)


class ConfirmedPublisher:
    """Publish a message as gridbus builds it (exchange, routing key, body, AMQP properties,
    headers: ``task_message.build``, ``dispatch``, ``task.reply_message``) on an event loop:
    mandatory, and returned only once the broker confirmed it (or raising why not)."""

    def __init__(self, channel):
        self.channel = channel  # opened with publisher_confirms=True, on_return_raises=True
        self._exchanges: dict = {}

    async def publish(self, exchange: str, key: str, body: bytes, props: dict, headers: dict) -> None:
        import aio_pika

        target = self._exchanges.get(exchange)
        if target is None:
            target = self._exchanges[exchange] = (self.channel.default_exchange if not exchange else
                                                  await self.channel.get_exchange(exchange, ensure=False))
        await target.publish(aio_pika.Message(body, headers=headers, **props), routing_key=key, mandatory=True)
