"""MDMS stand-in: a real HTTP server that stores IEC 61968-100 JSON messages.

    POST /messages    MeterReadings or EndDeviceEvents message (docs/canonical-model.md);
                      also accepted on /readings and /events
    GET  /stats       {"readings", "events", "posts", "duplicate_values", "rejected_posts",
                       "refused_posts", "messages", "values_received", "mode"}
    GET  /readings?meter=M, /events?meter=M, /health
    POST /_control    {"mode": "healthy|slow|error|down", "status", "delay_s", "times",
                       "retry_after_s"}; applies to POSTs of messages only
    POST /_reset      clear the store, counters and request log
    GET  /_requests?limit=N   last N requests: time, method, path, message_id, status

Readings are stored idempotently by (meter, readingType, timeStamp), events by
(meter, eventType, createdDateTime). A message is checked completely before any
of it is stored, so a 400 leaves the store untouched.

Server: stdlib ``ThreadingHTTPServer`` (a thread per connection, HTTP/1.1
keep-alive). It sustained more POSTs/s of 6,000-value messages than waitress on
loopback, and it lets ``down`` mode close a connection without any answer.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulators.control import ControlError, FailureMode, Faults, RequestLog

NOUNS = ("MeterReadings", "EndDeviceEvents")
MESSAGE_PATHS = ("/messages", "/readings", "/events")
_TIMESTAMPS = re.compile(r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)+")
_MESSAGE_ID = re.compile(rb'"MessageID"\s*:\s*"([^"]*)"')


class Rejected(Exception):
    """A message the MDMS refuses (400): the code and reason go into the Reply."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class MdmsStore:
    """Readings as meter -> readingType -> {timeStamp: value}; one lock around writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.readings: dict[str, dict[str, dict[str, float]]] = {}
            self.qualities: dict[tuple[str, str, str], list[str]] = {}
            self.events: dict[tuple[str, str, str], dict[str, Any]] = {}
            self.message_ids: set[str] = set()
            self.counts = dict.fromkeys(
                ("readings", "posts", "duplicate_values", "rejected_posts", "refused_posts",
                 "values_received"), 0)

    def store(self, doc: Any, raw: bytes) -> tuple[str, str | None, int, int]:
        """Check then store one message; returns (noun, MessageID, new, duplicates)."""
        try:
            header = doc["Header"]
            noun = header["Noun"]
            message_id = header.get("MessageID")
            payload = doc["Payload"][noun] if noun in NOUNS else None
            if payload is None:
                raise Rejected("UNKNOWN_NOUN", f"Noun must be one of {NOUNS}, not {noun!r}")
            if noun == "MeterReadings":
                staged = _stage_readings(payload["MeterReading"], b'"qualities"' in raw)
            else:
                staged = _stage_events(payload["EndDeviceEvent"])
        except Rejected:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise Rejected("INVALID_MESSAGE", f"{type(exc).__name__}: {exc}") from exc
        with self._lock:
            apply = self._apply_readings if noun == "MeterReadings" else self._apply_events
            new, total = apply(*staged)
            c = self.counts
            c["posts"] += 1
            c["values_received"] += total
            c["duplicate_values"] += total - new
            if message_id is not None:
                self.message_ids.add(message_id)
        return noun, message_id, new, total - new

    def _apply_readings(self, blocks: list, qualities: dict) -> tuple[int, int]:
        new = total = 0
        for meter, rt, values, n in blocks:
            by_type = self.readings.get(meter)
            if by_type is None:
                by_type = self.readings[meter] = {}
            series = by_type.get(rt)
            if series is None:
                series = by_type[rt] = {}
            before = len(series)
            series.update(values)
            new += len(series) - before
            total += n
        self.qualities.update(qualities)
        self.counts["readings"] += new
        return new, total

    def _apply_events(self, events: dict, total: int) -> tuple[int, int]:
        before = len(self.events)
        self.events.update(events)
        return len(self.events) - before, total

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "events": len(self.events), "messages": len(self.message_ids)}

    def readings_of(self, meter: str) -> list[dict[str, Any]]:
        with self._lock:
            series = {rt: dict(values) for rt, values in self.readings.get(meter, {}).items()}
            qualities = {k: v for k, v in self.qualities.items() if k[0] == meter}
        out = []
        for rt in sorted(series):
            for ts in sorted(series[rt]):
                item = {"readingType": rt, "timeStamp": ts, "value": series[rt][ts]}
                if (meter, rt, ts) in qualities:
                    item["qualities"] = qualities[(meter, rt, ts)]
                out.append(item)
        return out

    def events_of(self, meter: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [e for k, e in self.events.items() if k[0] == meter]
        return sorted(found, key=lambda e: (e["createdDateTime"], e["eventType"]))
