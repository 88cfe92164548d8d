"""Per-system token buckets: a system that pushes faster than its rate gets 429 with Retry-After.

In-process: each gateway process limits what it serves.  Several gateway
processes behind one address each allow the rate (say so when sizing it).
"""
from __future__ import annotations

import threading
import time


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float | None = None):
        self.rate = rate_per_s
        self.burst = burst if burst is not None else 2 * rate_per_s
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, system: str, cost: float = 1) -> float:
        """0 if allowed now, else seconds until ``cost`` tokens (requests, or meters) would be."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(system, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[system] = (tokens - cost, now)
                return 0.0
            self._buckets[system] = (tokens, now)
            return (cost - tokens) / self.rate
