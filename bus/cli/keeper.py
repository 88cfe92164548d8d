"""`gridbus keeper`: the long-running collector of dead letters into the durable store."""
from __future__ import annotations

import logging
import signal
import threading

import click

from bus.cli.common import fails_cleanly, settings, setup_logging
from bus.cli.dlq import _dlq_names, store_path
from bus.deadletters.collect import keep
from bus.deadletters.store import DeadLetterStore
from bus.errors import BrokerError
from bus.messaging.reconnect import Backoff
from bus.state_store import StateStoreError

log = logging.getLogger("gridbus.dead-letters")


@click.command("keeper")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--rescan-s", default=30.0, show_default=True, help="How often to look for new dead-letter queues.")
@fails_cleanly
def keeper(loglevel, rescan_s):
    """Move dead letters from every route's dead-letter queue into the store, continuously.

    Runs until stopped (SIGTERM); its log goes to stderr; `gridbus dlq list` reads what it kept.

    \b
    Example:
      gridbus keeper --rescan-s 60
    """
    setup_logging(loglevel)
    stopping = threading.Event()
    round_over = threading.Event()

    def on_sigterm(*_) -> None:
        stopping.set()
        round_over.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    # Collected on this (the main) thread, the one that opens the store: a sqlite3 connection
    # refuses use from any other thread, and a keeper that handed it to a worker thread
    # stored nothing and reconnected every 2 s.  Other threads here only set events.
    store = _opened(stopping)
    if store is None:
        return
    queues: list[str] = []
    while True:
        round_over = threading.Event()
        if stopping.is_set():  # checked after the new round's event exists: no SIGTERM is missed
            break
        try:
            queues = _dlq_names()
        except BrokerError as exc:  # the management API is down for a while: keep the queues known
            log.warning("looking for dead-letter queues: %s; collecting from the %d known", exc, len(queues))
        # a round ends after rescan_s, then picks up dead-letter queues of routes added since
        rescan = threading.Timer(rescan_s, round_over.set)
        rescan.daemon = True
        rescan.start()
        try:
            keep(settings().broker_url, queues, store, round_over)
        finally:
            rescan.cancel()


def _opened(stopping: threading.Event) -> DeadLetterStore | None:
    """The store, waiting for a shared one that is down (a keeper started with PostgreSQL is
    restarted by nobody: it waits, as it waits for the broker); None if stopped meanwhile."""
    backoff = Backoff()
    while not stopping.is_set():
        try:
            return DeadLetterStore(store_path())
        except StateStoreError as exc:
            delay = backoff.next_delay()
            log.warning("opening the dead-letter store: %s; trying again in %.1fs", exc, delay)
            stopping.wait(delay)
    return None
