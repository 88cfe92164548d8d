"""`gridbus routes validate|list|plan|apply`."""
from __future__ import annotations

import click

from bus.broker_admin import BrokerAdmin
from bus.cli.common import fails_cleanly, routes_from, settings, table
from bus.topology import compile_topology
from bus.topology.apply import apply as apply_plan
from bus.topology.plan import make_plan


@click.group("routes")
def routes_group():
    """Route files: check them, list them, compare with and apply to the broker."""


@routes_group.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@fails_cleanly
def validate(paths):
    """Check route files (default: $GRIDBUS_ROUTES or ./routes); print file:line errors, exit 1 on any."""
    table_ = routes_from(paths)
    click.echo(f"{len(table_)} route(s) valid")


@routes_group.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@fails_cleanly
def list_routes(paths):
    """Table of routes: use case, source, method, transform chain, destinations, queue."""
    rows = [[r.use_case or "", r.id, f"{r.source.system} ({r.source.connector})", r.method,
             " > ".join(r.transform), ", ".join(f"{d.system} ({d.connector})" for d in r.destinations),
             f"{r.retry.attempts}x/{r.retry.max_delay_s:g}s", r.queue_name]
            for r in routes_from(paths)]
    click.echo(table(rows, ["uc", "route", "source", "method", "transform", "destinations",
                            "retry", "queue"]))


@routes_group.command("plan")
@click.argument("paths", nargs=-1, type=click.Path())
@fails_cleanly
def plan(paths):
    """Show what `apply` would change on the live broker; changes nothing.

    Exit 0 when the broker matches the routes, 2 when something differs."""
    p = make_plan(compile_topology(routes_from(paths)), BrokerAdmin(settings().management_url, settings().vhost))
    if p.in_sync:
        click.echo("broker matches the routes: nothing to change")
        return
    click.echo("\n".join(p.lines()))
    click.echo(f"\n{p.to_declare} to declare, {len(p.changed_queues) + len(p.changed_exchanges)} "
               f"differing, {len(p.extra_queues) + len(p.extra_exchanges) + len(p.extra_bindings)} "
               "on the broker only")
    raise SystemExit(2)


@routes_group.command("apply")
@click.argument("paths", nargs=-1, type=click.Path())
@fails_cleanly
def apply(paths):
    """Declare the missing exchanges, queues and bindings (idempotent).

    Never deletes and never redeclares a queue whose arguments differ: that
    would lose its messages; the plan shows such queues for the operator."""
    s = settings()
    topology = compile_topology(routes_from(paths))
    p = make_plan(topology, BrokerAdmin(s.management_url, s.vhost))
    declared = apply_plan(topology, p, s.broker_url)
    click.echo(f"declared {declared} object(s)" if declared else "nothing to change")
    for name, why in p.changed_queues + p.changed_exchanges:
        click.echo(f"warning: {name} differs and was left alone: {why}", err=True)
