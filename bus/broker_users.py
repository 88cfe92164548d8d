"""Broker users for systems that talk to the bus over AMQP, limited to their own keys and queues.

A HES that pushes alarms over MQ gets a RabbitMQ user of its own (named as the
system) that may do one thing: publish on the exchanges its routes take from,
with the routing keys of those routes.  It may not declare, consume, or
publish anywhere else: RabbitMQ refuses the publish (403 ACCESS_REFUSED, the
channel is closed) before anything is routed.

A system that takes messages over AMQP (the ADMS's outages: an ``amqp``
destination with a ``queue``) gets a user that may consume exactly the queues
of the destinations whose ``reader`` it is (configure and write nothing, read
``^(adms\\.outages)$``): consuming takes read on the queue and nothing else
(``basic.qos``, ``basic.ack`` and a passive ``queue.declare`` need no
permission on RabbitMQ 3.10).  A system may be both.

What a system may publish or read is derived from the route files, so granting
never drifts from routing: ``gridbus broker users sync`` re-applies it after a
route change.

The password is made here, printed once, and the broker keeps only its salted
hash (as the gateway does with API keys).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from bus import registry
from bus.broker_admin import BrokerAdmin
from bus.errors import ConfigError
from bus.routes.model import RouteTable
from bus.service_users import exact as anchored  # one way to spell "exactly these names"

MANAGED_TAG = "gridbus-source"  # marks the users gridbus made (it never touches others)


@dataclass(frozen=True)
class Grant:
    system: str
    exchange: str
    routing_keys: tuple[str, ...]

    def write_pattern(self) -> str:
        """Exactly these keys: anchored, with every regex character escaped."""
        return anchored(self.routing_keys)


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


def reads_of(routes: RouteTable, system: str) -> tuple[str, ...]:
    """The queues ``system`` may consume, from the destination connectors of every route
    (``broker_read_grants(route, endpoint)`` → ``[(system, queue)]``)."""
    queues = set()
    for route in routes:
        for endpoint in route.destinations:
            grants = getattr(registry.connector(endpoint.connector), "broker_read_grants", None)
            queues.update(q for reader, q in (grants(route, endpoint) if grants else ()) if reader == system)
    return tuple(sorted(queues))


def _readers(routes: RouteTable) -> list[str]:
    found = set()
    for route in routes:
        for endpoint in route.destinations:
            grants = getattr(registry.connector(endpoint.connector), "broker_read_grants", None)
            found.update(reader for reader, _ in (grants(route, endpoint) if grants else ()))
    return sorted(found)


class SourceUsers:
    def __init__(self, admin: BrokerAdmin, routes: RouteTable):
        self.admin = admin
        self.routes = routes

    def _grants(self, system: str) -> tuple[list[Grant], tuple[str, ...]]:
        grants, reads = grants_of(self.routes, system), reads_of(self.routes, system)
        if not grants and not reads:
            takers = sorted({r.source.system for r in self.routes
                             if getattr(registry.connector(r.source.connector), "broker_grants", None)})
            raise ConfigError(f"no route takes AMQP messages from {system!r} or delivers to it over AMQP; "
                              f"systems that publish over AMQP: {', '.join(takers) or 'none'}; systems that "
                              f"read a queue: {', '.join(_readers(self.routes)) or 'none'}")
        return grants, reads

    def add(self, system: str) -> str:
        """Create (or re-key) the user of ``system``; returns the new password (shown once)."""
        grants, reads = self._grants(system)
        existing = {u["name"]: u for u in self.admin.users()}
        if system in existing and MANAGED_TAG not in _tags(existing[system]):
            raise ConfigError(f"broker user {system!r} exists and was not made by gridbus; not touching it")
        password = secrets.token_urlsafe(24)
        self.admin.put_user(system, password, MANAGED_TAG)
        self._apply(system, grants, reads)
        return password

    def _apply(self, system: str, grants: list[Grant], reads: tuple[str, ...] = ()) -> None:
        # configure nothing, write only on these exchanges, read only these queues ...
        self.admin.set_permissions(system, configure="^$", write=anchored(g.exchange for g in grants),
                                   read=anchored(reads))
        # ... and on each exchange only with its routes' keys (topic authorisation)
        self.admin.clear_topic_permissions(system)
        for grant in grants:
            self.admin.set_topic_permissions(system, grant.exchange, write=grant.write_pattern(), read="^$")

    def sync(self) -> list[tuple[str, str]]:
        """Re-apply every managed user's permissions from the routes; (system, what happened)."""
        done = []
        for user in self.managed():
            grants, reads = grants_of(self.routes, user), reads_of(self.routes, user)
            if grants or reads:
                self._apply(user, grants, reads)
                said = [f"publish {g.exchange}: {', '.join(g.routing_keys)}" for g in grants]
                said += [f"read {', '.join(reads)}"] if reads else []
                done.append((user, "; ".join(said)))
            else:  # its routes are gone: it may do nothing
                self.admin.set_permissions(user, configure="^$", write="^$", read="^$")
                self.admin.clear_topic_permissions(user)
                done.append((user, "no route any more: may publish and read nothing"))
        return done

    def managed(self) -> list[str]:
        return sorted(u["name"] for u in self.admin.users() if MANAGED_TAG in _tags(u))

    def listing(self) -> list[dict]:
        rows = []
        for user in self.managed():
            topics = self.admin.topic_permissions_of(user)
            permissions = self.admin.permissions_of(user)
            rows.append({"system": user, "write": permissions.get("write", "(none here)"),
                         "routing_keys": "; ".join(f"{t['exchange']} {t['write']}" for t in topics) or "-",
                         "read": permissions.get("read", "(none here)")})
        return rows

    def remove(self, system: str) -> None:
        if system not in self.managed():
            raise ConfigError(f"no broker user {system!r} made by gridbus")
        self.admin.delete_user(system)


def _tags(user: dict) -> list[str]:
    tags = user.get("tags", [])
    return tags.split(",") if isinstance(tags, str) else list(tags)
