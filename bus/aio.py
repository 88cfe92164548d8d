"""Run an event-loop process (the request worker, the gateway) on uvloop.

uvloop is libuv under asyncio's API: the loop's own work per socket event
(the selector, transports, callbacks) is C instead of Python, and a round
trip through gateway and worker crosses about a dozen socket events.  The
benchmark's asyncio baseline runs on it too, so the comparison stays fair.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # a platform without a wheel (Windows): the standard loop does the same job
        return asyncio.run(main)
    return uvloop.run(main)
