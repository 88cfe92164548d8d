"""The gateway's requests on its event loop: publish a request, wait for its reply, keep replies.

A request waiting for its reply is a future here, not a gateway thread: at
200 on-demand reads/s on two cores, 48 waitress threads queuing for the GIL
were where a round trip's time went (docs/benchmarks.md, "bench rpc").  What is checked and
stored before a request leaves (command safety, idempotency) is decided by
``RequestApi.take``, unchanged.

- A request is published with a publisher confirm, persistent, on its route;
  a broker that refuses it makes the request ``failed`` and the caller gets 503.
- Replies are consumed from ``gridbus.replies`` on the same loop.  Each is
  stored (committed) before it is acked, whether or not anyone still waits;
  an asynchronous request's reply is handed to the callback route (confirmed)
  before the ack.
- A read or determinants request waiting here is answered as soon as its
  reply is queued for the store, not after the commit: the commit was a step
  on every synchronous read's round trip (a hand-over to the store thread
  and back, slowed like every other step when the machine is busy).  Nothing
  is lost by it: the reply is acked only after its commit, so a gateway that
  dies in between leaves it in the queue for the next.  A `GET` of the
  request on this gateway queues behind the reply, so it finds it.  A
  command's caller is still answered after the commit: its result is audited
  first.
- Several gateway processes may share one store: every 0.25 s one query asks
  the store which of the requests waiting here longer than that have a reply
  (another process consumed it), and answers those.  One query for all of
  them, not one per waiting request: when replies run late under load, a
  store read per waiting request every 0.25 s was more work exactly when
  there was none to spare, and the queue that formed stayed.
- The store (SQLite, or the PostgreSQL every gateway shares) is read and
  written by one thread of its own, never by the loop, with group commits
  (``store_thread``); while it cannot be reached a request is answered 503
  (``server``) and a reply goes back to its queue.
- Reads and determinants requests older than the retention (``gridbus gateway
  --keep-requests``, 7 days) are deleted every minute, a chunk at a time on
  the store thread, so that a backlog never holds the requests' commits for
  long; commands are kept with their audit trail.
"""
from __future__ import annotations

import asyncio
import logging
import time

import aio_pika

from bus import aio, hooks, naming
from bus.envelope import child_traceparent
from bus.errors import BrokerError, BrokerUnconfirmed
from bus.requests.dispatch import NOUNS, callback_message, request_message
from bus.requests.store import PRUNE_CHUNK, Request, Retention
from bus.routes.model import Route
from connectors.http_push.kept_replies import answered, hinted_state, keep_reply, parsed
from connectors.http_push.requests_api import Answer, Following, RequestApi, Taken, refusal
from connectors.http_push.store_thread import NotCommitted, StoreThread

log = logging.getLogger("gridbus.gateway")
POLL_S = 0.25
PUBLISH_TIMEOUT_S = 5.0  # a request the broker has not confirmed by then is answered 503


