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
class OrderedOptions:
    """What a route of method ``ordered`` adds (docs/network-delivery.md): how many partition queues
    it has, the batches taken from each, and its in-place retries (the partition waits)."""

    partitions: int = 4
    batch_max: int = 500
    window_ms: int = 200
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0


@dataclass(frozen=True)
class CorrelateOptions:
    """What a route of method ``correlate`` adds (docs/outages.md): its partition queues (by feeder),
    the batches taken from them, the watermark's tick (every ``tick_s``, at the clock minus
    ``skew_s``), how often the state is checkpointed, the request-response route its
    verifications take, and how long closed outages are kept in the outage store."""

    partitions: int = 4
    batch_max: int = 2000
    window_ms: int = 200
    tick_s: float = 1.0
    skew_s: float = 2.0
    checkpoint_s: float = 30.0
    verify_route: str | None = None
    keep_days: float = 90.0  # closed outages, their timelines and messages are kept this long
    # a first breath also goes to the partitions of the feeders its meter was under this long before
    breath_lookback_s: float = 86400.0


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
    # method ``ordered`` only: its partitions, batches and in-place retries (``retry`` and
    # ``queue`` are then the defaults, unused: no Celery task, no route queue)
    ordered: OrderedOptions | None = None
    # method ``correlate`` only: run by ``gridbus outages`` (partitions by feeder), not by the worker
    correlate: CorrelateOptions | None = None

    @property
    def queue_name(self) -> str:
        """The route queue of a route the worker runs (an ordered route has none: ``queues``)."""
        return naming.route_queue_name(self.id)

    @property
    def is_ordered(self) -> bool:
        """Run by ``gridbus network deliver`` (a BatchConsumer per partition), not by the worker."""
        return self.ordered is not None

    @property
    def is_correlated(self) -> bool:
        """Run by ``gridbus outages`` (a router and a correlator per partition), not by the worker."""
        return self.correlate is not None

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues the route's messages wait in: the route queue, or an ordered route's partition
        queues and its replays queue (names from bus/network/delivery_topology.py)."""
        if self.is_correlated:
            from bus.outages import names
            return (self.queue_name,) + tuple(names.partition_queue(self.id, p)
                                              for p in range(self.correlate.partitions))
        if not self.is_ordered:
            return (self.queue_name,)
        from bus.network import delivery_topology as topo
        return tuple(topo.partition_queue_name(self.id, p) for p in range(self.ordered.partitions)) \
            + (topo.replays_queue_name(self.id),)

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
        """The routes a worker of ``kind`` runs: ``requests``, the routes whose messages wait on
        their destination; ``deliveries``, every other route; ``all``, both.  Never an ordered
        route: Celery's prefork pool and broker retries would reorder it; ``gridbus network
        deliver`` runs those (``ordered_routes``)."""
        if kind not in ROUTE_KINDS:
            from bus.errors import ConfigError
            raise ConfigError(f"no route kind {kind!r} (kinds: {', '.join(ROUTE_KINDS)})")
        return RouteTable(tuple(r for r in self.routes if not r.is_ordered and not r.is_correlated and (
            kind == "all" or r.waits_on_destination == (kind == "requests"))))

    def correlated_routes(self) -> "RouteTable":
        """The routes of method ``correlate``: what ``gridbus outages`` runs."""
        return RouteTable(tuple(r for r in self.routes if r.is_correlated))

    def ordered_routes(self) -> "RouteTable":
        """The routes of method ``ordered``: what ``gridbus network publish`` and ``deliver`` run."""
        return RouteTable(tuple(r for r in self.routes if r.is_ordered))


ROUTE_KINDS = ("all", "requests", "deliveries")
