"""Dead letters' header values made into what the store's columns take, and AMQP values as JSON.

Anyone who may publish to a dead-letter exchange chooses the headers a row is made of, so no
header is trusted to be what its column holds (``storable``).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

from bus.documents import nesting_depth

# What each column takes.  Anyone who may publish to a dead-letter exchange chooses the
# headers a row is made of: a table where a route's name belongs, bytes, a count beyond
# a 64-bit INTEGER, a reason of 100,000 characters.  One such row failing its insert held
# every dead letter behind it (the keeper reconnected, and the same message came back
# first), so every value is made into what its column takes; the headers column keeps
# what was sent.
NAME_CHARS = 1_024   # an id, a route, a fingerprint, an error class, a host
TEXT_CHARS = 65_536  # a reason, a traceback
HEADER_DEPTH = 64    # header tables and arrays nested deeper are cut (as JSON bodies are refused)
LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: a later failure time is no time at all
_INT64 = 2 ** 63
_TEXT_COLUMNS = {"dl_id": NAME_CHARS, "message_id": NAME_CHARS, "correlation_id": NAME_CHARS,
                 "route": NAME_CHARS, "destination": NAME_CHARS, "fingerprint": NAME_CHARS,
                 "error_class": NAME_CHARS, "reason": TEXT_CHARS, "traceback": TEXT_CHARS,
                 "worker_host": NAME_CHARS}


def as_text(value: Any, limit: int = NAME_CHARS) -> str:
    """Any header value as text of at most ``limit`` characters (``""`` for none)."""
    if type(value) is not str:
        if value is None:
            return ""
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value[:limit * 4]).decode("utf-8", "replace")
        elif isinstance(value, (dict, list, tuple)):
            value = dumps(value)
        else:
            value = str(value)
    if len(value) > limit:
        note = f"... (cut: {len(value)} characters)"
        value = value[:limit - len(note)] + note
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate is no SQLite text
    if "\x00" in value:  # PostgreSQL's text holds no NUL: the row would fail, and hold up the queue
        value = value.replace("\x00", "\ufffd")
    return value


def as_count(value: Any) -> int | None:
    """A count a 64-bit INTEGER holds, from a number or its digits; None if there is none."""
    if isinstance(value, (str, bytes)) and len(value) <= 20:
        try:
            value = int(value)
        except ValueError:
            return None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, Decimal):
        value = int(value) if value.is_finite() and abs(value) < _INT64 and value == value.to_integral_value() \
            else None
    if type(value) is not int or not -_INT64 <= value < _INT64:
        return None
    return value


def as_instant(value: Any, default: float) -> float:
    """Epoch seconds from a number, its digits or a datetime; ``default`` when that is no
    instant between 1970 and 9999 (a ``time.ctime`` of 1e308 fails)."""
    try:
        if isinstance(value, dt.datetime):
            value = value.timestamp()
        elif isinstance(value, (str, bytes)) and len(value) > 40:
            return default
        elif isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str, bytes)):
            return default
        seconds = float(value)
    except (ValueError, OverflowError, OSError):
        return default
    return seconds if 0 <= seconds <= LATEST else default  # NaN compares false too


def bounded(value: Any, depth: int = HEADER_DEPTH) -> Any:
    """``value`` with tables and arrays nested deeper than ``depth`` replaced by a note."""
    if isinstance(value, (dict, list, tuple)):
        if depth <= 0:
            return {"$cut": f"nested deeper than {HEADER_DEPTH} levels"}
        if isinstance(value, dict):
            return {k: bounded(v, depth - 1) for k, v in value.items()}
        return [bounded(v, depth - 1) for v in value]
    return value


def storable(row: dict) -> dict:
    """``row`` with each value made into what its column takes (see ``as_text``)."""
    out = dict(row)
    for column, limit in _TEXT_COLUMNS.items():
        value = out.get(column)
        if value is None and column not in ("dl_id", "route", "fingerprint"):  # NULL, as before
            continue
        if type(value) is not str or len(value) > limit or not value.isascii() or "\x00" in value:
            out[column] = as_text(value, limit)
    out["attempts"] = as_count(out.get("attempts"))
    collected = as_instant(out.get("collected_at"), time.time())
    out["collected_at"] = collected
    out["first_failure"] = as_instant(out.get("first_failure"), collected)
    out["last_failure"] = as_instant(out.get("last_failure"), collected)
    return out


def to_json(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals) as JSON that can be read back exactly."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    return value


def _tag(value: Any) -> Any:
    if isinstance(value, (bytes, dt.datetime, Decimal)):
        return to_json(value)
    raise TypeError(f"cannot store a header value of type {type(value).__name__}")


def dumps(value: Any) -> str:
    """``json.dumps(to_json(value))`` without walking plain JSON values in Python; tables
    nested deeper than ``HEADER_DEPTH`` are cut, so that reading the row back (``from_json``
    recurses) never fails.  Counting brackets first keeps the usual headers off the walk."""
    try:
        text = json.dumps(value, default=_tag)
    except RecursionError:
        return json.dumps(bounded(value), default=_tag)
    if text.count("{") + text.count("[") > HEADER_DEPTH and nesting_depth(text) > HEADER_DEPTH + 1:
        return json.dumps(bounded(value), default=_tag)  # + 1: a tagged value is an object
    return text


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, raw), = value.items()
            if tag == "$bytes":
                return base64.b64decode(raw)
            if tag == "$datetime":
                return dt.datetime.fromisoformat(raw)
            if tag == "$decimal":
                return Decimal(raw)
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value