class RequestLoop:
    def __init__(self, api: RequestApi, broker_url: str, routes: list[Route], retention: Retention = Retention()):
        self.api, self.broker_url, self.routes, self.retention = api, broker_url, routes, retention
        # request id → (settled with the request as stored with its reply, the request, since when it waits)
        self.waiting: dict[str, tuple[asyncio.Future, Request, float]] = {}
        self.connection = self.publisher = self._poller = self._pruner = self._consuming = None
        self.stored = StoreThread(api.store.batch)  # ``await self.stored(work, *args)``: committed

    async def start(self) -> None:
        # while the broker is away, replies wait in their quorum queue and a request that
        # cannot be published is answered 503
        self.connection = await aio.connect(self.broker_url, "gridbus-gateway-requests")
        # a blocked broker (memory or disk alarm) is answered 503 within PUBLISH_TIMEOUT_S, not waited on
        self.publisher = aio.ConfirmedPublisher(
            await self.connection.channel(publisher_confirms=True, on_return_raises=True),
            self.connection, timeout_s=PUBLISH_TIMEOUT_S)
        await self._consume_replies()
        # aio-pika restores a channel after a reconnect, but one whose connection was reset while
        # the broker blocked it (a memory or disk alarm) came back without its consumer now and
        # then: the replies waited in their queue and every read timed out (seen in CI).  After
        # each reconnect both channels are made anew instead.
        self.connection.reconnect_callbacks.add(lambda *_: asyncio.ensure_future(self._reopen()))
        self._poller = asyncio.create_task(self._poll_store())
        if self.retention.keep_s > 0:
            self._pruner = asyncio.create_task(self._prune_store())

    async def _consume_replies(self) -> None:
        """``gridbus.replies`` consumed on a channel of its own; the one before it, if any, closed
        (its unacked replies go back to the queue, for this consumer)."""
        old, self._consuming = self._consuming, await self.connection.channel()
        await self._consuming.set_qos(prefetch_count=200)
        replies = await self._consuming.get_queue(naming.REPLIES_QUEUE, ensure=True)
        await replies.consume(self._on_reply)
        if old is not None:
            try:
                await asyncio.wait_for(old.close(), 2)
            except Exception:  # noqa: BLE001 - a channel of a connection that went: let go either way
                pass

    async def _reopen(self) -> None:
        try:
            await self._consume_replies()
            await self.publisher.renew_channel()
            log.info("consuming replies and publishing again on new channels after a reconnect")
        except Exception as exc:  # noqa: BLE001 - the next reconnect tries again
            log.warning("reopening the reply consumer after a reconnect: %s", exc)

    async def close(self) -> None:
        for task in (self._poller, self._pruner):
            if task is not None:
                task.cancel()
        if self.connection is not None:
            await self.connection.close()
        self.stored.close()

    # -- a request ---------------------------------------------------------------------
    async def post(self, route: Route, system: str, user: str | None, document, traceparent: str | None,
                   correlation: str | None = None) -> Answer:
        try:
            taken = await self.stored(self.api.take, route, system, user, document, correlation)
        except NotCommitted as exc:  # not stored, so not sent: it no longer counts as waiting
            if isinstance(exc.result, (Taken, Following)):
                self.api.done(exc.result)
            raise
        if isinstance(taken, Answer):
            return taken
        try:
            if isinstance(taken, Following):
                return await self._follow(taken)
            _trace("received", route, taken.request, traceparent, source=system)
            return await self._send(route, taken, traceparent)
        finally:
            self.api.done(taken)

    async def _follow(self, following: Following) -> Answer:
        """A repeat of a request still in flight: the original's outcome when it comes (from
        this gateway's consumer or the store), else 504 saying it is still pending."""
        loop = asyncio.get_running_loop()
        request_id, deadline = following.request.id, loop.time() + following.timeout_s
        while True:
            original = self.waiting.get(request_id)
            remaining = deadline - loop.time()
            if original is not None and not original[0].done():
                await asyncio.wait((original[0],), timeout=max(0.0, min(remaining, POLL_S)))
            stored = await self.stored(self.api.store.get, request_id)
            if stored is not None and (stored.reply is not None or stored.state not in ("requested", "sent")):
                return self.api.status_answer(stored, 200 if stored.reply else 202, duplicate=True)
            if loop.time() >= deadline:
                return self.api.timed_out(following, duplicate=True)
            if original is None:
                await asyncio.sleep(min(POLL_S, max(0.0, deadline - loop.time())))

    async def _send(self, route: Route, taken: Taken, traceparent: str | None) -> Answer:
        request = taken.request
        future = asyncio.get_running_loop().create_future()
        self.waiting[request.id] = (future, request, asyncio.get_running_loop().time())
        try:
            try:
                await self.publisher.publish(*request_message(route, request,
                                                     child_traceparent(traceparent) if traceparent else None))
            except BrokerError as exc:
                if isinstance(exc, BrokerUnconfirmed) and request.kind == "commands":
                    # a command handed to the broker and never confirmed may run: it stays "sent" and
                    # is answered as any command whose outcome is not known yet (its reply, or 504
                    # pending with its id, and "unknown" without an answer), never "failed"
                    log.warning("command %s not confirmed, may have been taken: waited for as sent: %s",
                                request.id, exc)
                else:  # not handed over, refused, or a read (no harm if it ran): 503, try again
                    log.error("request %s not published: %s", request.id, exc)
                    _trace("dead-lettered", route, request, traceparent, reason=f"not published: {exc}")
                    await self.stored(self.api.store.transition, request.id, "failed", "gridbus", {"sent"},
                                      f"not published: {exc}")
                    return refusal(503, taken.noun, "BROKER_UNAVAILABLE", "the bus cannot take it now; retry",
                                   [("Retry-After", "5")])
            _trace("published", route, request, traceparent)
            if request.reply_address:
                return self.api.status_answer(await self.stored(self.api.store.get, request.id), 202)
            return await self._wait(taken, future)
        finally:
            self.waiting.pop(request.id, None)

    async def _wait(self, taken: Taken, future: asyncio.Future) -> Answer:
        """The reply (from our consumer, or found in the store by ``_poll_store``), else 504."""
        await asyncio.wait((future,), timeout=taken.timeout_s)
        if future.done():
            return self.api.status_answer(future.result(), 200)
        stored = await self.stored(self.api.store.get, taken.request.id)  # stored in the last instant
        if stored is not None and stored.reply is not None:
            return self.api.status_answer(stored, 200)
        return self.api.timed_out(taken)

    async def _poll_store(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_S)
            due = loop.time() - POLL_S
            ids = [request_id for request_id, (future, _, since) in self.waiting.items()
                   if since <= due and not future.done()]
            if not ids:
                continue
            try:
                replied = await self.stored(self.api.store.replied_among, ids)
            except Exception as exc:  # noqa: BLE001 - the next round asks again; our own consumer still answers
                log.warning("looking for replies kept by another gateway: %s", exc)
                continue
            for request in replied:
                future = self.waiting.get(request.id, (None,))[0]
                if future is not None and not future.done():
                    future.set_result(request)

    async def _prune_store(self) -> None:
        while True:
            await asyncio.sleep(self.retention.every_s)
            before, deleted = time.time() - self.retention.keep_s, PRUNE_CHUNK
            try:
                while deleted == PRUNE_CHUNK:  # a backlog goes a chunk at a time, requests in between
                    deleted = await self.stored(self.api.store.prune, before)
                    if deleted:
                        log.info("request store: %d requests older than %.0f s deleted", deleted,
                                 self.retention.keep_s)
                    await asyncio.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("request store: pruning failed: %s", exc)

    # -- replies -----------------------------------------------------------------------
    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        request_id = message.correlation_id
        future, request, _ = self.waiting.get(request_id, (None, None, None))
        reply, hinted = parsed(request_id, message.body), hinted_state(message.headers)
        keeping = self.stored.submit(keep_reply, self.api.store, request_id, reply, hinted,
                                     request.kind if request is not None else None)
        if future is not None and not future.done() and reply is not None and request.kind != "commands":
            future.set_result(answered(request, reply, hinted))
        try:
            kept, reply = await keeping
            if kept is not None and kept.reply_address and kept.reply == reply:
                callback = callback_message(self.routes, kept, reply)
                if callback is not None:
                    await self.publisher.publish(*callback)
        except Exception as exc:  # not stored, or its callback not confirmed: it comes back
            log.warning("reply to %s not kept (%s); returned to the queue", request_id, exc)
            await message.nack(requeue=True)
            return
        await message.ack()
        if kept is not None:
            hooks.emit("replied", message_id=request_id, correlation_id=kept.correlation_id or request_id,
                       route=kept.route, source=kept.system, state=kept.state, result=kept.result, attempt=1)
        if future is not None and not future.done() and kept is not None and kept.reply is not None:
            future.set_result(kept)


def _trace(event: str, route: Route, request: Request, traceparent: str | None, **fields) -> None:
    """The gateway's hop of a request in the trace: received, published (or not), replied."""
    hooks.emit(event, message_id=request.id, correlation_id=request.correlation_id or request.id,
               traceparent=traceparent, route=route.id, attempt=1, noun=NOUNS.get(request.kind), **fields)
