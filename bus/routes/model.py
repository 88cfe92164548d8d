"""The route table as typed, validated objects (what the rest of the bus uses)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from bus import naming


@dataclass(frozen=True)
class Endpoint:
    """One end of a route: a system reached through a named connector."""

    system: str
    connector: str
    options: dict[str, Any] = field(default_factory=dict)
    transform: tuple[str, ...] = ()   # extra steps for this destination only


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    backoff: str = "exponential"
    first_delay_s: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.2

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> int:
        """Whole seconds to wait before ``attempt`` (2 = first retry); the broker's
        delay levels count in seconds, and jitter spreads a burst of retries."""
        base = self.first_delay_s
        if self.backoff == "exponential":
            base = self.first_delay_s * 2 ** max(0, attempt - 2)
        base = min(base, self.max_delay_s)
        spread = base * self.jitter * (rng or random).uniform(-1, 1)
        return max(1, round(min(base + spread, self.max_delay_s)))


@dataclass(frozen=True)
class QueueOptions:
    type: str = "quorum"
    batch_size: int = 1000
    delivery_limit: int = 5


@dataclass(frozen=True)
class Route:
    id: str
    use_case: int | None
    description: str
    source: Endpoint
    method: str
    transform: tuple[str, ...]
    destinations: tuple[Endpoint, ...]
    retry: RetryPolicy
    queue: QueueOptions
    message: dict[str, str]
    file: str
    line: int
    options: dict[str, Any] = field(default_factory=dict)  # for the transformers

    @property
    def queue_name(self) -> str:
        return naming.route_queue_name(self.id)

    @property
    def task_name(self) -> str:
        return naming.task_name(self.id)

    @property
    def waits_on_destination(self) -> bool:
        """A request-response route, or the route that POSTs replies to their callbacks: each
        message waits on its destination's answer, so these run on workers of their own
        (``gridbus worker --kind requests``): a burst of alarms never delays a billing request,
        and a waiting request never holds a process that has CPU-bound batches to do."""
        return self.method == "request-response" or self.source.connector == "replies"


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]

    def __iter__(self):
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def get(self, route_id: str) -> Route:
        for route in self.routes:
            if route.id == route_id:
                return route
        from bus.errors import ConfigError
        from bus.registry import did_you_mean
        known = [r.id for r in self.routes]
        hint = did_you_mean(route_id, known) or f" (routes: {', '.join(known) or 'none'})"
        raise ConfigError(f"no route {route_id!r}{hint}")

    def select(self, route_ids: list[str] | None) -> "RouteTable":
        if not route_ids:
            return self
        return RouteTable(tuple(self.get(r) for r in route_ids))

    def of_kind(self, kind: str) -> "RouteTable":
        """``requests``: the routes whose messages wait on their destination; ``deliveries``:
        every other route; ``all``: the table as it is."""
        if kind == "all":
            return self
        if kind not in ROUTE_KINDS:
            from bus.errors import ConfigError
            raise ConfigError(f"no route kind {kind!r} (kinds: {', '.join(ROUTE_KINDS)})")
        return RouteTable(tuple(r for r in self.routes if r.waits_on_destination == (kind == "requests")))


ROUTE_KINDS = ("all", "requests", "deliveries")
