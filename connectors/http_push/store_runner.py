"""The gateway's request store work (take a request, keep a reply, look one up), group-committed.

Store work queued during one turn of the event loop runs as one batch in one
transaction: each piece of work in a savepoint of its own (its error undoes
its writes only), one COMMIT for all of them, then every awaiting future is
settled.  A request is published, and a reply acked, only after the commit
that stored it.  At 200 requests/s the cost of a commit is shared, so the
store gets cheaper per request just when the gateway is busiest instead of
building a queue (README, "bench rpc").

Where a batch runs:

- **on the loop's own thread** (``on_loop=True``, the gateway), when the write
  lock is free at once.  A commit in WAL mode without fsync takes a fraction
  of a millisecond; handing the batch to a thread and back cost about 0.1 ms
  of CPU per hand-over on this VM (futex wake-ups, the loop's self-pipe),
  twice per request, more than the SQLite work itself;
- **on the store thread** when the loop would have to wait: another process
  (``gridbus commands approve``, a second gateway) or thread holds the write
  lock.  The thread waits for it (SQLite's busy timeout); the loop goes on
  serving.  The thread also checkpoints the WAL into the database file once
  a second, so no commit on the loop ever pays for copying it.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, ContextManager

from bus.errors import GridbusError
from bus.sqlite_local import WouldWait

log = logging.getLogger("gridbus.gateway.store")
MAX_BATCH = 64  # bounds how long one commit keeps the first request of a batch waiting
CHECKPOINT_EVERY_S = 1.0


class NotCommitted(GridbusError):
    """Work that ran, but the commit of its batch failed: nothing of it is stored.  ``result``
    is what the work returned, for the caller to undo what it did outside the store."""

    def __init__(self, cause: Exception, result: Any):
        super().__init__(f"not committed: {cause}")
        self.result = result


class StoreRunner:
    def __init__(self, batch: Callable[..., ContextManager[sqlite3.Connection]], max_batch: int = MAX_BATCH,
                 on_loop: bool = False, checkpoint: Callable[[], None] | None = None):
        """``batch(wait=True)``: the store's group transaction, yielding its connection
        (``RequestStore.batch``); ``checkpoint``: the store's, run by the thread when idle."""
        self.batch, self.max_batch, self.on_loop, self.checkpoint = batch, max_batch, on_loop, checkpoint
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._this_turn: list = []
        self._thread = threading.Thread(target=self._run, name="gateway-store", daemon=True)
        self._thread.start()

    async def __call__(self, work: Callable, *args: Any) -> Any:
        """``work(*args)``, committed before it returns."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        item = (work, args, future, loop)
        if not self.on_loop:
            self._work.put(item)
        else:
            if not self._this_turn:
                loop.call_soon(self._run_this_turn)
            self._this_turn.append(item)
        return await future

    def close(self, timeout_s: float = 5.0) -> None:
        self._work.put(None)
        self._thread.join(timeout_s)

    # -- on the loop -------------------------------------------------------------------
    def _run_this_turn(self) -> None:
        batch, self._this_turn = self._this_turn, []
        try:
            outcomes = self._done(batch, wait=False)
        except WouldWait:  # nothing was written: the thread does it, waiting for the lock
            for item in batch:
                self._work.put(item)
            return
        _resolve(outcomes)

    # -- on the thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                first = self._work.get(timeout=CHECKPOINT_EVERY_S if self.checkpoint else None)
            except queue.Empty:
                self._checkpoint()
                continue
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
            self._settle(self._done(batch, wait=True))

    def _checkpoint(self) -> None:
        try:
            self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - the next one may succeed; commits do not depend on it
            log.warning("request store checkpoint: %s", exc)

    def _done(self, batch: list, wait: bool) -> list:
        outcomes = []
        try:
            with self.batch(wait) as db:
                for work, args, future, loop in batch:
                    db.execute("SAVEPOINT work")
                    try:
                        outcomes.append((future, loop, None, work(*args)))
                    except Exception as exc:  # noqa: BLE001 - handed to the awaiting request as it is
                        db.execute("ROLLBACK TO work")
                        outcomes.append((future, loop, exc, None))
                    db.execute("RELEASE work")
        except WouldWait:
            raise
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
