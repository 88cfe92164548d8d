"""`gridbus routes validate|list|plan|apply`."""
from __future__ import annotations

import click

from bus import broker_version
from bus.broker_admin import BrokerAdmin
from bus.cli.common import echo_json, echo_list, fails_cleanly, json_option, routes_from, settings
from bus.network.delivery_topology import partition_queue_name
from bus.routes import RouteTable
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
    """Check route files (default: $GRIDBUS_ROUTES or ./routes); print file:line errors, exit 1 on any.

    \b
    Example:
      gridbus routes validate routes/ && gridbus routes apply routes/
    """
    table_ = routes_from(paths)
    click.echo(f"{len(table_)} route(s) valid")


def _kind(r) -> str:
    """What runs the route: `worker --kind requests|deliveries`, or `network deliver` (ordered)."""
    return "ordered" if r.is_ordered else "requests" if r.waits_on_destination else "deliveries"


def _route_record(r) -> dict:
    record = {"id": r.id, "use_case": r.use_case, "description": r.description, "method": r.method,
              "kind": _kind(r),
              "source": {"system": r.source.system, "connector": r.source.connector},
              "transform": list(r.transform),
              "destinations": [{"system": d.system, "connector": d.connector} for d in r.destinations],
              "retry": {"attempts": r.retry.attempts, "max_delay_s": r.retry.max_delay_s},
              "queue": r.queue_name, "queues": list(r.queues), "file": r.file, "line": r.line}
    if r.is_ordered:  # retried in place until delivered; no route queue: its partitions
        o = r.ordered
        record.update(retry={"attempts": None, "in_place": True, "first_delay_s": o.first_delay_s,
                             "max_delay_s": o.max_delay_s},
                      queue=partition_queue_name(r.id, f"{{0..{o.partitions - 1}}}"),
                      ordered={"partitions": o.partitions, "batch_max": o.batch_max, "window_ms": o.window_ms})
    return record


def _retry_cell(r: dict) -> str:
    if r["retry"].get("in_place"):
        return f"in place/{r['retry']['max_delay_s']:g}s"
    return f"{r['retry']['attempts']}x/{r['retry']['max_delay_s']:g}s"


@routes_group.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@json_option
@fails_cleanly
def list_routes(paths, as_json):
    """Table of routes: use case, source, method, transform chain, destinations, queue.

    \b
    Examples:
      gridbus routes list
      gridbus routes list --json | jq -r '.[] | select(.source.connector == "file-drop") | .id'
    """
    echo_list([_route_record(r) for r in routes_from(paths)], as_json, {
        "uc": lambda r: r["use_case"] or "", "route": "id",
        "source": lambda r: f"{r['source']['system']} ({r['source']['connector']})", "method": "method",
        "transform": lambda r: " > ".join(r["transform"]),
        "destinations": lambda r: ", ".join(f"{d['system']} ({d['connector']})" for d in r["destinations"]),
        "retry": _retry_cell, "queue": "queue"},
        "no routes")


def _own_objects(route) -> dict:
    """The broker objects of this route alone: what the table compiles with it, less without it."""
    with_it, shared = compile_topology(RouteTable((route,))), compile_topology(RouteTable(()))
    return {"exchanges": sorted(set(with_it.exchanges) - set(shared.exchanges)),
            "queues": sorted(set(with_it.queues) - set(shared.queues)),
            "bindings": sorted(f"{b.source} -> {b.destination} [{b.routing_key}]"
                               for b in with_it.bindings - shared.bindings)}


