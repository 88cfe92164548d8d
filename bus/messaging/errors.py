"""The one place where py-amqp's, pika's and aio-pika's exceptions become ``BrokerError``.

Each client library gets a context manager; code that talks to the broker runs
inside one and from then on catches ``bus.errors.BrokerError`` only.  The
original exception is chained (``raise ... from``) for the traceback.  A lost or
refused connection (the node died, shut down or does not listen) becomes
``BrokerUnavailable``, which the publisher and the consumers answer by trying
the next address; anything else the broker refused stays a plain ``BrokerError``.

A TLS handshake that fails on the certificates (the server's does not verify against
``GRIDBUS_TLS_CA`` or does not name the host; the broker wants a client certificate) is a
refusal, a plain ``BrokerError`` saying so: trying again, or elsewhere, cannot help, so the
publisher does not spend its failover time on it and the caller hears it at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import AsyncIterator, Iterator

from bus.errors import BrokerAccessRefused, BrokerError, BrokerNotFound, BrokerUnavailable

# the AMQP reply codes that say what was refused, not that the broker went away
_REFUSALS = {403: BrokerAccessRefused, 404: BrokerNotFound}


def _broker_error(doing: str, exc: BaseException, lost: bool = False, code: int | None = None) -> BrokerError:
    refused = tls_refusal(exc)
    if refused:
        return BrokerError(f"{doing}: {refused}")
    kind = BrokerUnavailable if lost else _REFUSALS.get(code, BrokerError)
    return kind(f"{doing}: {exc.__class__.__name__}: {exc}")


# an orderly or abrupt end of the socket during the handshake: the node may have gone, not refused us
_TLS_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def tls_refusal(exc: BaseException) -> str | None:
    """What failed in a TLS handshake that cannot succeed by trying again, else None.  The
    libraries wrap the ``ssl`` error (pika in its connection workflow errors, aiormq re-raised
    with the text alone), so its causes, context and arguments are searched, and the text."""
    from bus.messaging.tls import CA_VAR

    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        text = str(current)
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            detail = getattr(current, "verify_message", None) or text
            return (f"certificate verify failed ({detail}): the broker's certificate is not signed by the CA in "
                    f"{CA_VAR} (or the system's store when it is unset), or does not name the host of the broker URL")
        if isinstance(current, ssl.SSLError) and not isinstance(current, _TLS_LOST):
            return (f"TLS handshake refused ({current.reason or text}): check {CA_VAR}, GRIDBUS_TLS_CERT "
                    "and the URL's port")
        todo += [current.__cause__, current.__context__, *(a for a in getattr(current, "args", ())
                                                           if isinstance(a, BaseException))]
        todo += [a for arg in getattr(current, "args", ()) if isinstance(arg, (list, tuple))
                 for a in arg if isinstance(a, BaseException)]
    return None


@contextlib.contextmanager
def amqp_errors(doing: str) -> Iterator[None]:
    """py-amqp (the publisher, the topology, Celery's kombu)."""
    import amqp

    try:
        yield
    except (amqp.exceptions.RecoverableConnectionError, OSError, socket.timeout) as exc:
        raise _broker_error(doing, exc, lost=True) from exc
    except amqp.exceptions.AMQPError as exc:
        raise _broker_error(doing, exc, code=getattr(exc, "reply_code", None)) from exc


@contextlib.contextmanager
def pika_errors(doing: str) -> Iterator[None]:
    """pika (the batch consumer)."""
    import pika.exceptions

    try:
        yield
    except (pika.exceptions.AMQPConnectionError, OSError) as exc:
        raise _broker_error(doing, exc, lost=True) from exc
    except pika.exceptions.AMQPError as exc:
        raise _broker_error(doing, exc, code=getattr(exc, "reply_code", None)) from exc


@contextlib.asynccontextmanager
async def aio_errors(doing: str) -> AsyncIterator[None]:
    """aio-pika (the gateway's request loop, the asyncio worker).

    A nack becomes ``BrokerUnavailable`` (the broker did not take the message; again may work).
    A channel that went with its connection raises ``ChannelInvalidStateError`` (a
    RuntimeError, not an AMQPError); a publish that waited too long, a TimeoutError."""
    import aio_pika.exceptions
    import aiormq.exceptions

    try:
        yield
    except asyncio.TimeoutError as exc:  # an OSError too, but the connection may be fine (blocked, slow)
        raise _broker_error(doing, exc) from exc
    except (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, OSError) as exc:
        raise _broker_error(doing, exc, lost=True) from exc
    except aio_pika.exceptions.DeliveryError as exc:
        # a nack: the broker did not take it (a quorum queue electing a leader after its node
        # died), so trying again may work; a return (unroutable) will not
        raise _broker_error(doing, exc, lost=getattr(exc.frame, "name", "") == "Basic.Nack") from exc
    except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.AMQPException) as exc:
        raise _broker_error(doing, exc) from exc
