"""The gateway's request store, read and written by one thread of its own, with group commits.

The event loop hands store work (take a request, keep a reply, look one up)
to this thread and awaits it; the loop never waits on the database (SQLite works
without the GIL, PostgreSQL on its own server), so a commit overlaps the loop's
HTTP and AMQP work.

Whatever has queued up while the thread was busy runs as one batch in one
transaction: each piece of work in a savepoint of its own (its error undoes
its writes only), one COMMIT for all of them, then one wake-up of the loop
that settles every awaiting future.  A request is published, and a reply
acked, only after the commit that stored it.  At a trickle a batch is one
piece of work, as before; at 200 requests/s the cost of a commit and of a
thread hand-over is shared, so the store gets cheaper per request just when
the gateway is busiest instead of building a queue (docs/benchmarks.md, "bench rpc").
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ContextManager

from bus.errors import GridbusError
from bus.state_store import StateDb

log = logging.getLogger("gridbus.gateway.store")
MAX_BATCH = 64  # bounds how long one commit keeps the first request of a batch waiting


class NotCommitted(GridbusError):
    """Work that ran, but the commit of its batch failed: nothing of it is stored.  ``result``
    is what the work returned, for the caller to undo what it did outside the store."""

    def __init__(self, cause: Exception, result: Any):
        super().__init__(f"not committed: {cause}")
        self.result = result


class StoreThread:
    def __init__(self, batch: Callable[[], ContextManager[StateDb]], max_batch: int = MAX_BATCH):
        """``batch``: the store's group transaction, yielding its database (``RequestStore.batch``)."""
        self.batch, self.max_batch = batch, max_batch
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="gateway-store", daemon=True)
        self._thread.start()

    async def __call__(self, work: Callable, *args: Any) -> Any:
        """``work(*args)`` on the store's thread, committed before it returns."""
        return await self.submit(work, *args)

    def submit(self, work: Callable, *args: Any) -> asyncio.Future:
        """Queue ``work(*args)`` now; the future settles once it is committed.  Work runs in the
        order it was queued, so a lookup queued later sees what was queued before it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._work.put((work, args, future, loop))
        return future

    def close(self, timeout_s: float = 5.0) -> None:
        self._work.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            first = self._work.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._work.put(None)  # close after this batch
                    break
                batch.append(item)
            self._settle(self._done(batch))

    def _done(self, batch: list) -> list:
        outcomes = []
        try:
            with self.batch() as db:
                for work, args, future, loop in batch:
                    try:
                        with db.writing():  # a savepoint: an error undoes this work's writes only
                            result = work(*args)
                    except Exception as exc:  # noqa: BLE001 - handed to the awaiting request as it is
                        outcomes.append((future, loop, exc, None))
                    else:
                        outcomes.append((future, loop, None, result))
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing of the batch is stored
            log.error("request store: a batch of %d not committed: %s", len(batch), exc)
            outcomes = [(future, loop, error if error is not None else NotCommitted(exc, result), None)
                        for future, loop, error, result in outcomes]
            outcomes += [(future, loop, NotCommitted(exc, None), None) for _, _, future, loop in batch[len(outcomes):]]
        return outcomes

    @staticmethod
    def _settle(outcomes: list) -> None:
        by_loop: dict = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[1], []).append(outcome)
        for loop, mine in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, mine)
            except RuntimeError:  # that loop has closed: nobody awaits these any more
                pass


def _resolve(outcomes: list) -> None:
    for future, _, exc, result in outcomes:
        if future.done():  # its awaiter was cancelled (the caller hung up)
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
