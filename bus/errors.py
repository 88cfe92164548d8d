"""The one exception tree of gridbus.

    GridbusError
    ├── ConfigError                 bad route file, settings or CLI input (file:line in the message)
    │   └── RouteValidationError    several ConfigErrors found in route files, reported together
    ├── BrokerError                 RabbitMQ unreachable, channel closed, publish not confirmed
    │   ├── BrokerUnavailable       no node answered, or the connection to it went: another node may take it
    │   ├── BrokerAccessRefused     the broker user may not do this (403 ACCESS_REFUSED: its permissions)
    │   ├── BrokerNotFound          the exchange or queue does not exist (404 NOT_FOUND)
    │   └── BrokerBlocked           the broker blocks publishing (a memory or disk alarm): not taken now
    ├── MessageError                the message itself is wrong: never worth a retry
    │   ├── DecodeError             bytes that are not the format they claim (bad CSV header, bad XML)
    │   ├── ValidationError         a document that breaks the canonical schema
    │   └── TransformError          a transformer could not map a valid document
    └── DeliveryError               a destination did not take the message
        ├── TransientDeliveryError  worth a retry with backoff (timeouts, 5xx, 408, 429)
        └── PermanentDeliveryError  dead-letter at once (4xx other than 408/429)

The branch decides what the worker does: MessageError and PermanentDeliveryError
go straight to the dead-letter queue, TransientDeliveryError and BrokerError are
retried.  Foreign exceptions (pika, kombu, requests, yaml) are translated into
this tree at the boundary that meets them and chained with ``raise ... from``.
"""
from __future__ import annotations


class GridbusError(Exception):
    """Root of every error gridbus raises on purpose."""


class ConfigError(GridbusError):
    """Configuration that cannot be used; the message names file and line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.reason = message
        location = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{location}{message}")


class RouteValidationError(ConfigError):
    """Every problem found while loading route files, not only the first."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        GridbusError.__init__(self, "\n".join(str(e) for e in errors))


class BrokerError(GridbusError):
    """The broker could not be reached or refused an operation."""


class BrokerUnavailable(BrokerError):
    """No broker node answered, or the connection to one was lost (refused, reset, closed by a
    node shutting down).  Unlike a refusal (a missing exchange, access refused), trying again,
    on the next address of the setting, may succeed: the publisher and consumers do."""


class BrokerAccessRefused(BrokerError):
    """The broker refused the operation to this user (403 ACCESS_REFUSED): its configure, write
    or read permission, or its topic permission, does not cover it.  Trying again cannot help;
    a service user that may not declare the topology checks that it exists instead."""


class BrokerNotFound(BrokerError):
    """The exchange or queue named does not exist (404 NOT_FOUND), e.g. a passive declare of an
    object nobody declared: the administrator's ``gridbus routes apply`` has not run."""


class BrokerUnconfirmed(BrokerError):
    """A message handed to the broker whose confirm never came (the connection went, a blocked
    broker was let go, the confirm was too slow): it may have been taken, or not.  A caller that
    must not say "not done" of something that may be done (a command) treats it as sent and
    finds the outcome later; it never reports it failed."""


class BrokerBlocked(BrokerError):
    """The broker blocks this connection's publishing (``connection.blocked``: a memory or
    disk alarm) and the caller asked not to wait: the message is not confirmed, and the
    caller should send it again later (HTTP: 503 with Retry-After)."""


class MessageError(GridbusError):
    """The message is wrong; retrying it cannot help."""


class DecodeError(MessageError):
    """Bytes that cannot be read as the format they claim to be."""


class ValidationError(MessageError):
    """A document that breaks the canonical schema."""


class TransformError(MessageError):
    """A valid document that a transformer could not map."""


class DeliveryError(GridbusError):
    """A destination did not accept the message.

    ``maybe_sent``: whether the destination may have acted on it (no answer, a timeout, a
    5xx after sending).  A command whose delivery failed that way has an unknown outcome,
    never a failed one; a connection never made, or a 503/429, says it was not taken."""

    maybe_sent = True

    def __init__(self, message: str, destination: str | None = None, status: int | None = None,
                 retry_after_s: float | None = None):
        self.destination = destination
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """Worth retrying later: the destination may take it then."""


class PermanentDeliveryError(DeliveryError):
    """The destination refused the message for good."""
