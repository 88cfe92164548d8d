"""`gridbus outages run|list|show|status`: outage identification (use case 3, docs/outages.md).

    run      the correlator process: routes outage events to their feeder's partition, runs the
             partitions' engines, sends CIM Outages to the ADMS (run two: each partition is taken
             by one, the other stands by)
    list     outages, newest first (--open, --feeder F)
    show     one outage: its document and timeline (gasps joined, decisions, verification, messages)
    status   per partition: checkpoint, log, unsent messages
"""
from __future__ import annotations

import signal
import threading

import click

from bus.cli.common import echo_json, echo_list, fails_cleanly, json_option, routes_from, settings, setup_logging
from bus.cli.common import utc_clock
from bus.outages.store import open_outage_store

routes_option = click.option("--routes-dir", "--routes", "routes_paths", multiple=True, type=click.Path(),
                             help="Route files or folders (default $GRIDBUS_ROUTES, else ./routes); their "
                                  "routes of method correlate are run.")


@click.group("outages")
def outages():
    """Outage identification: last gasps and first breaths correlated on the network model into
    CIM Outages for the ADMS (use case 3).  `gridbus outages run` is the process; the others
    read the outage store ($GRIDBUS_OUTAGE_STORE, default $GRIDBUS_HOME/state/outages.sqlite)."""


def _partitions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        parts = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise click.BadParameter(f"{text!r}: partition numbers separated by commas, e.g. 0,2") from None
    if not parts or parts[0] < 0:
        raise click.BadParameter(f"{text!r}: partition numbers from 0")
    return parts


@outages.command("run")
@routes_option
@click.option("--partitions", "partitions_text", metavar="K[,K...]",
              help="Serve only these partitions (default every one).  Two processes with 0,1 and 2,3 "
                   "split the work; two with the default stand by for each other.")
@click.option("--no-router", is_flag=True, help="Do not take events from the route queue (only partitions).")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def run(routes_paths, partitions_text, no_router, loglevel):
    """Run the outage correlator until SIGTERM.

    \b
    Example:
      gridbus outages run                    # every partition (a second one stands by)
      gridbus outages run --partitions 0,1   # share a storm with another process on 2,3
    """
    from bus.outages.service import serve

    setup_logging(loglevel)
    partitions = _partitions(partitions_text)
    table = routes_from(routes_paths)
    if not list(table.correlated_routes()):
        raise click.UsageError("no route of method correlate in the route files: nothing to run")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve(table, settings().broker_url, stop, partitions, route_events=not no_router)


@outages.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only outages still open.")
@click.option("--feeder", help="Only this feeder's outages.")
@click.option("--limit", default=200, show_default=True)
@json_option
@fails_cleanly
def list_(open_only, feeder, limit, as_json):
    """Outages, newest first.

    \b
    Example:
      gridbus outages list --open --feeder FDR-0002
    """
    rows = open_outage_store().outages(open_only, feeder, limit)
    echo_list(rows, as_json, {
        "outage": "mRID", "kind": "kind", "equipment": "equipment", "state": "state",
        "start": lambda r: utc_clock(r["start"]), "end": lambda r: utc_clock(r["end"]) if r["end"] else "",
        "meters": "metersAffected", "verified": lambda r: r["outageKind"] or "",
        "duration": lambda r: r["durationKind"] or "", "reason": lambda r: (r["closedReason"] or "")[:40]},
        "no outage" + (" open" if open_only else "") + (f" on feeder {feeder}" if feeder else ""))


@outages.command("show")
@click.argument("mrid")
@json_option
@fails_cleanly
def show(mrid, as_json):
    """One outage: its latest document, then its timeline (gasps joined, decisions, verification)
    and the messages sent for it.

    \b
    Example:
      gridbus outages show OUT-FDR-0002-000004
    """
    store = open_outage_store()
    found = store.outage(mrid)
    if found is None:
        raise click.ClickException(f"no outage {mrid!r} in {store.location}")
    timeline, messages = store.timeline(mrid), store.messages(mrid)
    if as_json:
        echo_json({**found, "timeline": timeline, "messages": messages})
        return
    doc = found["document"]
    eq = doc.get("Equipment") or {}
    period = doc.get("actualPeriod") or {}
    click.echo(f"{mrid}  {doc.get('kind')} outage of {eq.get('kind', '')} {eq.get('mRID', '')} "
               f"{eq.get('name') or ''}  ({found['state']})")
    click.echo(f"  start {period.get('start')}  end {period.get('end') or '-'}  reported {doc.get('reportedStartTime')}")
    click.echo(f"  meters affected {doc.get('metersAffected')} (originally {doc.get('originalMetersAffected')}), "
               f"restored {doc.get('customersRestored')}, reported {doc.get('metersReported')}; "
               f"{doc.get('outageKind')}, {doc.get('durationKind') or 'duration not yet known'}")
    for key in ("closedReason", "parentOutage", "absorbedInto", "nestedOutages"):
        if doc.get(key):
            click.echo(f"  {key}: {doc[key]}")
    click.echo("timeline:")
    for row in timeline:
        detail = {k: v for k, v in row.items() if k not in ("at", "what")}
        if "meters" in detail and isinstance(detail["meters"], list) and len(detail["meters"]) > 5:
            detail["meters"] = detail["meters"][:5] + ["..."]
        click.echo(f"  {utc_clock(row['at'])}  {row['what']:<24} {detail}")
    click.echo("messages:")
    for m in messages:
        click.echo(f"  {m['messageId']:<28} {m['kind']:<8} {m['verb']:<8} "
                   f"{'sent ' + utc_clock(m['sent']) if m['sent'] else 'NOT SENT YET'}")


@outages.command("status")
@json_option
@fails_cleanly
def status(as_json):
    """How many outages are open and closed, and how many messages wait to be sent."""
    counts = open_outage_store().counts()
    if as_json:
        echo_json(counts)
        return
    click.echo(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
