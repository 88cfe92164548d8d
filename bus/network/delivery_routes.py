"""The billing routes of network updates: the routes of method ``ordered`` in the route files.

They are loaded, checked and reported (file:line) by the route loader like every route
(bus/routes; ``gridbus routes validate|list|plan`` know them); this module gives
``gridbus network publish`` and ``deliver`` each one as a ``BillingRoute``, the flat view the
delivery process reads::

    routes:
      - id: network-to-billing-1
        source: {system: network, connector: network-store}   # the network store's outbox
        method: ordered
        transform: [billing_network_json]
        destinations:
          - {system: billing-1, connector: billing-rest, url: "${BILLING_1_URL}/consumers/updates"}
        ordered: {partitions: 4, batch_max: 500, window_ms: 200}
        retry: {first_delay_s: 0.5, max_delay_s: 30}      # in place: the partition waits
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bus.routes import Route, RouteTable, load_routes
from bus.settings import Settings

# the shipped billing routes, for tools and tests that want only these (and so only their
# addresses); gridbus network publish/deliver read every route file, as every command does
DEFAULT_FILE = Path("routes") / "uc9-billing.yaml"


@dataclass(frozen=True)
class BillingRoute:
    id: str
    transform: str
    destination: dict[str, Any]
    partitions: int = 4
    batch_max: int = 500
    window_ms: int = 200
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    description: str = ""
    line: int | None = field(default=None, compare=False)

    @property
    def system(self) -> str:
        return self.destination["system"]

    @classmethod
    def of(cls, route: Route) -> "BillingRoute":
        """The delivery process's view of a route of method ``ordered``."""
        if not route.is_ordered:
            raise ValueError(f"route {route.id} is not an ordered route (method {route.method})")
        end, o = route.destinations[0], route.ordered
        return cls(id=route.id, transform=route.transform[0],
                   destination={**end.options, "system": end.system, "connector": end.connector},
                   partitions=o.partitions, batch_max=o.batch_max, window_ms=o.window_ms,
                   first_delay_s=o.first_delay_s, max_delay_s=o.max_delay_s,
                   description=route.description, line=route.line)


def billing_routes(table: RouteTable) -> list[BillingRoute]:
    return [BillingRoute.of(r) for r in table.ordered_routes()]


def load_billing_routes(paths: Iterable[str | Path] | str | Path | None = None,
                        env: dict[str, str] | None = None) -> list[BillingRoute]:
    """The ordered routes of the route files or folders ``paths`` (default ``$GRIDBUS_ROUTES``,
    else ./routes), every route of them checked; RouteValidationError names file and line."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return billing_routes(load_routes(list(paths) if paths else [Settings.load().routes_path], env))
