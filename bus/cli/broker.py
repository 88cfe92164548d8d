"""`gridbus broker users`: RabbitMQ users of the systems that publish to or read from the bus over AMQP."""
from __future__ import annotations

import click

from bus.broker_admin import BrokerAdmin
from bus.broker_users import SourceUsers
from bus.cli.common import echo_list, fails_cleanly, json_option, routes_from, settings, table


def _users(paths) -> SourceUsers:
    s = settings()
    return SourceUsers(BrokerAdmin(s.management_url, s.vhost), routes_from(paths))


@click.group("broker")
def broker():
    """The broker's side of the bus: users of the systems that talk to it over AMQP."""


@broker.group("users")
def users():
    """Per-system RabbitMQ users: each may publish only its own routes' routing keys
    and read only its own queues.

    What a system may publish comes from the route files (its amqp-in routes),
    what it may read from the amqp destinations whose reader it is (their
    queue); it may declare nothing.  The password is printed once and the
    broker keeps only its salted hash.
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
@fails_cleanly
def sync(paths):
    """Re-apply every gridbus-made user's permissions from the current routes.

    \b
    Example:
      gridbus routes apply && gridbus broker users sync
    """
    done = _users(paths).sync()
    click.echo(table([list(d) for d in done], ["system", "may publish / read"]) if done else "no gridbus users")


@users.command("list")
@_routes_dir
@json_option
@fails_cleanly
def list_users(paths, as_json):
    """The gridbus-made users and what each may publish and read (never a password).

    \b
    Examples:
      gridbus broker users list
      gridbus broker users list --json | jq -r '.[].system'
    """
    echo_list(_users(paths).listing(), as_json,
              {"system": "system", "exchanges": "write", "routing keys": "routing_keys", "queues": "read"},
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
