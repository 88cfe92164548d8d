"""Broker objects as plain values, so the same description drives apply, plan and Celery."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _frozen_args(args: dict[str, Any] | None) -> tuple:
    return tuple(sorted((args or {}).items()))


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    arguments: tuple = ()
    durable: bool = True

    @classmethod
    def of(cls, name: str, type: str, arguments: dict | None = None) -> "ExchangeSpec":
        return cls(name, type, _frozen_args(arguments))

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.arguments)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: tuple = ()
    durable: bool = True

    def __post_init__(self):
        # Quorum queues cannot be transient; say so here rather than at declare time.
        if dict(self.arguments).get("x-queue-type") == "quorum" and not self.durable:
            raise ValueError(f"quorum queue {self.name} must be durable")

    @classmethod
    def of(cls, name: str, arguments: dict | None = None) -> "QueueSpec":
        return cls(name, _frozen_args(arguments))

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.arguments)


@dataclass(frozen=True)
class BindingSpec:
    source: str              # exchange
    destination: str         # queue or exchange
    routing_key: str
    destination_type: str = "queue"


@dataclass
class Topology:
    exchanges: dict[str, ExchangeSpec] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    bindings: set[BindingSpec] = field(default_factory=set)

    def add_exchange(self, spec: ExchangeSpec) -> ExchangeSpec:
        self.exchanges[spec.name] = spec
        return spec

    def add_queue(self, spec: QueueSpec) -> QueueSpec:
        self.queues[spec.name] = spec
        return spec

    def bind(self, source: str, destination: str, key: str, destination_type: str = "queue") -> None:
        self.bindings.add(BindingSpec(source, destination, key, destination_type))
