"""`gridbus broker users`: RabbitMQ users of the systems that publish to or read from the bus over
AMQP, and of the bus's own processes (one service user per role, bus/service_users.py)."""
from __future__ import annotations

from pathlib import Path

import click

from bus.broker_admin import BrokerAdmin
from bus.broker_users import SourceUsers
from bus.cli.common import echo_list, fails_cleanly, json_option, routes_from, settings, table
from bus.service_users import ServiceUsers


def _users(paths) -> SourceUsers:
    s = settings()
    return SourceUsers(BrokerAdmin(s.management_url, s.vhost), routes_from(paths))


def _service_users(paths) -> ServiceUsers:
    s = settings()
    return ServiceUsers(BrokerAdmin(s.management_url, s.vhost), routes_from(paths))


@click.group("broker")
def broker():
    """The broker's side of the bus: users of the systems that talk to it over AMQP."""


@broker.group("users")
def users():
    """Per-system RabbitMQ users, and a service user per bus role: each may publish only
    its own routing keys and read only its own queues.

    What a system may publish comes from the route files (its amqp-in routes),
    what it may read from the amqp destinations whose reader it is (their
    queue); it may declare nothing.  The password is printed once and the
    broker keeps only its salted hash.

    The bus's processes run as service users (tag gridbus-service): gridbus-worker,
    gridbus-request-worker, gridbus-ingress, gridbus-gateway, gridbus-recorder,
    gridbus-keeper, gridbus-network and gridbus-outages, made by `sync --passwords DIR`
    with the permissions their role needs from the routes (docs/security.md).  The
    administrator account only makes them and declares the topology (gridbus routes apply).
    """


_routes_dir = click.option("--routes-dir", "paths", multiple=True, type=click.Path(),
                           help="Route files or folders (default: $GRIDBUS_ROUTES).")


@users.command("add")
@click.argument("system")
@_routes_dir
@fails_cleanly
def add(system, paths):
    """Create SYSTEM's user (or give it a new password); prints the password once.

    \b
    Examples:
      gridbus broker users add hes-b > hes-b.password
      gridbus broker users add adms > adms.password    # may consume adms.outages only
    """
    click.echo(_users(paths).add(system))


@users.command("sync")
@_routes_dir
@click.option("--passwords", "passwords", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Make the missing service users: DIR/<user> holds each one's password; a file "
                                  "that exists is used (e.g. a Docker secret made beforehand), a missing one is "
                                  "made there, readable by its owner only (0600, DIR 0700).  A file or DIR "
                                  "others may read is refused.  Passwords are never printed.")
@fails_cleanly
def sync(paths, passwords):
    """Re-apply every gridbus-made user's permissions from the current routes, and make the
    bus's service users (with --passwords) and set theirs.

    Run as the administrator (GRIDBUS_MANAGEMENT_URL), after `gridbus routes apply`; safe to
    run again, and twice at once.

    \b
    Examples:
      gridbus routes apply && gridbus broker users sync --passwords /run/gridbus/secrets
      gridbus broker users sync     # after a route change: the permissions follow the routes
    """
    done = _service_users(paths).sync(passwords) + _users(paths).sync()
    click.echo(table([list(d) for d in done], ["user", "may publish / read"]) if done else "no gridbus users")


@users.command("list")
@_routes_dir
@json_option
@fails_cleanly
def list_users(paths, as_json):
    """The gridbus-made users and what each may publish and read (never a password): the
    systems' users, then the service users with their role (only they have one).

    \b
    Examples:
      gridbus broker users list
      gridbus broker users list --json | jq -r '.[] | select(.role) | .system'
    """
    rows = _users(paths).listing() + _service_users(paths).listing()
    echo_list(rows, as_json,
              {"user": "system", "role": lambda r: r.get("role", "-"),
               "declares": lambda r: r.get("configure", "^$"), "exchanges": "write",
               "routing keys": "routing_keys", "queues": "read"},
              "no gridbus users")


@users.command("remove")
@click.argument("system")
@_routes_dir
@fails_cleanly
def remove(system, paths):
    """Delete SYSTEM's user: its connections are refused from now on.

    \b
    Example:
      gridbus broker users remove hes-b
    """
    _users(paths).remove(system)
    click.echo(f"removed {system}")
