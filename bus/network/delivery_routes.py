"""The billing routes of network updates (routes/ordered/uc9-billing.yaml), checked at load time.

    routes:
      - id: network-to-billing-1
        transform: billing_network_json
        destination: {system: billing-1, connector: billing-rest, url: "${BILLING_1_URL}/consumers/updates"}
        partitions: 4          # queues of this route; a consumer always in the same one
        batch_max: 500         # updates per POST
        window_ms: 200         # the longest the first update of a batch waits for more
        retry: {first_delay_s: 0.5, max_delay_s: 30}   # in place: the partition waits

Errors name file and line, as route files do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus import naming, registry
from bus.errors import ConfigError, RouteValidationError
from bus.network.delivery_topology import MAX_PARTITIONS
from bus.routes.yaml_lines import interpolate, line_of, load_with_lines
from bus.settings import environment

DEFAULT_FILE = Path("routes") / "ordered" / "uc9-billing.yaml"
_ROUTE_KEYS = {"id", "description", "transform", "destination", "partitions", "batch_max", "window_ms", "retry"}
_RETRY_KEYS = {"first_delay_s", "max_delay_s"}


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


def _int(value: Any, low: int, high: int, what: str, errors: list, file: str, line: int | None) -> Any:
    if type(value) is not int or not low <= value <= high:
        errors.append(ConfigError(f"{what} must be a whole number from {low} to {high}, not {value!r}", file, line))
    return value


def load_billing_routes(path: str | Path | None = None, env: dict[str, str] | None = None) -> list[BillingRoute]:
    path = Path(path or environment().get("GRIDBUS_NETWORK_ROUTES") or DEFAULT_FILE)
    file = str(path)
    if not path.exists():
        raise ConfigError("no such file (give --routes or set GRIDBUS_NETWORK_ROUTES)", file)
    data, lines = load_with_lines(path.read_text(encoding="utf-8"), file)
    errors: list[ConfigError] = []
    data = interpolate(data, environment() if env is None else env, lines, file, errors)
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list) or not data["routes"]:
        raise RouteValidationError([ConfigError("a list of routes under 'routes' is required", file, 1)])
    routes, seen = [], set()
    for i, raw in enumerate(data["routes"]):
        line = line_of(lines, ("routes", i))
        if not isinstance(raw, dict):
            errors.append(ConfigError("a route is a mapping", file, line))
            continue
        for key in sorted(set(raw) - _ROUTE_KEYS):
            errors.append(ConfigError(f"unknown key {key!r}{registry.did_you_mean(key, sorted(_ROUTE_KEYS))}",
                                      file, line_of(lines, ("routes", i, key))))
        rid = raw.get("id")
        if not isinstance(rid, str) or not naming.ROUTE_ID_PATTERN.match(rid):
            errors.append(ConfigError(f"route id must be 2-63 of a-z, 0-9 and '-', not {rid!r}", file, line))
        elif rid in seen:
            errors.append(ConfigError(f"route {rid} twice", file, line))
        seen.add(rid)
        transform = raw.get("transform")
        try:
            registry.transformer(transform)
        except ConfigError as exc:
            errors.append(ConfigError(str(exc), file, line_of(lines, ("routes", i, "transform"))))
        dest = raw.get("destination")
        if not isinstance(dest, dict) or not {"system", "connector", "url"} <= set(dest):
            errors.append(ConfigError("destination needs system, connector and url", file,
                                      line_of(lines, ("routes", i, "destination"))))
        else:
            try:
                registry.connector(dest["connector"])
            except ConfigError as exc:
                errors.append(ConfigError(str(exc), file, line_of(lines, ("routes", i, "destination"))))
        retry = raw.get("retry") or {}
        for key in sorted(set(retry) - _RETRY_KEYS) if isinstance(retry, dict) else ["retry"]:
            errors.append(ConfigError(f"unknown retry key {key!r}", file, line_of(lines, ("routes", i, "retry"))))
        opts = {k: _int(raw[k], lo, hi, k, errors, file, line_of(lines, ("routes", i, k)))
                for k, lo, hi in (("partitions", 1, MAX_PARTITIONS), ("batch_max", 1, 10_000),
                                  ("window_ms", 1, 60_000)) if k in raw}
        delays = {k: float(v) for k, v in retry.items() if isinstance(v, (int, float)) and v > 0} \
            if isinstance(retry, dict) else {}
        routes.append(BillingRoute(id=rid, transform=transform, destination=dest if isinstance(dest, dict) else {},
                                   description=str(raw.get("description", "")), line=line, **opts, **delays))
    if errors:
        raise RouteValidationError(errors)
    return routes
