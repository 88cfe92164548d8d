"""Headers gridbus adds to a dead letter.  The original headers stay as they were;
removing every ``gridbus-dl-*`` key gives back the message as it failed."""
from __future__ import annotations

import hashlib
import re

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


def original_headers(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if not k.startswith(DL_PREFIX)}
