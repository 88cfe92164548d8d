"""`gridbus network publish|deliver`: consumer-path updates from the outbox to the billing systems.

    publish   the outbox publisher (one leads at a time; others wait for the lease)
    deliver   the billing routes' delivery process (run two: each partition is taken by one)
    parked    consumers parked behind a dead letter, with their held updates
    release   let parked consumers flow again (their held updates in order)
"""
from __future__ import annotations

import signal
import threading

import click

from bus.cli.common import echo_json, echo_list, fails_cleanly, json_option, settings, setup_logging, utc_clock
from bus.cli.common import routes_from
from bus.cli.network import network
from bus.messaging import ConfirmingPublisher
from bus.network import delivery
from bus.network.delivery_state import DeliveryState
from bus.network.delivery_routes import load_billing_routes
from bus.network.delivery_topology import declare, replays_queue_name
from bus.network.publish import OutboxPublisher
from bus.network.store import open_store
from bus.registry import did_you_mean
from bus.tls import destination_tls

routes_option = click.option("--routes-dir", "--routes", "routes_paths", multiple=True, type=click.Path(),
                             help="Route files or folders (default $GRIDBUS_ROUTES, else ./routes); their "
                                  "routes of method ordered are the billing routes.")


def _stopped_by_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


@network.command("publish")
@routes_option
@click.option("--poll-s", default=0.5, show_default=True,
              help="How often to look at the outbox of a PostgreSQL store; a SQLite store is watched "
                   "every 20 ms and this is its longest wait.")
@click.option("--batch", default=2000, show_default=True, help="Updates per round (confirmed, then marked).")
@click.option("--once", is_flag=True, help="Publish what is pending now and exit.")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def publish(routes_paths, poll_s, batch, once, loglevel):
    """Publish the network store's pending consumer-path updates to the billing routes, in the
    order written, with publisher confirms; then mark them published.  Runs until SIGTERM.

    Only one publisher publishes at a time (it holds an exclusive queue on its connection);
    a second one waits and takes over when the first is gone.

    \b
    Example:
      gridbus network publish --poll-s 0.2
    """
    setup_logging(loglevel)
    broker_url = settings().broker_url
    routes = load_billing_routes(routes_paths)
    if not routes:
        raise click.UsageError("no route of method ordered in the route files: nothing to publish to")
    declare(broker_url, [(r.id, r.partitions) for r in routes])  # nothing published before its queues exist
    publisher = OutboxPublisher(open_store(), broker_url, batch=batch, poll_s=poll_s)
    if once:
        echo_json({"published": publisher.publish_once()})
        return
    publisher.serve(_stopped_by_sigterm())


@network.command("deliver")
@routes_option
@click.option("--route", "only", multiple=True, help="Only these routes (repeat); default every one.")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def deliver(routes_paths, only, loglevel):
    """Deliver consumer-path updates to each billing system, in version order per consumer:
    retries in place (the consumer's partition waits), dead letters with the reason.
    Runs until SIGTERM; run two for a standby on every partition.

    \b
    Example:
      BILLING_1_URL=http://billing-1:8080 BILLING_2_URL=http://billing-2:8080 gridbus network deliver
    """
    setup_logging(loglevel)
    routes = [r for r in load_billing_routes(routes_paths) if not only or r.id in only]
    if not routes:
        raise click.UsageError(f"no route of method ordered among {', '.join(only) or 'the route files'}")
    destination_tls()  # a bad GRIDBUS_DESTINATION_CA/CERT/KEY file stops it here, not at a delivery
    delivery.serve(routes, settings().broker_url, _stopped_by_sigterm())


@network.command("parked")
@click.option("--route", help="Only this route.")
@json_option
@fails_cleanly
def parked(route, as_json):
    """Consumers parked behind a dead letter, per billing route: their later updates are held by
    the bus until the dead letter is replayed (`gridbus dlq replay`) or the consumer released.

    \b
    Example:
      gridbus network parked --route network-to-billing-1
    """
    rows = DeliveryState().parked(route)
    echo_list(rows, as_json, {"route": "route", "consumer": "consumer",
                              "dead-lettered version": "deadLetteredVersion", "held": "held",
                              "since": lambda r: utc_clock(r["since"]), "reason": lambda r: r["reason"][:60]},
              "no consumer is parked")


@network.command("release")
@click.argument("route")
@click.argument("consumers", nargs=-1, required=True)
@routes_option
@fails_cleanly
def release(route, consumers, routes_paths):
    """Let parked CONSUMERS of ROUTE flow again without replaying their dead letter (it was
    discarded, or billing was fixed by hand): their held updates go out in version order.

    ROUTE must be an ordered route of the route files.

    \b
    Example:
      gridbus network release network-to-billing-1 CON-00000017
    """
    _an_ordered_route(route, routes_paths)
    with ConfirmingPublisher(settings().broker_url, name="gridbus-network-release") as pub:
        for consumer in consumers:
            pub.publish("", replays_queue_name(route), b"{}", {"delivery_mode": 2},
                        {delivery.H_RELEASE: consumer})
        pub.flush()
    click.echo(f"released {len(consumers)} consumer(s) of {route}")


def _an_ordered_route(route_id: str, routes_paths) -> None:
    """``click.UsageError`` unless ``route_id`` is a route of method ordered in the route files
    (only those park consumers; a release sent for another would wait on a queue nobody reads)."""
    table = routes_from(routes_paths)
    ordered = [r.id for r in table.ordered_routes()]
    if route_id in ordered:
        return
    known = {r.id: r for r in table}
    listed = f"ordered routes: {', '.join(ordered) or 'none'}"
    if route_id in known:
        raise click.UsageError(f"{route_id} is not an ordered route (method {known[route_id].method}): it parks "
                               f"no consumer; {listed}")
    raise click.UsageError(f"no route {route_id!r}{did_you_mean(route_id, ordered)}; {listed}")
