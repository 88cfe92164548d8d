"""Epoch-time headers arrive exactly as sent, whichever client publishes or reads them."""
from __future__ import annotations

import asyncio
import time

import amqp

from bus import aio
from bus.messaging import connect, pika_connect


def test_an_epoch_time_header_published_by_aio_pika_arrives_to_the_microsecond(bus_env):
    # Given a queue on a real broker and a command's expiry as gridbus puts it in a header
    url = bus_env["GRIDBUS_BROKER_URL"]
    expires = time.time() + 900.123456
    reader = connect(url, "test-headers")  # py-amqp: what the Celery worker reads with
    channel = reader.channel()
    channel.queue_declare("headers-check", durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})

    async def publish_and_read_back():
        connection = await aio.connect(url, "test-headers")
        try:
            publisher = aio.ConfirmedPublisher(await connection.channel(publisher_confirms=True,
                                                                        on_return_raises=True))
            await publisher.publish("", "headers-check", b"{}", {"content_type": "application/json"},
                                    {"gridbus-expires-at": expires, "gridbus-attempt": 1})
            await publisher.publish("", "headers-check", b"{}", {"content_type": "application/json"},
                                    {"gridbus-expires-at": expires})
            queue = await (await connection.channel()).get_queue("headers-check", ensure=True)
            message = await queue.get(timeout=5)
            await message.ack()
            return message.headers
        finally:
            await connection.close()

    # When the event loop's publisher sends it (twice: one read back by aio-pika, one by py-amqp)
    on_the_loop = asyncio.run(publish_and_read_back())
    message = channel.basic_get("headers-check", no_ack=True)
    reader.close()
    # Then both read the same instant, not one rounded to 128 s (a 32-bit float)
    assert abs(on_the_loop["gridbus-expires-at"] - expires) < 1e-6
    assert on_the_loop["gridbus-attempt"] == 1
    assert abs(message.headers["gridbus-expires-at"] - expires) < 1e-6


def test_a_failure_time_header_read_by_the_pika_consumers_keeps_its_fraction_of_a_second(bus_env):
    # Given a dead letter's failure time as the worker writes it (py-amqp, an AMQP double)
    url = bus_env["GRIDBUS_BROKER_URL"]
    failed_at = time.time() + 0.654321
    writer = connect(url, "test-headers")
    channel = writer.channel()
    channel.queue_declare("pika-headers-check", durable=True, auto_delete=False,
                          arguments={"x-queue-type": "quorum"})
    channel.basic_publish(amqp.Message(b"{}", application_headers={"gridbus-dl-last-failure": failed_at,
                                                                   "nested": {"at": failed_at}}),
                          routing_key="pika-headers-check")
    writer.close()
    # When a pika consumer (the dead-letter collector, the AMQP ingress) reads it
    reader = pika_connect(url, "test-headers")
    try:
        _method, props, _body = reader.channel().basic_get("pika-headers-check", auto_ack=True)
    finally:
        reader.close()
    # Then it is the same instant, not cut to the whole second
    assert abs(props.headers["gridbus-dl-last-failure"] - failed_at) < 1e-6
    assert abs(props.headers["nested"]["at"] - failed_at) < 1e-6
