"""Broker users for source systems that publish over AMQP, limited to their own routing keys.

A HES that pushes alarms over MQ gets a RabbitMQ user of its own (named as the
system) that may do one thing: publish on the exchanges its routes take from,
with the routing keys of those routes.  It may not declare, consume, or
publish anywhere else: RabbitMQ refuses the publish (403 ACCESS_REFUSED, the
channel is closed) before anything is routed.  What a system may publish is
derived from the route files, so granting never drifts from routing:
``gridbus broker users sync`` re-applies it after a route change.

The password is made here, printed once, and the broker keeps only its salted
hash (as the gateway does with API keys).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from bus import registry
from bus.broker_admin import BrokerAdmin
from bus.errors import ConfigError
from bus.routes.model import RouteTable

MANAGED_TAG = "gridbus-source"  # marks the users gridbus made (it never touches others)


@dataclass(frozen=True)
class Grant:
    system: str
    exchange: str
    routing_keys: tuple[str, ...]

    def write_pattern(self) -> str:
        """Exactly these keys: anchored, with every regex character escaped."""
        return "^(" + "|".join(re.escape(k) for k in self.routing_keys) + ")$"


def grants_of(routes: RouteTable, system: str) -> list[Grant]:
    """What ``system`` may publish over AMQP, from the source connectors of its routes."""
    keys: dict[str, set[str]] = {}
    for route in routes:
        if route.source.system != system:
            continue
        grants = getattr(registry.connector(route.source.connector), "broker_grants", None)
        for exchange, key in (grants(route) if grants else ()):
            keys.setdefault(exchange, set()).add(key)
    return [Grant(system, exchange, tuple(sorted(ks))) for exchange, ks in sorted(keys.items())]


class SourceUsers:
    def __init__(self, admin: BrokerAdmin, routes: RouteTable):
        self.admin = admin
        self.routes = routes

    def _grants(self, system: str) -> list[Grant]:
        grants = grants_of(self.routes, system)
        if not grants:
            takers = sorted({r.source.system for r in self.routes
                             if getattr(registry.connector(r.source.connector), "broker_grants", None)})
            raise ConfigError(f"no route takes AMQP messages from {system!r}; systems that publish over "
                              f"AMQP: {', '.join(takers) or 'none'}")
        return grants

    def add(self, system: str) -> str:
        """Create (or re-key) the user of ``system``; returns the new password (shown once)."""
        grants = self._grants(system)
        existing = {u["name"]: u for u in self.admin.users()}
        if system in existing and MANAGED_TAG not in _tags(existing[system]):
            raise ConfigError(f"broker user {system!r} exists and was not made by gridbus; not touching it")
        password = secrets.token_urlsafe(24)
        self.admin.put_user(system, password, MANAGED_TAG)
        self._apply(system, grants)
        return password

    def _apply(self, system: str, grants: list[Grant]) -> None:
        exchanges = "^(" + "|".join(re.escape(g.exchange) for g in grants) + ")$"
        # configure nothing, read nothing, write only on these exchanges ...
        self.admin.set_permissions(system, configure="^$", write=exchanges, read="^$")
        # ... and on each only with its routes' keys (topic authorisation)
        self.admin.clear_topic_permissions(system)
        for grant in grants:
            self.admin.set_topic_permissions(system, grant.exchange, write=grant.write_pattern(), read="^$")

    def sync(self) -> list[tuple[str, str]]:
        """Re-apply every managed user's permissions from the routes; (system, what happened)."""
        done = []
        for user in self.managed():
            grants = grants_of(self.routes, user)
            if grants:
                self._apply(user, grants)
                done.append((user, ", ".join(f"{g.exchange}: {', '.join(g.routing_keys)}" for g in grants)))
            else:  # its routes are gone: it may publish nothing
                self.admin.set_permissions(user, configure="^$", write="^$", read="^$")
                self.admin.clear_topic_permissions(user)
                done.append((user, "no route any more: may publish nothing"))
        return done

    def managed(self) -> list[str]:
        return sorted(u["name"] for u in self.admin.users() if MANAGED_TAG in _tags(u))

    def listing(self) -> list[dict]:
        rows = []
        for user in self.managed():
            topics = self.admin.topic_permissions_of(user)
            rows.append({"system": user, "write": self.admin.permissions_of(user).get("write", "(none here)"),
                         "routing_keys": "; ".join(f"{t['exchange']} {t['write']}" for t in topics) or "-"})
        return rows

    def remove(self, system: str) -> None:
        if system not in self.managed():
            raise ConfigError(f"no broker user {system!r} made by gridbus")
        self.admin.delete_user(system)


def _tags(user: dict) -> list[str]:
    tags = user.get("tags", [])
    return tags.split(",") if isinstance(tags, str) else list(tags)
