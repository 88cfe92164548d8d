"""`gridbus recorder` and `gridbus trace`: where did this message, or this meter's data, go?"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time

import click

from bus.cli.common import echo_json, fails_cleanly, json_option, parse_duration, settings, setup_logging
from bus.errors import ConfigError
from bus.tracing.store import TraceStore, open_store

DEFAULT_RETENTION = "7d"


def trace_store() -> TraceStore:
    """$GRIDBUS_TRACE_STORE (a postgresql:// URL or a file), else $GRIDBUS_STATE_STORE, else
    $GRIDBUS_HOME/state/trace.sqlite."""
    from bus.state_store import store_location

    return open_store(store_location("GRIDBUS_TRACE_STORE", "trace.sqlite"))


def parse_time(text: str | None) -> float | None:
    """ISO 8601 (local time if no offset), or an age like 2h meaning 'two hours ago'."""
    if not text:
        return None
    if text[-1] in "smhd" and text[:-1].replace(".", "").isdigit():
        return time.time() - parse_duration(text)
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise ConfigError(f"not a time: {text!r} (ISO 8601 like 2026-11-25T00:00, or an age like 24h)") from exc


@click.command("recorder")
@click.option("--retention", default=DEFAULT_RETENTION, show_default=True, help="Prune events older than this.")
@click.option("--prune-every", default="60s", show_default=True, help="How often to prune.")
@click.option("--nice", default=10, show_default=True, type=click.IntRange(0, 19),
              help="CPU niceness: recording is background work, it yields to the data path.")
@click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics of the whole bus, counted from the trace events, at "
                   "http://HOST:PORT/metrics (0: not served).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def recorder(retention, prune_every, nice, metrics_port, metrics_host, loglevel):
    """Record trace events from the bus into the trace store ($GRIDBUS_HOME/state/trace.sqlite).

    Runs until stopped (SIGTERM); its log goes to stderr; `gridbus trace` reads what it recorded.

    \b
    Example:
      gridbus recorder --retention 14d --metrics-port 9464
    """
    from bus.tracing.recorder import serve

    setup_logging(loglevel)
    metrics = None
    if metrics_port:
        from prometheus_client import start_http_server

        from bus.tracing.metrics import TraceMetrics

        metrics = TraceMetrics()
        try:
            start_http_server(metrics_port, metrics_host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(f"metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc}") from exc
        click.echo(f"recorder: metrics at http://{metrics_host}:{metrics_port}/metrics", err=True)
    if nice and hasattr(os, "nice"):
        # on a busy host the recorder waits its turn: the events wait in their queue, batches
        # grow (cheaper per event), and no request's reply waits behind a trace insert
        os.nice(nice)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve(settings().broker_url, trace_store(), stop, parse_duration(retention), parse_duration(prune_every),
          metrics)


def _clock(at: float) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def describe(e: dict) -> str:
    kind = e["kind"]
    if kind == "received":
        return f"{e.get('source', '')} {e.get('file', '')} lines {e.get('first_line')}-{e.get('last_line')}"
    if kind == "published":
        return f"{e.get('exchange')} [{e.get('routing_key')}] confirm {e.get('confirm_s', 0) * 1000:.0f} ms"
    if kind == "consumed":
        return f"{e.get('worker')} from {e.get('queue')}, waited {e.get('waited_s', 0) * 1000:.0f} ms"
    if kind == "transformed":
        return (f"{' > '.join(e.get('chain', []))}: {e.get('rows_in')} rows in, {e.get('readings')} readings, "
                f"{e.get('events')} events, {e.get('rejected')} rejected ({e.get('duration_s', 0) * 1000:.0f} ms)")
    if kind == "delivered":
        return f"{e.get('destination')} {e.get('status')} ({e.get('duration_s', 0) * 1000:.0f} ms)"
    if kind == "retried":
        return f"attempt {e.get('attempt')} in {e.get('delay_s')} s for {','.join(e.get('destinations') or [])}: {e.get('reason')}"
    if kind == "dead-lettered":
        return f"{e.get('reason')}"
    if kind == "replayed":
        return f"as {e.get('message_id')} (from {e.get('replayed_from')})"
    if kind == "refused":
        return f"{e.get('source')} on {e.get('route')}: {e.get('status')} {e.get('code')}"
    return ""


def render_tree(events: list[dict]) -> list[str]:
    """Messages as a tree (a replay under what it replays), each with its hops and their times."""
    by_message: dict[str | None, list[dict]] = {}
    for e in events:
        by_message.setdefault(e.get("message_id"), []).append(e)
    parent = {m: next((e.get("causation_id") for e in evs if e.get("causation_id")), None)
              for m, evs in by_message.items()}
    roots = [m for m in by_message if m is not None and parent.get(m) not in by_message]
    lines: list[str] = []
    for e in by_message.get(None, []):
        lines.append(f"{_clock(e['at'])}  {e['kind']:<13} {describe(e)}")

    def walk(message: str, depth: int) -> None:
        evs = by_message[message]
        first = evs[0]
        pad = "    " * depth
        lines.append(f"{pad}{'└─ ' if depth else ''}message {message}  route {first.get('route')}  "
                     f"correlation {first.get('correlation_id')}")
        previous = None
        for e in evs:
            delta = f"+{(e['at'] - previous) * 1000:.0f}ms" if previous else ""
            previous = e["at"]
            attempt = f"#{e['attempt']}" if e.get("attempt") and e["attempt"] > 1 else ""
            lines.append(f"{pad}    {_clock(e['at'])} {delta:>9}  {e['kind']:<13}{attempt:<3} {describe(e)}")
        for child in [m for m in by_message if parent.get(m) == message]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines


def outcome_of(events: list[dict]) -> str:
    kinds = [e["kind"] for e in events]
    for final in ("dead-lettered", "delivered", "retried"):
        if final in kinds:
            return final if final != "retried" or "delivered" not in kinds else "delivered"
    return kinds[-1] if kinds else "?"


@click.command("trace")
@click.argument("ident", required=False)
@click.option("--meter", help="Every batch, alarm and command that touched this meter.")
@click.option("--route", help="Only this route (with --failed, or with tail).")
@click.option("--failed", is_flag=True, help="Messages dead-lettered (with --route, since --since).")
@click.option("--since", help="ISO time or an age (24h).")
@click.option("--until", help="ISO time or an age.")
@json_option
@click.option("--seconds", type=float, default=None, help="With tail: stop after this long.")
@fails_cleanly
def trace(ident, meter, route, failed, since, until, as_json, seconds):
    """Where a message went, and what touched a meter.

    \b
    gridbus trace ID                    message or correlation id: the tree of hops, retries, replays
    gridbus trace --meter SERIAL [--since T] [--until T]
    gridbus trace --route R --failed [--since T]
    gridbus trace tail [--route R]      follow live

    With --json: the events as one JSON list (each with `kind`, `at` in epoch seconds,
    `message_id`, `correlation_id`, `route`); `tail --json` writes one event a line as
    it comes, since a stream never ends to close a list.

    \b
    Example:
      gridbus trace --route hes-a-csv-to-mdms-1 --failed --since 24h --json | jq -r '.[].message_id'
    """
    store = trace_store()
    if ident == "tail":
        return tail(store, route, as_json, seconds)
    if ident:
        events = store.conversation(ident)
        if not events:
            raise ConfigError(f"no trace of {ident!r} (is `gridbus recorder` running? events older than the "
                              "retention are pruned)")
        if as_json:
            echo_json(events)
        else:
            click.echo("\n".join(render_tree(events)))
    elif meter:
        ids = store.messages_for_meter(meter, parse_time(since), parse_time(until))
        events = store.events_of(ids)
        if as_json:
            echo_json(events)
        elif not ids:
            click.echo(f"no message touched meter {meter}" + (" in that period" if since or until else ""))
        else:
            for message_id in dict.fromkeys(ids):
                evs = [e for e in events if e["message_id"] == message_id]
                if evs:
                    click.echo(f"{_clock(evs[0]['at'])}  {message_id}  {evs[0].get('route')}  "
                               f"{evs[0].get('noun', '')}  {outcome_of(evs)}")
    elif failed or route:
        events = store.route_events(route, parse_time(since), ("dead-lettered",) if failed else None)
        if as_json:
            echo_json(events)
        else:
            for e in events:
                click.echo(f"{_clock(e['at'])}  {e.get('message_id')}  {e.get('route')}  {e['kind']}  {describe(e)}")
            if not events:
                click.echo("nothing")
    else:
        raise ConfigError("say what to trace: an id, --meter SERIAL, --route R --failed, or tail")
    dropped = store.dropped_total()
    if dropped:  # on stderr: with --json too, a script's log says the trace may have gaps
        click.echo(f"note: {dropped} trace events were dropped (recorder away and the trace queue full); "
                   "traces may have gaps", err=True)


def tail(store: TraceStore, route: str | None, as_json: bool, seconds: float | None) -> None:
    """Follow trace events as the recorder stores them."""
    last = time.time()
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for e in store.after(last, route):
                last = max(last, e["at"])
                click.echo(json.dumps(e, default=str) if as_json else
                           f"{_clock(e['at'])}  {e.get('route')}  {e.get('message_id')}  {e['kind']:<13} {describe(e)}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
