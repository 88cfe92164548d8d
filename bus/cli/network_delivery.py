"""`gridbus network publish|deliver`: consumer-path updates from the outbox to the billing systems.

    publish   the outbox publisher (one leads at a time; others wait for the lease)
    deliver   the billing routes' delivery process (run two: each partition is taken by one)
"""
from __future__ import annotations

import signal
import threading

import click

from bus.cli.common import echo_json, fails_cleanly, settings, setup_logging
from bus.cli.network import network
from bus.network import delivery
from bus.network.delivery_routes import load_billing_routes
from bus.network.delivery_topology import declare
from bus.network.publish import OutboxPublisher
from bus.network.store import open_store

routes_option = click.option("--routes", "routes_file", metavar="FILE",
                             help="The billing routes (default $GRIDBUS_NETWORK_ROUTES, else "
                                  "routes/ordered/uc9-billing.yaml).")


def _stopped_by_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


@network.command("publish")
@routes_option
@click.option("--poll-s", default=0.5, show_default=True, help="How often to look at the outbox.")
@click.option("--batch", default=2000, show_default=True, help="Updates per round (confirmed, then marked).")
@click.option("--once", is_flag=True, help="Publish what is pending now and exit.")
@click.option("--loglevel", default="INFO", show_default=True)
@fails_cleanly
def publish(routes_file, poll_s, batch, once, loglevel):
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
    routes = load_billing_routes(routes_file)
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
def deliver(routes_file, only, loglevel):
    """Deliver consumer-path updates to each billing system, in version order per consumer:
    retries in place (the consumer's partition waits), dead letters with the reason.
    Runs until SIGTERM; run two for a standby on every partition.

    \b
    Example:
      BILLING_1_URL=http://billing-1:8080 BILLING_2_URL=http://billing-2:8080 gridbus network deliver
    """
    setup_logging(loglevel)
    routes = [r for r in load_billing_routes(routes_file) if not only or r.id in only]
    if not routes:
        raise click.UsageError(f"no route among {', '.join(only)}")
    delivery.serve(routes, settings().broker_url, _stopped_by_sigterm())
