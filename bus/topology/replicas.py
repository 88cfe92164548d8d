"""GRIDBUS_QUORUM_REPLICAS: on how many nodes each new quorum queue starts.

RabbitMQ 3.10 puts a new quorum queue on every cluster node unless the queue says otherwise
(``x-quorum-initial-group-size``); the platform team may want fewer (five nodes, three
replicas).  Unset, no queue gets the argument, so the queues of brokers declared before this
setting existed stay equivalent when redeclared.  The argument counts at declaration only: a
queue's membership changes later with ``rabbitmq-queues add_member|grow|shrink``.
"""
from __future__ import annotations

from kombu.transport.native_delayed_delivery import MAX_LEVEL, level_name

from bus.errors import ConfigError

SETTING = "GRIDBUS_QUORUM_REPLICAS"
ARGUMENT = "x-quorum-initial-group-size"
# Celery (kombu) declares its delay levels itself, with fixed arguments, at every worker start:
# an argument of ours on them would make that declaration inequivalent (PRECONDITION_FAILED)
_DECLARED_BY_CELERY = frozenset(level_name(level) for level in range(MAX_LEVEL + 1))


def quorum_replicas(env: dict[str, str] | None = None) -> int | None:
    """The setting, checked: a whole number of nodes, at least 1; None when unset."""
    if env is None:
        from bus.settings import environment

        env = environment()
    raw = (env.get(SETTING) or "").strip()
    if not raw:
        return None
    try:
        replicas = int(raw)
    except ValueError:
        raise ConfigError(f"{SETTING}={raw!r}: expected a whole number of nodes, at least 1") from None
    if replicas < 1:
        raise ConfigError(f"{SETTING}={raw!r}: a quorum queue needs at least 1 replica")
    return replicas


def with_replicas(name: str, arguments: dict, replicas: int | None) -> dict:
    """``arguments`` of queue ``name``, with the initial group size when it is a quorum queue
    of ours and ``replicas`` is set."""
    if replicas is None or arguments.get("x-queue-type") != "quorum" or name in _DECLARED_BY_CELERY:
        return arguments
    return {**arguments, ARGUMENT: replicas}
