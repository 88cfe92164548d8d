"""An HTTP pusher at a fixed rate, for `gridbus bench fairness`: one process per system.

    python -m gridbus_dev.bench.fairness_client URL KEY RATE SECONDS [--connections N]

Sends ``RATE`` pushes per second for ``SECONDS`` (open loop: a push is started on schedule
whether the last one was answered or not, up to ``--connections`` at once; beyond that it is
counted as not sent), and prints one JSON line: the answers by status, the latencies of the
accepted (202) pushes in milliseconds, sorted, and how many could not be started.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

ALARM = b'[{"meter": "UPM00000001", "code": 101, "occurred_at": "2026-11-01T00:00:00+05:30"}]'


async def run(url: str, key: str, rate: float, seconds: float, connections: int) -> dict:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    skipped = 0
    slots = asyncio.Semaphore(connections)
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one() -> None:
            started = time.perf_counter()
            try:
                async with session.post(url, data=ALARM, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientError:
                status = 0
            finally:
                slots.release()
            statuses[status] = statuses.get(status, 0) + 1
            if status == 202:
                latencies.append((time.perf_counter() - started) * 1000)

        tasks = set()
        began = time.perf_counter()
        n = 0
        while True:
            due = began + n / rate
            now = time.perf_counter()
            if due - began >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            n += 1
            if slots.locked():
                skipped += 1
                continue
            await slots.acquire()
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return {"statuses": statuses, "latencies_ms": sorted(latencies), "not_started": skipped, "planned": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("key")
    p.add_argument("rate", type=float)
    p.add_argument("seconds", type=float)
    p.add_argument("--connections", type=int, default=64)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(a.url, a.key, a.rate, a.seconds, a.connections))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
