"""`gridbus keeper`: the long-running collector of dead letters into the durable store."""
from __future__ import annotations

import signal
import threading

import click

from bus.cli.common import fails_cleanly, setup_logging
from bus.cli.dlq import _dlq_names, store_path
from bus.cli.common import settings
from bus.deadletters.collect import keep
from bus.deadletters.store import DeadLetterStore


@click.command("keeper")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--rescan-s", default=30.0, show_default=True, help="How often to look for new dead-letter queues.")
@fails_cleanly
def keeper(loglevel, rescan_s):
    """Move dead letters from every route's dead-letter queue into the store, continuously."""
    setup_logging(loglevel)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    store = DeadLetterStore(store_path())
    while not stop.is_set():
        round_stop = threading.Event()
        queues = _dlq_names()
        worker = threading.Thread(target=keep, args=(settings().broker_url, queues, store, round_stop),
                                  daemon=True)
        worker.start()
        stop.wait(rescan_s)  # then pick up dead-letter queues of routes added since
        round_stop.set()
        worker.join()
