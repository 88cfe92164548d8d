"""Broker users of the bus's own processes: one per role, each allowed only what its job needs.

The administrator account declares the topology (``gridbus routes apply``) and makes these
users (``gridbus broker users sync``); nothing else runs as it.  Each role's permissions are
derived here from the route table and ``bus.naming``, so they follow the routes:

    configure  what the role declares at run time: nothing, but the network publisher's
               exclusive leader queue (a role that may not declare checks that the topology
               exists at start instead: ``bus.topology.apply.ensure``)
    write      the exchanges it publishes to (``amq.default`` is the default exchange, which
               RabbitMQ cannot limit per queue: the roles that reply or dead-letter by queue
               name have it)
    read       the queues it consumes
    topics     on each topic exchange it publishes to, the routing keys it publishes with (a
               topic exchange a user may write to but has no topic permission on takes any key,
               so every one gets one)

Patterns are anchored and every name in them is escaped, so a name can never widen one.
The users carry the tag ``gridbus-service``; gridbus never touches a user without it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bus import naming, registry
from bus.errors import ConfigError
from bus.network import delivery_topology as network_names
from bus.outages import names as outage_names
from bus.routes.model import Route, RouteTable

SERVICE_TAG = "gridbus-service"
DEFAULT_EXCHANGE = "amq.default"  # the default exchange's name in RabbitMQ's permission checks
NOTHING = "^$"
# the gateway serves these sources (bus/cli/gateway.py SERVED)
GATEWAY_SOURCES = ("http-push", "http-request", "gis-push")
# kombu's native delayed delivery: a retry is published to the top level with 28 delay bits
# before the key (bus/worker/task.py schedule_retry)
RETRY_EXCHANGE = "celery_delayed_27"
_DELAY_BITS = r"(?:[01]\.){28}"
# what a route id may be, inside a pattern (naming.ROUTE_ID_PATTERN without its anchors)
_ROUTE_ID = naming.ROUTE_ID_PATTERN.pattern.removeprefix("^").removesuffix("$")
_ANY_WORD = r"[^.]+"


def _alternatives(parts) -> str:
    parts = sorted(set(parts))
    return "^(" + "|".join(parts) + ")$" if parts else NOTHING


def exact(names) -> str:
    """A permission pattern matching exactly these names, each escaped (``^$``: none)."""
    return _alternatives(re.escape(n) for n in names)


@dataclass(frozen=True)
class Role:
    """One bus role's broker user and its permissions (patterns as RabbitMQ takes them)."""

    name: str
    job: str
    configure: str = NOTHING
    write: str = NOTHING
    read: str = NOTHING
    topics: tuple[tuple[str, str], ...] = ()  # (topic exchange, write pattern of its keys)
    tags: tuple[str, ...] = (SERVICE_TAG,)

    @property
    def user(self) -> str:
        return f"{naming.PREFIX}-{self.name}"


@dataclass
class _Grants:
    """What a role does, collected as names (escaped later) and key patterns (already regexes)."""

    configure: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    read_patterns: set[str] = field(default_factory=set)
    keys: dict[str, set[str]] = field(default_factory=dict)  # topic exchange -> key regexes

    def publish(self, exchange: str, *key_patterns: str) -> None:
        self.write.add(exchange)
        if key_patterns:
            self.keys.setdefault(exchange, set()).update(key_patterns)

    def on_route(self, *routes: Route) -> None:
        """Publish on the ingress exchange with exactly these routes' keys."""
        for route in routes:
            self.publish(naming.INGRESS_EXCHANGE, re.escape(naming.route_routing_key(route.id)))

    def role(self, name: str, job: str, tags: tuple[str, ...] = (SERVICE_TAG,)) -> Role:
        read = sorted(re.escape(q) for q in self.read) + sorted(self.read_patterns)
        return Role(name, job, configure=exact(self.configure), write=exact(self.write),
                    read=_alternatives(read),
                    topics=tuple((ex, _alternatives(keys)) for ex, keys in sorted(self.keys.items())),
                    tags=tags)


def _retries(grants: _Grants, routes) -> None:
    """A worker's retries (into the delay levels with the route's key) and dead letters."""
    if not routes:
        return
    ids = "|".join(sorted(re.escape(r.id) for r in routes))
    grants.publish(RETRY_EXCHANGE, rf"{_DELAY_BITS}route\.(?:{ids})")
    grants.write.update(naming.dead_letter_exchange_name(r.id) for r in routes)


