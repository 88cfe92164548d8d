"""An asyncio baseline for `gridbus bench rpc`: the same round trip as rpc_pika, without threads.

    python -m gridbus_dev.bench.rpc_async front PORT URL REQUEST_QUEUE REPLY_QUEUE
    python -m gridbus_dev.bench.rpc_async worker URL REQUEST_QUEUE HES_A_URL HES_B_URL

The same guarantees as the pika baseline (persistent messages confirmed by
the broker, quorum queues, manual acks) on one event loop per process:
aiohttp's server (its HTTP parser is C) and client, aio-pika for AMQP.  It
answers one question: is the 200/s target out of reach on this machine for
any Python design, or only for a thread-per-request one?
"""
from __future__ import annotations

import asyncio
import json
import sys
import uuid

import aio_pika
import aiohttp
from aiohttp import web

from bus import aio
from gridbus_dev.bench.rpc_pika import hes_of

QUORUM = {"x-queue-type": "quorum"}


async def front(port: int, url: str, request_queue: str, reply_queue: str) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(request_queue, durable=True, arguments=QUORUM)
    replies = await channel.declare_queue(reply_queue, durable=True, arguments=QUORUM)
    waiting: dict[str, asyncio.Future] = {}

    async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = waiting.get(message.correlation_id)
        if future is not None and not future.done():
            future.set_result(message.body)
        await message.ack()

    await replies.consume(on_reply)

    async def rpc(request: web.Request) -> web.Response:
        body = await request.read()
        cid = uuid.uuid4().hex
        future = waiting[cid] = asyncio.get_running_loop().create_future()
        try:
            await channel.default_exchange.publish(aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json",
                correlation_id=cid, reply_to=reply_queue), routing_key=request_queue)
            answer = await asyncio.wait_for(future, 10)
        except asyncio.TimeoutError:
            return web.Response(status=504, text="timeout")
        finally:
            waiting.pop(cid, None)
        return web.Response(body=answer, content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/rpc", rpc), web.get("/health", health)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def worker(url: str, request_queue: str, hes_a: str, hes_b: str) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=64)
    queue = await channel.declare_queue(request_queue, durable=True, arguments=QUORUM)
    session = aiohttp.ClientSession()

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        meter = json.loads(message.body)["Request"]["meters"][0]
        hes = hes_a if hes_of(meter) == "hes-a" else hes_b
        async with session.post(f"{hes}/requests/meter-readings", data=message.body,
                                headers={"Content-Type": "application/json"}) as answer:
            body = await answer.read()
        await channel.default_exchange.publish(aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json",
            correlation_id=message.correlation_id), routing_key=message.reply_to)
        await message.ack()

    await queue.consume(on_request)
    await asyncio.Event().wait()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "front":
        aio.run(front(int(args[0]), *args[1:4]))
    elif command == "worker":
        aio.run(worker(*args[:4]))
    else:
        sys.exit(f"unknown command {command!r}: front or worker")
