"""The contract between the bus and the connectors it finds by name.

A connector is a class registered under ``gridbus.connectors`` and instantiated
without arguments.  It declares which roles it can play and the options each
role takes (a marshmallow schema: the route loader checks route files against
it, so a typo fails at load time, not on the first message).

Destination connectors translate their library's exceptions (requests, OS
errors) into ``TransientDeliveryError`` or ``PermanentDeliveryError`` right
there: the worker never sees a foreign exception type.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from marshmallow import Schema

from bus.envelope import Envelope
from bus.routes.model import Endpoint
from bus.transform import Outbound


@dataclass(frozen=True)
class DeliveryReceipt:
    destination: str
    status: str          # e.g. "200" or "written"
    duration_s: float
    detail: str = ""
    at: float = field(default_factory=time.time)  # when the destination answered


@runtime_checkable
class Connector(Protocol):
    name: str
    roles: tuple[str, ...]

    def options_schema(self, role: str) -> type[Schema]: ...

    def claim(self, endpoint: Endpoint) -> Any:
        """What two routes may not both take from (sources only)."""


@runtime_checkable
class Destination(Protocol):
    def deliver(self, outbound: Outbound, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt: ...
