"""The one place where py-amqp's, pika's and aio-pika's exceptions become ``BrokerError``.

Each client library gets a context manager; code that talks to the broker runs
inside one and from then on catches ``bus.errors.BrokerError`` only.  The
original exception is chained (``raise ... from``) for the traceback.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import AsyncIterator, Iterator

from bus.errors import BrokerError


def _broker_error(doing: str, exc: BaseException) -> BrokerError:
    return BrokerError(f"{doing}: {exc.__class__.__name__}: {exc}")


@contextlib.contextmanager
def amqp_errors(doing: str) -> Iterator[None]:
    """py-amqp (the publisher, the topology, Celery's kombu)."""
    import amqp

    try:
        yield
    except (amqp.exceptions.AMQPError, OSError, socket.timeout) as exc:
        raise _broker_error(doing, exc) from exc


@contextlib.contextmanager
def pika_errors(doing: str) -> Iterator[None]:
    """pika (the batch consumer)."""
    import pika.exceptions

    try:
        yield
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise _broker_error(doing, exc) from exc


@contextlib.asynccontextmanager
async def aio_errors(doing: str) -> AsyncIterator[None]:
    """aio-pika (the gateway's request loop, the asyncio worker).

    A channel that went with its connection raises ``ChannelInvalidStateError`` (a
    RuntimeError, not an AMQPError); a publish that waited too long, a TimeoutError."""
    import aio_pika.exceptions
    import aiormq.exceptions

    try:
        yield
    except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.AMQPException,
            aiormq.exceptions.ChannelInvalidStateError, OSError, asyncio.TimeoutError) as exc:
        raise _broker_error(doing, exc) from exc
