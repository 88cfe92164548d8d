"""ADMS stand-in: stores the raw meter events the ADMS subscribes to.

The ADMS takes the same message as the MDMS, an IEC 61968-100 EndDeviceEvents
message, so this is the MDMS stand-in under another name rather than a copy of
it: same endpoints (POST /messages, GET /events?meter=M, /stats, /_control,
/_reset, /_requests, /health), same idempotent store keyed by (meter, eventType,
createdDateTime).  Outage analytics (grouping last gasps by feeder) will extend
this module when the bus produces them.
"""
from __future__ import annotations

import sys

from simulators.control import standin_main
from simulators.mdms import MdmsServer


class AdmsServer(MdmsServer):
    """The ADMS on ``host:port`` (port 0 picks a free one) in background threads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "adms",
                 verbose: bool = False) -> None:
        super().__init__(host, port, name, verbose)


def main(argv: list[str] | None = None) -> int:
    return standin_main(AdmsServer, "python -m simulators.adms", __doc__.split("\n")[0], "adms", argv)


if __name__ == "__main__":
    sys.exit(main())