def _destinations(grants: _Grants, routes, subscribers) -> None:
    """What the destinations of ``routes`` publish: canonical events, and ``amqp`` destinations'
    receiving exchanges (with their literal key where the exchange is a topic exchange)."""
    for route in routes:
        for endpoint in route.destinations:
            if endpoint.connector == "events" and subscribers:
                ids = "|".join(sorted(re.escape(r.id) for r in subscribers))
                # <Noun>.<verb>.<source>.route.<subscriber> (connectors/pubsub.py)
                grants.publish(naming.EVENTS_EXCHANGE, rf"{_ANY_WORD}\.{_ANY_WORD}\.{_ANY_WORD}\.route\.(?:{ids})")
            elif endpoint.connector == "amqp":
                options = endpoint.options
                if options.get("exchange_type", "direct") == "topic":
                    grants.publish(options["exchange"], re.escape(options["routing_key"]))
                else:
                    grants.publish(options["exchange"])


def _base(routes, *more: str) -> set[str]:
    """What a role that runs ``routes`` always writes (trace events; replies and dead letters by
    queue name); nothing when it has no route to run (its user may then do nothing)."""
    return {naming.TRACE_EXCHANGE, DEFAULT_EXCHANGE, *more} if routes else set()


def _serves(route: Route, method: str) -> bool:
    return hasattr(registry.connector(route.source.connector), method)


def roles(routes: RouteTable) -> list[Role]:
    """Every bus role and its permissions for ``routes``."""
    everything = list(routes)
    subscribers = [r for r in everything if r.source.connector == "subscription"]
    deliveries, requests = list(routes.of_kind("deliveries")), list(routes.of_kind("requests"))
    ordered, correlated = list(routes.ordered_routes()), list(routes.correlated_routes())
    found = []

    # the Celery worker: consumes its routes' queues; retries, dead letters, reconciliation
    # records (to the ingress, by queue name) and what its destinations publish
    worker = _Grants(read={r.queue_name for r in deliveries}, write=_base(deliveries))
    _retries(worker, deliveries)
    _destinations(worker, deliveries, subscribers)
    found.append(worker.role("worker", "gridbus worker --kind deliveries: consumes the delivery routes"))

    # the request worker (event loop): as the worker, and replies to reply_to queues by name
    request = _Grants(read={r.queue_name for r in requests}, write=_base(requests))
    _retries(request, requests)
    _destinations(request, requests, subscribers)
    found.append(request.role("request-worker", "gridbus worker --kind requests: consumes the request routes, "
                                                "replies"))

    # the ingress: publishes what its sources take in on their routes; reads the worker's chunk
    # outcomes and the raw messages of AMQP sources; dead-letters those it cannot take;
    # publishes each file's FileReconciliation event
    taken = [r for r in everything if _serves(r, "serve") and r.source.connector not in GATEWAY_SOURCES]
    ingress = _Grants(read={naming.RECONCILIATION_QUEUE}, write={naming.TRACE_EXCHANGE})
    ingress.on_route(*taken)
    for route in taken:
        if route.source.connector == "amqp-in":
            ingress.read.add(naming.inbound_queue_name(route.id))
            ingress.write.add(naming.dead_letter_exchange_name(route.id))
    systems = {r.source.system for r in taken} | {"unknown"}
    ingress.publish(naming.EVENTS_EXCHANGE, *(re.escape(naming.events_routing_key("FileReconciliation", "created", s))
                                              for s in systems))
    found.append(ingress.role("ingress", "gridbus ingress: file drops and AMQP sources onto their routes"))

    # the gateway: pushes and requests onto their routes, replies from gridbus.replies, and
    # asynchronous replies onto the callback route
    gateway = _Grants(read={naming.REPLIES_QUEUE}, write={naming.TRACE_EXCHANGE})
    gateway.on_route(*(r for r in everything if r.source.connector in GATEWAY_SOURCES or
                       r.source.connector == "replies"))
    found.append(gateway.role("gateway", "gridbus gateway: HTTP pushes and requests onto their routes"))

    # the recorder: reads the trace queue, publishes nothing
    found.append(_Grants(read={naming.TRACE_QUEUE}).role("recorder", "gridbus recorder: trace events into the store"))

    # the keeper: reads every dead-letter queue it finds on the broker (also those of routes
    # gone from the files: their letters are kept), found through the management API, hence the
    # management tag (it sees the vhost's queues; it may read only dead-letter queues)
    keeper = _Grants(read_patterns={re.escape(naming.dead_letter_queue_name("")) + _ROUTE_ID})
    found.append(keeper.role("keeper", "gridbus keeper: dead letters into the store",
                             tags=(SERVICE_TAG, "management")))

    # the network publisher (one leader: an exclusive queue it declares) and delivery
    network = _Grants(configure={network_names.PUBLISHER_LEADER_QUEUE} if ordered else set(),
                      write=_base(ordered, network_names.UPDATES_EXCHANGE))
    for route in ordered:
        network.read.update(route.queues)
    found.append(network.role("network", "gridbus network publish and deliver: the ordered routes"))

    # the outage correlator: routes events into partitions, ticks and verification requests
    # onto routes, outages to the ADMS (an amqp destination), dead letters by queue name
    outages = _Grants(write=_base(correlated, outage_names.EXCHANGE))
    for route in correlated:
        outages.read.update(route.queues)
        outages.on_route(route)
        if route.correlate.verify_route:
            outages.on_route(routes.get(route.correlate.verify_route))
    _destinations(outages, correlated, subscribers)
    found.append(outages.role("outages", "gridbus outages run: the correlate routes"))
    return found


