"""`gridbus network show|stats|export|apply|snapshot|held|approve|discard`: the bus's network model
(substation → feeder → DT → consumer), effective-dated, for operators and the GIS team."""
from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

import click

from bus.cli.common import Progress, echo_json, fails_cleanly, json_option, quiet_option, table
from bus.cli.operators import authenticated, password_stdin_option
from bus.cli.trace import parse_time
from bus.errors import ConfigError
from bus.network.export import write_snapshot
from bus.network.model import read_document
from bus.network.snapshot_apply import DEFAULT_MAX_RETIRE_SHARE, approve_held, discard_held, import_snapshot
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


def _echo_snapshot(outcome, as_json) -> None:
    report = outcome.report()
    if as_json:
        echo_json(report)
        return
    for item in report["rejectedLines"]:
        click.echo(f"line {item['line']}: rejected: {item['reason']}")
    for item in report.get("refusedChanges", []):
        click.echo(f"{item['changeId']} {item['mrid']}: {item['code']}: {item['reason']}")
    kinds = ", ".join(f"{n:,} {k}" for k, n in report["byKind"].items()) or "no change"
    click.echo(f"{report['status']}: {report['rowsRead']:,} rows read, {report['rowsAccepted']:,} accepted, "
               f"{report['rowsRejected']:,} rejected; {kinds}")
    if outcome.held_id:
        click.echo(f"held as {outcome.held_id}: {outcome.held_reason}; "
                   f"gridbus network approve {outcome.held_id} --user NAME")


@network.command("snapshot")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@at_option
@click.option("--max-retire-share", type=click.FloatRange(0, 1), default=DEFAULT_MAX_RETIRE_SHARE, show_default=True,
              help="Hold the snapshot for approval if it would retire more than this share of the consumers.")
@json_option
@quiet_option
@fails_cleanly
def snapshot(file, at, max_retire_share, as_json, quiet):
    """Diff a GIS consumer-indexing snapshot CSV against the store as of TIME (default now) and
    apply only the real changes; one that would retire too much of the network is held.

    \b
    Example:
      gridbus network snapshot gis-export-2026-11-03.csv --at 2026-11-03T00:00+05:30
    """
    progress = Progress(quiet=quiet or not sys.stderr.isatty())
    t = parse_time(at) if at else time.time()
    outcome = import_snapshot(_store(), file, t, max_retire_share,
                              progress=lambda n: progress.show(f"{n:,} changes"))
    progress.done()
    _echo_snapshot(outcome, as_json)


@network.command("held")
@json_option
@fails_cleanly
def held(as_json):
    """Snapshots held for a human: they would retire more than the allowed share of the network.

    \b
    Example:
      gridbus network held --json
    """
    found = _store().held()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no snapshot is held")
        return
    click.echo(table([[d["id"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["received"])),
                       f"{d['counts'].get('rowsRead', 0):,}", f"{d['counts'].get('changes', 0):,}", d["reason"]]
                      for d in found], ["id", "received", "rows", "changes", "reason"]))


@network.command("approve")
@click.argument("held_id")
@click.option("--user", default=getpass.getuser, show_default="the login name",
              help="The approver (an operator account with the approver role).")
@password_stdin_option
@json_option
@fails_cleanly
def approve(held_id, user, password_stdin, as_json):
    """Apply a held snapshot (diffed again as of its instant), as an approver.

    \b
    Example:
      gridbus network approve snapshot-984beb9e7ecbfdde --user bob
    """
    user = authenticated(user, password_stdin, ("approver",)).name
    outcome = approve_held(_store(), held_id, user)
    _echo_snapshot(outcome, as_json)
    if not as_json:
        click.echo(f"approved {held_id} by {user}")


@network.command("discard")
@click.argument("held_id")
@click.option("--user", default=getpass.getuser, show_default="the login name",
              help="The approver (an operator account with the approver role).")
@password_stdin_option
@fails_cleanly
def discard(held_id, user, password_stdin):
    """Drop a held snapshot: nothing of it is applied (its file stays where it was archived).

    \b
    Example:
      gridbus network discard snapshot-984beb9e7ecbfdde --user bob
    """
    user = authenticated(user, password_stdin, ("approver",)).name
    discard_held(_store(), held_id, user)
    click.echo(f"discarded {held_id} by {user}")


# other command groups of the network register here
import bus.cli.network_delivery  # noqa: E402,F401  (publish, deliver)
