"""What keeps one system's flood or slow connection from slowing the others down.

* **Per-system share of the gateway**: a push is answered by one of the gateway's threads; a
  system may hold at most ``in_flight_per_system`` of them at once.  Beyond that it is answered
  429 at once, on the event loop, before its body is read, so a flooding system's excess never
  waits in the queue every other system's pushes wait in.  The rate limit (``--rate-per-system``)
  is checked there too, for the same reason: its 429s used to take a thread each.
* **Header and body deadlines**: a connection that has not sent a complete request line and
  headers within ``header_timeout_s`` of opening (or of its previous answer, on a kept-alive
  connection) is closed; a body not received within ``body_timeout_s`` is answered 408 and the
  connection closed.  A client that sends a byte at a time holds a connection that long at most.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    in_flight_per_system: int = 8
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


class InFlight:
    """Pushes each system has in the gateway's threads now.  Used on the event loop only: no lock."""

    def __init__(self, per_system: int):
        self.per_system = per_system
        self.now: Counter[str] = Counter()

    def enter(self, system: str) -> bool:
        """False if ``system`` already holds its share (then it must not ``leave``)."""
        if self.per_system > 0 and self.now[system] >= self.per_system:
            return False
        self.now[system] += 1
        return True

    def leave(self, system: str) -> None:
        self.now[system] -= 1
        if self.now[system] <= 0:
            del self.now[system]