@routes_group.command("show")
@click.argument("route_id")
@click.option("--routes-dir", "paths", multiple=True, type=click.Path(), help="Route files or folders.")
@json_option
@fails_cleanly
def show(route_id, paths, as_json):
    """One route: its keys, what runs it, and its own broker objects (queues, exchanges, bindings).

    \b
    Examples:
      gridbus routes show network-to-billing-1
      gridbus routes show hes-a-alarms --json | jq -r '.broker.queues[]'
    """
    route = routes_from(paths).get(route_id)
    record = {**_route_record(route), "broker": _own_objects(route)}
    if as_json:
        echo_json(record)
        return
    runs = {"ordered": "gridbus network deliver (a BatchConsumer per partition)",
            "requests": "gridbus worker --kind requests", "deliveries": "gridbus worker --kind deliveries"}
    click.echo(f"{route.id}  ({route.file}:{route.line})")
    lines = [("description", route.description), ("method", route.method), ("run by", runs[record["kind"]]),
             ("source", f"{route.source.system} ({route.source.connector})"),
             ("transform", " > ".join(route.transform) or "-"),
             ("destinations", ", ".join(f"{d.system} ({d.connector})" for d in route.destinations)),
             ("retry", _retry_cell(record))]
    if route.is_ordered:
        lines.append(("ordered", ", ".join(f"{k} {v}" for k, v in record["ordered"].items())))
    for label, key in (("exchanges", "exchanges"), ("queues", "queues"), ("bindings", "bindings")):
        objects = record["broker"][key]
        lines.append((label, f"{len(objects)}" + "".join(f"\n    {o}" for o in objects)))
    click.echo("\n".join(f"  {label:13} {value}" for label, value in lines))


def _plan_record(p) -> dict:
    def binding(b) -> dict:
        return {"source": b.source, "destination": b.destination, "destination_type": b.destination_type,
                "routing_key": b.routing_key}

    def changed(pairs) -> list[dict]:
        return [{"name": name, "why": why} for name, why in pairs]

    return {"in_sync": p.in_sync, "to_declare": p.to_declare,
            "missing": {"exchanges": p.missing_exchanges, "queues": p.missing_queues,
                        "bindings": [binding(b) for b in p.missing_bindings]},
            "differing": {"exchanges": changed(p.changed_exchanges), "queues": changed(p.changed_queues)},
            "broker_only": {"exchanges": p.extra_exchanges, "queues": p.extra_queues,
                            "bindings": [binding(b) for b in p.extra_bindings]}}


def _warn_outside_range(admin: BrokerAdmin) -> None:
    """On stderr, so that --json stays a document: a broker gridbus does not claim to support."""
    warning = broker_version.outside_range(admin.broker_version())
    if warning:
        click.echo(f"warning: {warning}", err=True)


@routes_group.command("plan")
@click.argument("paths", nargs=-1, type=click.Path())
@json_option
@fails_cleanly
def plan(paths, as_json):
    """Show what `apply` would change on the live broker; changes nothing.

    Exit 0 when the broker matches the routes, 2 when something differs (with --json too).

    \b
    Examples:
      gridbus routes plan
      gridbus routes plan --json | jq '.missing.queues'
    """
    admin = BrokerAdmin(settings().management_url, settings().vhost)
    p = make_plan(compile_topology(routes_from(paths)), admin)
    _warn_outside_range(admin)
    if as_json:
        echo_json(_plan_record(p))
    elif p.in_sync:
        click.echo("broker matches the routes: nothing to change")
    else:
        click.echo("\n".join(p.lines()))
        click.echo(f"\n{p.to_declare} to declare, {len(p.changed_queues) + len(p.changed_exchanges)} "
                   f"differing, {len(p.extra_queues) + len(p.extra_exchanges) + len(p.extra_bindings)} "
                   "on the broker only")
    if not p.in_sync:
        raise SystemExit(2)


@routes_group.command("apply")
@click.argument("paths", nargs=-1, type=click.Path())
@fails_cleanly
def apply(paths):
    """Declare the missing exchanges, queues and bindings (idempotent).

    Never deletes and never redeclares a queue whose arguments differ: that
    would lose its messages; the plan shows such queues for the operator.
    Prints one line when done (no progress: it takes seconds).

    \b
    Example:
      gridbus routes plan || gridbus routes apply
    """
    s = settings()
    topology = compile_topology(routes_from(paths))
    admin = BrokerAdmin(s.management_url, s.vhost)
    p = make_plan(topology, admin)
    _warn_outside_range(admin)
    declared = apply_plan(topology, p, s.broker_url)
    click.echo(f"declared {declared} object(s)" if declared else "nothing to change")
    for name, why in p.changed_queues + p.changed_exchanges:
        click.echo(f"warning: {name} differs and was left alone: {why}", err=True)


# the route author's commands, each in its own module
from bus.cli import routes_docs, routes_new, routes_test  # noqa: E402

for _module in (routes_test, routes_docs, routes_new):
    _module.register(routes_group)