def role_named(routes: RouteTable, name: str) -> Role:
    for role in roles(routes):
        if name in (role.name, role.user):
            return role
    raise KeyError(name)


class ServiceUsers:
    """Make the roles' users and (re-)apply their permissions, through the management API as
    the administrator."""

    def __init__(self, admin, routes: RouteTable):
        self.admin = admin
        self.routes = routes

    def sync(self, passwords: Path | None = None) -> list[tuple[str, str]]:
        """Every role's user with its permissions from the routes; (user, what happened).

        With ``passwords`` (a directory), a role whose file ``passwords/<user>`` exists gets
        that password, a missing one a new one written there (owner-only); without it, users
        that exist keep their password and missing ones are not made (nobody would know it)."""
        from bus import secret_files

        folder = secret_files.directory(passwords) if passwords is not None else None
        existing = {u["name"]: u for u in self.admin.users()}
        done = []
        for role in roles(self.routes):
            user = existing.get(role.user)
            if user is not None and SERVICE_TAG not in _tags(user):
                raise ConfigError(f"broker user {role.user!r} exists and was not made by gridbus; not touching it")
            said = []
            if folder is not None:
                password, made = secret_files.password(folder, role.user)
                # PUT sets the tags too: a user made by an older gridbus gets the role's tags
                self.admin.put_user(role.user, password, ",".join(role.tags))
                said.append(f"password {'made, in' if made else 'set from'} {folder / role.user}")
            elif user is None:
                done.append((role.user, "missing: not made (give --passwords DIR to make it)"))
                continue
            self._apply(role)
            done.append((role.user, "; ".join(said + [_summary(role)])))
        return done

    def _apply(self, role: Role) -> None:
        """Topic permissions before the vhost's: a new user can do nothing until the latter are
        set, and a topic exchange without its topic permission would take any key."""
        wanted = dict(role.topics)
        stale = {t["exchange"] for t in self.admin.topic_permissions_of(role.user)} - set(wanted)
        if stale:
            # the API clears all of a user's topic permissions at once: no writing meanwhile
            self.admin.set_permissions(role.user, configure=role.configure, write=NOTHING, read=role.read)
            self.admin.clear_topic_permissions(role.user)
        for exchange, keys in role.topics:
            self.admin.set_topic_permissions(role.user, exchange, write=keys, read=NOTHING)
        self.admin.set_permissions(role.user, configure=role.configure, write=role.write, read=role.read)

    def listing(self) -> list[dict]:
        """The service users on the broker, with the permissions the broker holds for them."""
        made = {u["name"] for u in self.admin.users() if SERVICE_TAG in _tags(u)}
        rows = []
        for role in roles(self.routes):
            if role.user not in made:
                continue
            permissions = self.admin.permissions_of(role.user)
            topics = self.admin.topic_permissions_of(role.user)
            rows.append({"system": role.user, "role": role.name,
                         "configure": permissions.get("configure", "(none here)"),
                         "write": permissions.get("write", "(none here)"),
                         "routing_keys": "; ".join(f"{t['exchange']} {t['write']}" for t in topics) or "-",
                         "read": permissions.get("read", "(none here)")})
        return rows


def _summary(role: Role) -> str:
    def count(pattern: str) -> int:
        return 0 if pattern == NOTHING else pattern.count("|") + 1
    return (f"configure {count(role.configure)}, write {count(role.write)}, read {count(role.read)}, "
            f"topic keys on {len(role.topics)} exchange(s)")


def _tags(user: dict) -> list[str]:
    tags = user.get("tags", [])
    return tags.split(",") if isinstance(tags, str) else list(tags)
