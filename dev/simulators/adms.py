"""ADMS stand-in: stores the raw meter events the ADMS subscribes to, and the outages it takes over AMQP.

Raw events (REST): the ADMS takes the same message as the MDMS, an IEC 61968-100
EndDeviceEvents message, so this is the MDMS stand-in under another name rather
than a copy of it: same endpoints (POST /messages, GET /events?meter=M, /stats,
/_control, /_reset, /_requests, /health), same idempotent store keyed by
(meter, eventType, createdDateTime).

Outages (AMQP, use case 3): with ``--amqp-url`` and ``--amqp-queue`` (or
``ADMS_AMQP_URL`` / ``ADMS_AMQP_QUEUE``) it consumes the queue the bus's ``amqp``
destination publishes the correlator's Outage documents to (manual acks; it
declares nothing, so the ADMS's broker user from ``gridbus broker users add adms``
is enough; it reconnects when the broker goes away) and keeps them by mRID
(simulators/adms_amqp.py):

    GET /outages[?open=1]   {"outages": [{"mRID", "verb" (the latest), "open" (latest verb is
                             not closed), "Outage" (the latest document), "messages": [{"verb",
                             "messageId", "receivedAt"}, ...] in arrival order}], "count"}
    GET /outages/<mRID>     one of those, or 404
    GET /stats              also "outage_messages" (stored), "duplicates" (a messageId it already
                            had: dropped), "rejected_messages" (not JSON, too large, no mRID),
                            "outages", "outages_open", and "amqp": {"queue", "connected",
                            "connections", "last_error"} (null without --amqp-url)
    GET /outages/_rejected  the last 100 rejections: messageId and reason
    POST /_reset            also clears the outages and their counters
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from simulators.adms_amqp import DEFAULT_MAX_BODY, OutageConsumer, OutageStore
from simulators.control import serve_until_signalled
from simulators.mdms import MdmsApp, MdmsServer, _Handler


class AdmsApp(MdmsApp):
    def __init__(self, name: str = "adms", max_body: int = DEFAULT_MAX_BODY) -> None:
        super().__init__(name)
        self.outages = OutageStore(max_body)
        self.consumer: OutageConsumer | None = None

    def reset(self) -> tuple[int, dict]:
        self.outages.reset()
        return super().reset()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), **self.outages.stats(),
                "amqp": self.consumer.status() if self.consumer else None}

    def get_outages(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/outages":
            only_open = query.get("open", ["0"])[0] not in ("", "0", "false", "no")
            found = self.outages.listing(only_open)
            return 200, {"outages": found, "count": len(found)}
        if path == "/outages/_rejected":
            with self.outages._lock:
                return 200, {"rejections": list(self.outages.rejections)}
        mrid = unquote(path[len("/outages/"):])
        found = self.outages.get(mrid)
        if found is None:
            return 404, self.failed("NOT_FOUND", f"no outage {mrid!r}", "Outage")
        return 200, found


class _AdmsHandler(_Handler):
    server_version = "gridbus-adms/1.0"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/outages" or url.path.startswith("/outages/"):
            self.send_json(*self.server.app.get_outages(url.path, parse_qs(url.query)))
        else:
            super().do_GET()


class AdmsServer(MdmsServer):
    """The ADMS on ``host:port`` (port 0 picks a free one) in background threads; with
    ``amqp_url`` and ``amqp_queue``, also consuming outages from that queue."""

    app: AdmsApp

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "adms",
                 verbose: bool = False, amqp_url: str | None = None, amqp_queue: str | None = None,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        if bool(amqp_url) != bool(amqp_queue):
            raise ValueError("the ADMS consumes outages with both an AMQP URL and a queue, or neither")
        # the MDMS server with the ADMS's app and handler
        super(MdmsServer, self).__init__(_AdmsHandler, AdmsApp(name, max_body), host, port, verbose)
        if amqp_url:
            self.app.consumer = OutageConsumer(amqp_url, amqp_queue, self.app.outages, name=f"{name}-stand-in")

    def start(self) -> "AdmsServer":
        super().start()
        if self.app.consumer:
            self.app.consumer.start()
        return self

    def stop(self) -> None:
        if self.app.consumer:
            self.app.consumer.stop()
        super().stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.adms", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="adms", help="answered in /health, /stats and reply headers")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.add_argument("--amqp-url", default=os.environ.get("ADMS_AMQP_URL") or None,
                   help="consume outages from this broker, e.g. amqp://adms:PASSWORD@127.0.0.1:5679/%%2F "
                        "(env ADMS_AMQP_URL)")
    p.add_argument("--amqp-queue", default=os.environ.get("ADMS_AMQP_QUEUE") or None,
                   help="the ADMS's outage queue, e.g. adms.outages (env ADMS_AMQP_QUEUE)")
    p.add_argument("--amqp-max-body-kb", type=int, default=int(os.environ.get("ADMS_AMQP_MAX_BODY_KB") or
                                                               DEFAULT_MAX_BODY // 1024),
                   help="a larger message is rejected (env ADMS_AMQP_MAX_BODY_KB; default %(default)s)")
    a = p.parse_args(argv)
    if bool(a.amqp_url) != bool(a.amqp_queue):
        p.error("--amqp-url and --amqp-queue go together")
    return serve_until_signalled(AdmsServer(a.host, a.port, a.name, a.verbose, a.amqp_url, a.amqp_queue,
                                            a.amqp_max_body_kb * 1024))


if __name__ == "__main__":
    sys.exit(main())
