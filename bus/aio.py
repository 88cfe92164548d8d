"""Run an event-loop process (the request worker, the gateway) on uvloop.

uvloop is libuv under asyncio's API: the loop's own work per socket event
(the selector, transports, callbacks) is C instead of Python, and a round
trip through gateway and worker crosses about a dozen socket events.  The
benchmark's asyncio baseline runs on it too, so the comparison stays fair.

Its AMQP (``connect``, ``ConfirmedPublisher``) lives in ``bus.messaging.aio``;
the names are here too because the event-loop processes reach them as ``aio.*``.
"""
from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from bus.messaging.aio import ConfirmedPublisher, connect, precise_float_headers

__all__ = ["ConfirmedPublisher", "connect", "precise_float_headers", "run"]


def run(main: Coroutine[Any, Any, Any]) -> Any:
    # what was made while starting (modules, routes, schemas) lives as long as the process:
    # kept out of the cyclic collector's full passes, which otherwise walk it all again and
    # again, in pauses every request waiting on this loop shares
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # a platform without a wheel (Windows): the standard loop does the same job
        return asyncio.run(main)
    return uvloop.run(main)
