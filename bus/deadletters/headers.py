"""Headers gridbus adds to a dead letter.  The original headers stay as they were;
removing every ``gridbus-dl-*`` key gives back the message as it failed."""
from __future__ import annotations

import hashlib
import re
import socket
import time

DL_PREFIX = "gridbus-dl-"
DL_ROUTE = "gridbus-dl-route"
DL_DESTINATION = "gridbus-dl-destination"
DL_ERROR_CLASS = "gridbus-dl-error-class"
DL_REASON = "gridbus-dl-reason"
DL_TRACEBACK = "gridbus-dl-traceback"
DL_ATTEMPTS = "gridbus-dl-attempts"
DL_FIRST_FAILURE = "gridbus-dl-first-failure"
DL_LAST_FAILURE = "gridbus-dl-last-failure"
DL_WORKER_HOST = "gridbus-dl-worker-host"
DL_FINGERPRINT = "gridbus-dl-fingerprint"

# carried through retries so the dead letter can say when the trouble started
FIRST_FAILURE = "gridbus-first-failure"
PENDING_DESTINATIONS = "gridbus-pending-destinations"
REPLAYED_FROM = "gridbus-replayed-from"

_NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def normalise(message: str) -> str:
    """The message with ids, quoted values and numbers masked, so that one cause
    (say, 'MDMS answered 400: meter X unknown') groups into one fingerprint."""
    for pattern, mask in _NORMALISE:
        message = pattern.sub(mask, message)
    return message[:300]


def fingerprint(route_id: str, error_class: str, message: str) -> str:
    text = f"{route_id}|{error_class}|{normalise(message)}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


_HOST = socket.gethostname()


def reason_headers(route_id: str, destination: str, error_class: str, reason: str, *, attempts,
                   grouped_by: str | None = None, first_failure: float | None = None,
                   traceback: str | None = None) -> dict:
    """The ``gridbus-dl-*`` headers that say why a message was dead-lettered, as every
    publisher of dead letters (worker, AMQP ingress, network delivery) writes them.
    ``grouped_by``: the text its fingerprint is made from (the reason when not given), so that
    one kind of failure is one group; ``first_failure``: when the trouble started (now)."""
    now = time.time()
    headers = {DL_ROUTE: route_id, DL_DESTINATION: destination, DL_ERROR_CLASS: error_class, DL_REASON: reason,
               DL_ATTEMPTS: attempts, DL_FIRST_FAILURE: first_failure or now, DL_LAST_FAILURE: now,
               DL_WORKER_HOST: _HOST,
               DL_FINGERPRINT: fingerprint(route_id, error_class, reason if grouped_by is None else grouped_by)}
    if traceback is not None:
        headers[DL_TRACEBACK] = traceback
    return headers


def original_headers(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if not k.startswith(DL_PREFIX)}
