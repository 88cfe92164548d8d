"""`gridbus worker --pool asyncio`: request-response routes answered on one event loop.

A request spends nearly all its time waiting on its destination (an HES, the
MDMS).  In Celery's thread pool each waiting request holds a thread; at 200
requests/s on two cores the threads of the gateway and the worker queued for
the GIL and every stage of a round trip slowed down together (docs/benchmarks.md, "bench
rpc").  Here one loop waits on all of them: aio-pika consumes the route
queues, the destination is asked with aiohttp (a connector's ``request_async``),
and the reply is published with a publisher confirm.

The guarantees are the Celery worker's, and so is the code of every outcome but
the common one:

- a message is acked only after its outcome is confirmed by the broker; a
  worker killed at any point leaves it in its quorum queue, whose delivery
  limit dead-letters a message that keeps killing its worker;
- retries, dead letters, expired commands and failed replies run
  ``bus.worker.task`` in a thread: they are rare, and one copy of that logic is
  easier to trust than two;
- a route whose destinations do not answer requests (the reply-callbacks route)
  is handled entirely by ``bus.worker.task.handle`` in a thread.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika

from bus import aio, naming, registry
from bus.deadletters import headers as dl
from bus.envelope import Envelope
from bus.errors import BrokerError, GridbusError
from bus.routes.model import Route
from bus.worker import pipeline, task, undecodable

log = logging.getLogger("gridbus.worker")
THREADS = 32  # for the sync paths; a callback POST may wait its whole timeout


class BadMessage(GridbusError):
    """A message on a route queue that is not a gridbus route message."""


def decoded(route: Route, message: aio_pika.abc.AbstractIncomingMessage) -> tuple[Envelope, Any]:
    try:
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in (message.headers or {}).items()}
        envelope = Envelope.from_headers(headers.get("id") or message.message_id, headers, message.reply_to)
        if getattr(message, "redelivered", False):
            envelope.extra[naming.H_REDELIVERED] = True
        body = undecodable.loads(message.body)  # the depth checked before anything is built
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadMessage(f"route {route.id}: not a route message ({exc.__class__.__name__}: {exc})") from exc
    reason = undecodable.undecodable(body[0][0])
    if reason is not None:
        raise BadMessage(f"route {route.id}: {reason}")
    return envelope, body[0][0]


class LoopWorker:
    def __init__(self, routes: list[Route], broker_url: str, prefetch: int = 64):
        self.routes, self.broker_url, self.prefetch = routes, broker_url, prefetch
        self.asks = {r.id: r.method == "request-response" and pipeline.asks_only(r) for r in routes}
        self._tasks: set[asyncio.Task] = set()
        self.publisher: aio.ConfirmedPublisher | None = None

    async def run(self, stop: asyncio.Event) -> None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(THREADS, thread_name_prefix="gridbus-sync"))
        connection = await aio.connect(self.broker_url, "gridbus-worker-asyncio")
        try:
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=self.prefetch)
            # with the connection: after a lost node or a nack it publishes again, on a new channel
            self.publisher = aio.ConfirmedPublisher(
                await connection.channel(publisher_confirms=True, on_return_raises=True), connection)
            for route in self.routes:
                queue = await consuming.get_queue(route.queue_name, ensure=True)
                await queue.consume(functools.partial(self.on_message, route))
                log.info("consuming %s (%s)", route.queue_name,
                         "event loop" if self.asks[route.id] else "threads")
            await stop.wait()
            if self._tasks:  # what was taken is finished (and acked) before the connection goes
                await asyncio.wait(self._tasks, timeout=30)
        finally:
            await connection.close()
            for connector in {registry.connector(d.connector) for r in self.routes for d in r.destinations}:
                if hasattr(connector, "close_async"):
                    await connector.close_async()

    async def on_message(self, route: Route, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        job = asyncio.create_task(self._settle(route, message))
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    async def _settle(self, route: Route, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            envelope, payload = decoded(route, message)
        except BadMessage as exc:
            # dead-lettered as it came, with the reason; if even that fails, the queue's
            # dead-letter exchange keeps it, with the broker's x-death record
            log.error("%s; dead-lettered", exc)
            try:
                await asyncio.to_thread(task.dead_letter_raw, message.routing_key,
                                        {**(message.headers or {}), "gridbus-route": route.id},
                                        {"message_id": message.message_id, "correlation_id": message.correlation_id,
                                         "content_type": message.content_type}, message.body, str(exc)[:500])
            except Exception as dl_error:  # noqa: BLE001 - the broker's dead-lettering is the fallback
                log.error("not dead-lettered by the worker (%s); rejected to the dead-letter exchange", dl_error)
                await _quietly(message.reject(requeue=False))
                return
            await _quietly(message.ack())
            return
        try:
            if self.asks[route.id] and envelope.reply_to:
                await self.answer(route, envelope, payload)
            else:
                await asyncio.to_thread(task.handle, route, envelope, payload)
        except Exception as exc:
            # the outcome (reply, retry or dead letter) was not confirmed: back to its queue,
            # where the delivery limit bounds how often this repeats
            log.error("route %s message %s: %s; returned to the queue", route.id, envelope.message_id,
                      exc if isinstance(exc, BrokerError) else repr(exc))
            await _quietly(message.nack(requeue=True))
            return
        await _quietly(message.ack())

    async def answer(self, route: Route, envelope: Envelope, payload: Any) -> None:
        """Ask the destination and publish its reply; anything but a plain reply is settled by
        the Celery worker's code, in a thread."""
        if envelope.extra.get(naming.H_EXPIRES_AT) is not None:
            if await asyncio.to_thread(task.expired, route, envelope, payload):
                return
        fields = task.consumed(route, envelope)
        try:
            outcome, error = await pipeline.ask(route, envelope, payload,
                                                envelope.extra.get(dl.PENDING_DESTINATIONS)), None
        except Exception as exc:
            outcome, error = None, exc
        if error is not None or outcome.failures or outcome.reply is None:
            await asyncio.to_thread(task.finish_request, route, envelope, payload, outcome, error, fields)
            return
        task.trace_outcome(route, envelope, outcome, fields)
        await self.publisher.publish("", *task.reply_message(envelope, outcome.reply))


async def _quietly(settling) -> None:
    """An ack or nack on a channel that has gone: the broker redelivers the message anyway."""
    try:
        await settling
    except Exception as exc:
        log.warning("could not settle a message (%s); the broker will redeliver it", exc)


def run(routes: list[Route], broker_url: str, prefetch: int = 64) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await LoopWorker(routes, broker_url, prefetch).run(stop)

    aio.run(main())
