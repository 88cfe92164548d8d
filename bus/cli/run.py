"""`gridbus worker`, `gridbus ingress` and `gridbus send`: the long-running processes and one-off publishing."""
from __future__ import annotations

import inspect
import json
import os
import signal
import threading
from pathlib import Path

import click

from bus import naming, readiness, registry, task_message
from bus.cli.common import fails_cleanly, routes_from, settings, setup_logging
from bus.envelope import Envelope
from bus.tls import destination_tls
from bus.errors import ConfigError
from bus.messaging.publisher import ConfirmingPublisher
from bus.routes.model import ROUTE_KINDS
from bus.topology import compile_topology
from bus.topology.apply import ensure as ensure_topology


@click.command("worker")
@click.option("--routes", "only", help="Comma-separated route ids (default: every route).")
@click.option("--routes-dir", "paths", multiple=True, type=click.Path(), help="Route files or folders.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes or threads (default: CPU count); with --pool asyncio, the messages "
                   "taken at once (default: 64).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "asyncio"]), default="prefork", show_default=True,
              help="asyncio for request-response routes: a request waits on its destination, and one "
                   "event loop waits on hundreds without a thread each (threads: Celery's thread pool).")
@click.option("--kind", type=click.Choice(ROUTE_KINDS), default="all", show_default=True,
              help="requests: the request-response routes and the reply callbacks (each message waits on its "
                   "destination; run them with --pool asyncio); deliveries: every other route.")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def worker(only, paths, concurrency, pool, kind, loglevel):
    """Worker for the routes: decode, transform, deliver, retry, dead-letter.

    Runs until stopped (SIGTERM); its log goes to stderr.

    \b
    Examples:
      gridbus worker -c 4 --kind deliveries
      gridbus worker --kind requests --pool asyncio
    """
    selected = routes_from(paths, only)
    ordered = [r.id for r in selected.ordered_routes()] if only else []
    if ordered:  # of_kind would drop them without a word: say who runs them
        what = "is an ordered route" if len(ordered) == 1 else "are ordered routes"
        raise click.UsageError(f"{', '.join(ordered)} {what}, run by `gridbus network deliver`, never by the worker")
    correlated = [r.id for r in selected.correlated_routes()] if only else []
    if correlated:
        what = "is a correlate route" if len(correlated) == 1 else "are correlate routes"
        raise click.UsageError(f"{', '.join(correlated)} {what}, run by `gridbus outages run`, never by the worker")
    table_ = selected.of_kind(kind)
    if not len(table_):
        raise ConfigError(f"no {kind} routes among {', '.join(only.split(',')) if only else 'the route files'}")
    s = settings()
    destination_tls()  # a bad GRIDBUS_DESTINATION_CA/CERT/KEY file stops the worker here, not at a delivery
    ensure_topology(compile_topology(table_), s.broker_url)
    if pool == "asyncio":
        from bus.worker import event_loop

        setup_logging(loglevel)
        click.echo(f"worker (event loop): {', '.join(r.id for r in table_)}", err=True)
        event_loop.run(list(table_), s.broker_url, prefetch=concurrency or 64)
        return
    from bus.worker.app import make_app  # celery is heavy; only the Celery worker needs it

    app = make_app(table_, s)
    argv = ["worker", "-Q", ",".join(r.queue_name for r in table_), f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle",
            # no worker-heartbeat events: they would declare and publish to celeryev (nobody reads them)
            "--without-heartbeat", "-n", f"gridbus-{os.getpid()}@%h"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    argv.append(f"--pool={pool}")
    app.worker_main(argv)


@click.command("ingress")
@click.option("--routes", "only", help="Comma-separated route ids (default: every route with a watched source).")
@click.option("--routes-dir", "paths", multiple=True, type=click.Path())
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def ingress(only, paths, loglevel):
    """Run the source connectors (file drop) and the per-file reconciliation.

    Runs until stopped (SIGTERM); its log goes to stderr.

    \b
    Example:
      gridbus ingress --routes hes-a-csv-to-mdms-1,hes-a-xml-to-mdms-1
    """
    setup_logging(loglevel)
    table_ = routes_from(paths, only)
    s = settings()
    ensure_topology(compile_topology(table_), s.broker_url)
    by_connector: dict[str, list] = {}
    for route in table_:
        by_connector.setdefault(route.source.connector, []).append(route)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    readiness.withdraw(s.state_dir, "ingress")
    threads, ready = [], []
    for name, group in by_connector.items():
        connector = registry.connector(name)
        if not hasattr(connector, "serve"):
            continue
        # a connector that can tell when it serves (its folders watched) says so; the others serve at once
        event = threading.Event()
        kwargs = {"ready": event} if "ready" in inspect.signature(connector.serve).parameters else {}
        if not kwargs:
            event.set()
        ready.append(event)
        t = threading.Thread(target=connector.serve, args=(group, s, stop), kwargs=kwargs, name=name, daemon=True)
        t.start()
        threads.append(t)
        click.echo(f"ingress: {name} serving {', '.join(r.id for r in group)}", err=True)
    if not threads:
        raise ConfigError("no route has a source connector the ingress can run")
    announced = False
    try:
        while not stop.wait(0.2):
            if not all(t.is_alive() for t in threads):
                raise SystemExit("ingress: a source connector stopped; see the log above")
            if not announced and all(e.is_set() for e in ready):
                readiness.announce(s.state_dir, "ingress", routes=[r.id for r in table_])
                announced = True
    except KeyboardInterrupt:
        stop.set()
    finally:
        readiness.withdraw(s.state_dir, "ingress")


@click.command("send")
@click.argument("route_id")
@click.argument("file", type=click.File("rb"))
@click.option("--noun", default=None, help="Noun of the document (default: the route's).")
@click.option("--correlation-id", default=None)
@click.option("--routes-dir", "paths", multiple=True, type=click.Path())
@fails_cleanly
def send(route_id, file, noun, correlation_id, paths):
    """Publish one message (a canonical JSON document, or raw text for a file-batch route) to ROUTE.

    FILE is a path or - for standard input.  Prints the message id (only that, on stdout).

    \b
    Examples:
      gridbus send hes-a-csv-to-mdms-1 readings.csv
      id=$(gridbus send hes-a-alarms alarms.json) && gridbus trace "$id"
    """
    route = routes_from(paths).get(route_id)
    if route.is_ordered:  # no Celery task reads its queues: a message sent there is a dead letter
        raise click.UsageError(f"{route.id} is an ordered route: its updates come from the network store's "
                               "outbox; see gridbus network publish")
    if route.is_correlated:  # its router takes canonical events only: a raw file would be a dead letter
        raise click.UsageError(f"{route.id} is a correlate route: it takes the canonical events the alarm routes "
                               "publish; send the HES's file to its alarm route (e.g. hes-a-alarms)")
    raw = file.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file.name}: not UTF-8: {exc}") from exc
    if route.method == "file-batch":
        from bus.transform import SourceChunk
        from bus.worker.pipeline import chunk_payload
        fmt = route.source.options.get("format", "csv")
        payload = chunk_payload(SourceChunk(text, Path(file.name).name, 2, fmt))
    else:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file.name}:{exc.lineno}: not JSON: {exc.msg}") from exc
    envelope = Envelope(route_id=route.id, source=route.source.system,
                        verb=route.message.get("verb", "created"),
                        noun=noun or route.message.get("noun", "MeterReadings"),
                        correlation_id=correlation_id)
    body, props, headers = task_message.build(envelope, payload)
    with ConfirmingPublisher(settings().broker_url, "gridbus-send") as pub:
        pub.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers)
        pub.flush()
    click.echo(envelope.message_id)
