"""Run a consumer again and again until stopped, reconnecting with backoff and jitter."""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("gridbus.amqp")


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``first_s``, doubling up to ``cap_s``.

    Each delay is drawn between half and all of the current step, so that consumers
    that lost the same broker do not all come back in the same instant.  An attempt
    that lasted ``reset_after_s`` was a working connection: the next failure starts
    again from ``first_s``."""

    first_s: float = 0.5
    cap_s: float = 15.0
    reset_after_s: float = 30.0
    _step: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._step = self.first_s if self._step == 0 else min(self._step * 2, self.cap_s)
        return random.uniform(self._step / 2, self._step)

    def lasted(self, seconds: float) -> None:
        if seconds >= self.reset_after_s:
            self._step = 0.0


def until_stopped(what: str, attempt: Callable[[], Any], stop: threading.Event,
                  after_failure: Callable[[], None] | None = None, backoff: Backoff | None = None) -> None:
    """Run ``attempt`` (connect, then consume until ``stop``) again and again until ``stop``.

    A broker restart ends an attempt with an error; the next one reconnects after the
    backoff's delay, and the messages wait in their queues meanwhile.  ``after_failure``
    lets go of what the failed attempt left half-open (a publisher's connection)."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        started = time.monotonic()
        try:
            attempt()
        except Exception as exc:  # noqa: BLE001 - whatever it was, the next attempt starts clean
            backoff.lasted(time.monotonic() - started)
            delay = backoff.next_delay()
            log.warning("%s: %s; reconnecting in %.1fs", what, exc, delay)
            if after_failure is not None:
                after_failure()
            stop.wait(delay)
        else:
            backoff.lasted(time.monotonic() - started)
