"""`gridbus network show|stats|export|apply`: the bus's network model (substation → feeder → DT →
consumer), effective-dated, for operators and the GIS team."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bus.cli.common import Progress, echo_json, fails_cleanly, json_option, quiet_option, table
from bus.cli.trace import parse_time
from bus.errors import ConfigError
from bus.network.export import write_snapshot
from bus.network.model import read_document
from bus.network.store import NetworkStore, open_store

at_option = click.option("--at", "at", metavar="TIME",
                         help="As of this instant: ISO 8601 (local time if no offset, e.g. "
                              "2026-11-03T02:00+05:30), or an age like 2h. Default: now.")


def _store() -> NetworkStore:
    return open_store()


@click.group("network")
def network():
    """The network model the bus keeps from the GIS ($GRIDBUS_NETWORK_STORE, a postgresql:// URL, or
    by default $GRIDBUS_HOME/state/network.sqlite).

    \b
    Example:
      gridbus network show DT-000001 --at 2026-11-03T02:00+05:30
    """


@network.command("show")
@click.argument("mrid")
@at_option
@json_option
@fails_cleanly
def show(mrid, at, as_json):
    """An element as of TIME: its attributes, its path up to the substation, and how many elements
    hang under it.

    \b
    Example:
      gridbus network show FDR-0001 --json
    """
    store = _store()
    t = parse_time(at)
    path = store.path(mrid, t)
    if not path:
        history = store.history(mrid)
        when = "then" if at else "now"
        hint = f" (it has {len(history)} version(s): see --at)" if history else ""
        raise ConfigError(f"no element {mrid} {when}{hint}")
    element = {**path[0], "path": [{"mrid": p["mrid"], "type": p["type"], "name": p["name"]} for p in path[1:]],
               "children": store.children_counts(mrid, t)}
    if as_json:
        echo_json(element)
        return
    click.echo(f"{element['type']} {mrid}" + (f"  {element['name']}" if element["name"] else ""))
    click.echo(f"  version {element['version']}, valid from {element['validFrom']}"
               f"{' to ' + element['validTo'] if element['validTo'] else ''} (change {element['changeId']})")
    for key, value in sorted(element["attributes"].items()):
        click.echo(f"  {key}: {value}")
    if element["path"]:
        click.echo("  under: " + " → ".join(f"{p['type']} {p['mrid']}" for p in element["path"]))
    for type_, count in element["children"].items():
        click.echo(f"  {type_}s under it: {count:,}")


@network.command("stats")
@json_option
@fails_cleanly
def stats(as_json):
    """Elements per type now, changes applied, consumer-path updates waiting in the outbox.

    \b
    Example:
      gridbus network stats --json
    """
    found = _store().stats()
    if as_json:
        echo_json(found)
        return
    click.echo(table([[t, f"{n:,}"] for t, n in found["elements"].items()], ["type", "now"]))
    click.echo(f"changes applied: {found['changesApplied']:,}")
    click.echo(f"consumer-path updates waiting to be published: {found['outboxPending']:,}")


@network.command("export")
@at_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@quiet_option
@fails_cleanly
def export(at, out, quiet):
    """The consumer-indexing snapshot CSV as of TIME: one row per consumer with its DT, feeder and
    substation (the format of docs/network-formats.md), streamed.

    \b
    Example:
      gridbus network export --at 2026-11-01T00:00+05:30 --out snapshot.csv
    """
    store = _store()
    progress = Progress(every_s=10, quiet=quiet or not sys.stderr.isatty())
    rows = store.export_rows(parse_time(at))
    if out:
        with open(out, "w", newline="", encoding="utf-8") as f:
            count = write_snapshot(rows, f, lambda n: progress.show(f"{n:,} consumers"))
    else:
        count = write_snapshot(rows, sys.stdout, lambda n: progress.show(f"{n:,} consumers"))
    progress.done()
    if out and not quiet:
        click.echo(f"{count:,} consumers → {out}", err=True)


@network.command("apply")
@click.argument("file", type=click.File("rb"))
@click.option("--all", "show_all", is_flag=True, help="List every change, not only those not applied.")
@json_option
@quiet_option
@fails_cleanly
def apply(file, show_all, as_json, quiet):
    """Apply a change document (JSON, docs/network-formats.md) from FILE ('-': stdin) in one
    transaction; every change is applied or refused with a reason.  Exit 1 if any was refused.

    \b
    Example:
      gridbus network apply changes.json
    """
    changes, header = read_document(file.read())
    progress = Progress(quiet=quiet or len(changes) <= 10_000)  # a small document needs no progress
    result = _store().apply(changes, document_id=str(header.get("MessageID") or "") or None,
                            progress=lambda n: progress.show(f"{n:,} of {len(changes):,} changes"))
    progress.done()
    listed = [o for o in result.outcomes if show_all or o.status != "applied"]
    if as_json:
        echo_json({**result.summary(), "outcomes": [o.as_dict() for o in listed]})
    else:
        for o in listed:
            click.echo(f"changes[{o.index}] {o.change_id or '-'} {o.mrid or '-'}: {o.status}"
                       + (f" {o.code.value}: {o.reason}" if o.code else ""))
        s = result.summary()
        click.echo(f"{s['result']}: {s['applied']:,} applied, {s['duplicate']:,} duplicate, {s['refused']:,} refused; "
                   f"{s['updates']:,} consumer-path updates written")
    if result.refused:
        sys.exit(1)
