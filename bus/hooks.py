"""Hooks on the data path: where tracing (a later issue) plugs in.

``emit`` must never block or fail the data path: listeners are called in a
try/except and their errors are only logged.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("gridbus.hooks")
_listeners: list[Callable[[str, dict[str, Any]], None]] = []


def subscribe(listener: Callable[[str, dict[str, Any]], None]) -> None:
    _listeners.append(listener)


def emit(event: str, **fields: Any) -> None:
    """``event`` is one of received, published, consumed, transformed, delivered,
    retried, dead-lettered, replayed."""
    for listener in _listeners:
        try:
            listener(event, fields)
        except Exception:  # a broken listener must not stop a delivery
            log.exception("hook listener failed for %s", event)
