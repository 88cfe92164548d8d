"""IEC 61968-100 replies: the Result rule and merging the answers of several systems.

Result: OK when every meter succeeded, FAILED when none did, else PARTIAL.
Errors name the meter they are about (``{"code", "level", "reason", "meter"}``).
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Iterable

OK, PARTIAL, FAILED = "OK", "PARTIAL", "FAILED"


_second = [-1, ""]  # the last second formatted: every reply carries a Timestamp to the second


def now_iso() -> str:
    now = int(time.time())
    if now != _second[0]:
        _second[:] = [now, dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    return _second[1]


def result_of(meters: Iterable[str], errors: list[dict]) -> str:
    """OK / PARTIAL / FAILED for a request about ``meters`` that gathered ``errors``."""
    if not errors:
        return OK
    if any(not e.get("meter") for e in errors):
        return FAILED  # an error about the whole request
    asked = set(meters)
    failed_meters = {e["meter"] for e in errors}
    return FAILED if not asked or asked <= failed_meters else PARTIAL


def result_in(reply: dict) -> str | None:
    """The Result a Reply document carries (None if it carries none)."""
    return (reply.get("Reply") or {}).get("Result")


def error(code: str, reason: str, meter: str | None = None) -> dict:
    item = {"code": code, "level": "FATAL", "reason": reason}
    if meter:
        item["meter"] = meter
    return item


def reply(noun: str | None, correlation_id: str | None, result: str, errors: list[dict] = (),
          payload: dict | None = None, source: str = "gridbus") -> dict:
    body: dict[str, Any] = {"Header": {"Verb": "reply", "Noun": noun, "Timestamp": now_iso(),
                                       "Source": source, "CorrelationID": correlation_id},
                            "Reply": {"Result": result}}
    if errors:
        body["Reply"]["Error"] = list(errors)
    if payload is not None:
        body["Payload"] = payload
    return body


def failed(noun: str | None, correlation_id: str | None, code: str, reason: str,
           meters: Iterable[str] = ()) -> dict:
    """A FAILED reply: one error per meter when meters are given, else one for the request."""
    meters = list(meters)
    errors = [error(code, reason, m) for m in meters] if meters else [error(code, reason)]
    return reply(noun, correlation_id, FAILED, errors)


def merge(noun: str, correlation_id: str | None, meters: list[str], parts: list[dict],
          extra_errors: list[dict] = ()) -> dict:
    """One reply from the replies of several systems (each for some of ``meters``): payload
    lists concatenated, errors gathered, Result by the rule above."""
    errors = list(extra_errors)
    payload: dict[str, Any] = {}
    for part in parts:
        errors += (part.get("Reply") or {}).get("Error") or []
        for key, value in (part.get("Payload") or {}).items():
            if isinstance(value, dict):
                slot = payload.setdefault(key, {})
                for k, v in value.items():
                    if isinstance(v, list):
                        slot.setdefault(k, []).extend(v)
                    else:
                        slot[k] = v
            else:
                payload[key] = value
    return reply(noun, correlation_id, result_of(meters, errors), errors, payload or None)
