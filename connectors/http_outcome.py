"""What every HTTP destination sends with a message, and what the status of its answer means.

One copy for the REST, request, callback and HES destinations, sync and async:

- the headers that let a receiver find the message again: ``X-Message-ID``,
  ``X-Correlation-ID`` and the W3C ``traceparent``;
- which statuses are worth asking again (5xx, 408, 425, 429), reading the
  destination's ``Retry-After`` (seconds or an HTTP date) for when;
- whether the destination may have acted on a message it did not answer
  (``maybe_sent``): a connection never made, a 429, 502 or 503 says it did
  not take it; a timeout or any other 5xx may come after it acted.  For a
  command that difference is "failed" against "unknown";
- a destination whose certificate does not verify (``untrusted``): permanent, see there.
"""
from __future__ import annotations

import ssl
import time
from email.utils import parsedate_to_datetime

from bus.envelope import Envelope
from bus.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError

COME_BACK_LATER = {408, 425, 429}  # a 4xx that asks for a later try, not a refusal
NOT_TAKEN = {429, 502, 503}        # answers that say the request was not acted on


def message_headers(envelope: Envelope, content_type: str = "application/json", **more: str) -> dict[str, str]:
    headers = {"Content-Type": content_type, "X-Message-ID": envelope.message_id,
               "X-Correlation-ID": envelope.correlation, "traceparent": envelope.traceparent}
    headers.update(more)
    return headers


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None


def transient(status: int) -> bool:
    return status >= 500 or status in COME_BACK_LATER


def refused(destination: str, status: int, detail: str, retry_after_header: str | None = None):
    """The error for an answer that is not a success: transient (asked again, after its
    Retry-After) or permanent (dead-lettered); raise it."""
    if transient(status):
        error = TransientDeliveryError(detail, destination, status, retry_after(retry_after_header))
        error.maybe_sent = status not in NOT_TAKEN
        return error
    return PermanentDeliveryError(detail, destination, status)


def not_answered(destination: str, exc: Exception, maybe_sent: bool) -> DeliveryError:
    """The error for a call that got no answer: the connection failed or timed out (transient),
    or the destination's certificate did not verify (permanent: ``untrusted``)."""
    failure = certificate_failure(exc)
    if failure is not None:
        return untrusted(destination, failure)
    error = TransientDeliveryError(f"{destination}: {exc.__class__.__name__}: {exc}", destination)
    error.maybe_sent = maybe_sent
    return error


def never_connected(exc: Exception) -> bool:
    """A requests or aiohttp error raised before anything was sent: the connection was never made."""
    try:
        import aiohttp
        if isinstance(exc, aiohttp.ClientConnectorError):
            return True
    except ImportError:  # only the event-loop worker has aiohttp
        pass
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, NewConnectionError):
            return True
        cause = getattr(cause, "reason", None) or (cause.args[0] if cause.args and isinstance(cause.args[0],
                                                                                               Exception) else None)
    return False


def certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind a requests or aiohttp error, if that is what
    it was (requests wraps it in urllib3's errors; aiohttp's error is one itself)."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "certificate_error", None)  # aiohttp's: one itself, without ssl's details
        if isinstance(cause, ssl.SSLCertVerificationError) and not isinstance(inner, BaseException):
            return cause
        nested = inner or getattr(cause, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in cause.args if isinstance(a, BaseException)), None)
        cause = nested or cause.__cause__ or cause.__context__
    return None


def untrusted(destination: str, failure: ssl.SSLCertVerificationError,
              who: str | None = None) -> PermanentDeliveryError:
    """The error for a destination whose certificate did not verify; raise it.

    Permanent, not transient: the handshake failed before anything was sent, and it fails the
    same way on every retry until someone changes a certificate or GRIDBUS_DESTINATION_CA (the
    same judgement as a 401/403: the other side could not be authenticated).  Retried, the
    messages would wait out the route's whole retry schedule, hidden in the delay queues, and
    then be dead-lettered anyway; dead-lettered at once, they show in `gridbus dlq` under one
    reason from the first failure, and `gridbus dlq replay` sends them once it is fixed (nothing
    was sent, so a replay is never a duplicate).  ``maybe_sent`` is False: a command is failed,
    not unknown.  ``who``: how the message names the destination, when not by ``destination``."""
    why = getattr(failure, "verify_message", None) or getattr(failure, "reason", None) or str(failure)
    error = PermanentDeliveryError(f"{who or destination}: certificate verification failed: {why}", destination)
    error.maybe_sent = False
    return error
