"""The load generator of `gridbus bench rpc`: POSTs on a fixed schedule, from one event loop.

Open loop: request n starts at ``n / rate`` seconds whether or not earlier ones
have answered, so a slow pipeline shows as latency, never as a lower rate
(``sent/s`` says whether the generator kept to its schedule).

One uvloop event loop with aiohttp's client rather than a pool of threads on
http.client: the generator runs on the same two cores as the pipeline it
measures.  64 threads cost 0.7 ms of CPU per request, contended for the GIL
(the time a reply waited for its thread to get it was counted as the
pipeline's latency), and capped the requests in flight at 64, past which a
request waited in the pool, uncounted, before its clock started.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bus import aio

# (status, body) of POSTing body with headers to url
Post = Callable[[str, bytes, dict], Awaitable[tuple[int, bytes]]]
# (ok, why not) of request n, sent with a Post
Send = Callable[[Post, int], Awaitable[tuple[bool, str]]]


class Outcome:
    def __init__(self):
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.error_examples: list[str] = []
        self.seconds = 0.0

    def count(self, ok: bool, detail: str, elapsed_ms: float) -> None:
        if ok:
            self.latencies_ms.append(elapsed_ms)
            return
        self.errors += 1
        if len(self.error_examples) < 5 and detail[:200] not in self.error_examples:
            self.error_examples.append(detail[:200])  # each kind of failure once


def run(send: Send, rate: float, seconds: float, timeout_s: float = 10, warm_up: int = 0,
        on_start: Callable[[], object] = lambda: None) -> Outcome:
    """``rate × seconds`` requests on schedule, after ``warm_up`` ones sent one at a time and not
    counted; ``on_start()`` is called between the two (where the CPU meter takes its snapshot)."""
    return aio.run(_run(send, rate, seconds, timeout_s, warm_up, on_start))


async def _run(send: Send, rate: float, seconds: float, timeout_s: float, warm_up: int,
               on_start: Callable[[], object]) -> Outcome:
    outcome = Outcome()
    # no cap on connections: the schedule, not the pool, decides how many are in flight
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def post(url: str, body: bytes, headers: dict) -> tuple[int, bytes]:
            async with session.post(url, data=body, headers=headers) as answer:
                return answer.status, await answer.read()

        async def one(n: int) -> None:
            started = time.perf_counter()
            try:
                ok, detail = await send(post, n)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                ok, detail = False, f"{exc.__class__.__name__}: {exc}"
            outcome.count(ok, detail, (time.perf_counter() - started) * 1000)

        for n in range(warm_up):  # connections, imports, the first SQLite pages
            await send(post, n)
        on_start()
        total = int(rate * seconds)
        running = set()
        start = time.perf_counter()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(n))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)
        outcome.seconds = time.perf_counter() - start
    return outcome
