"""MDMS stand-in: a real HTTP server that stores IEC 61968-100 JSON messages.

    POST /messages    MeterReadings or EndDeviceEvents message (docs/canonical-model.md);
                      also accepted on /readings and /events
    GET  /stats       {"readings", "events", "posts", "duplicate_values", "rejected_posts",
                       "refused_posts", "messages", "values_received", "mode"}
    GET  /readings?meter=M, /events?meter=M, /health
    POST /_control    {"mode": "healthy|slow|error|down", "status", "delay_s", "times",
                       "retry_after_s"}; applies to POSTs of messages and of requests
    POST /_reset      clear the store, counters and request log
    GET  /_requests?limit=N   last N requests: time, method, path, message_id, status

Requests (use cases 6-8, docs/request-formats.md); /_control modes apply to them too:

    POST /requests/billing-determinants   {"Header": {"Verb": "get", "Noun": "BillingDeterminants",
                      ...}, "Request": {"usagePoint", "from", "to"}}: determinants of the
                      stored 15-min readings (simulators/billing.py); "UP-<meter>" is the
                      usage point of meter <meter> (one per meter here), a bare meter id
                      works too.  No readings in the period: 200 with Result FAILED, NO_DATA.
    POST /requests/meter-readings, /requests/commands   forwarded unchanged to the bus
                      (``{bus_url}/meter-readings`` resp. ``/commands``, headers X-API-Key and
                      X-Correlation-ID), whose status and body are answered as they are;
                      no bus_url: 503 NO_BUS; bus unreachable: 502 BUS_UNREACHABLE; bus
                      silent for bus_timeout_s (30 s): 504 BUS_TIMEOUT.
    GET  /stats       also "request_counts": {"determinant_requests", "forwarded_requests",
                      "forward_failures"}

Readings are stored idempotently by (meter, readingType, timeStamp), events by
(meter, eventType, createdDateTime). A message is checked completely before any
of it is stored, so a 400 leaves the store untouched.

Server: stdlib ``ThreadingHTTPServer`` (a thread per connection, HTTP/1.1
keep-alive). Measured on loopback with 6,000-value (~365 KB) POSTs it needs a
little less CPU per POST than waitress (JSON parsing dominates both), serves
every connection at once where waitress queues behind a fixed pool (so ``slow``
mode does not stall other clients), and lets ``down`` close a connection
without any answer.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import threading
from sys import intern
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import requests

from simulators import billing
from simulators.control import (DROP, BackgroundServer, ControlError, FailureMode, Faults,
                                JsonRequestHandler, RequestLog, injected_failure, serve_until_signalled)

NOUNS = ("MeterReadings", "EndDeviceEvents")
MESSAGE_PATHS = ("/messages", "/readings", "/events")
DETERMINANTS_PATH = "/requests/billing-determinants"
# MDMS path -> the bus path it forwards to
FORWARD_PATHS = {"/requests/meter-readings": "/meter-readings", "/requests/commands": "/commands"}
REQUEST_PATHS = (DETERMINANTS_PATH, *FORWARD_PATHS)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_MESSAGE_ID = re.compile(rb'"MessageID"\s*:\s*"([^"]*)"')
_ZONED_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


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
        with self._lock:
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

    def bump(self, counter: str) -> None:
        with self._lock:
            self.counts[counter] += 1

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

    def series_of(self, meter: str) -> dict[str, dict[str, float]] | None:
        """A copy of one meter's readings (readingType -> {timeStamp: value}); None if unknown."""
        with self._lock:
            by_type = self.readings.get(meter)
            return None if by_type is None else {rt: dict(v) for rt, v in by_type.items()}

    def events_of(self, meter: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [e for k, e in self.events.items() if k[0] == meter]
        return sorted(found, key=lambda e: (e["createdDateTime"], e["eventType"]))


_READING_TYPE = re.compile(r"\d+(?:\.\d+){17}")
_EVENT_TYPE = re.compile(r"\d+\.\d+\.\d+\.\d+")


def _stage_readings(meter_readings: list, with_qualities: bool) -> tuple[list, dict]:
    """Blocks as (meter, readingType, {timeStamp: value}, n_values), checked in bulk:
    one dict comprehension per block, then C-level checks; no Python work per value.
    Timestamps are interned: a few hundred distinct instants serve millions of readings."""
    blocks: list[tuple[str, str, dict, int]] = []
    for mr in meter_readings:
        meter = mr["meter"]
        for blk in mr.get("intervalBlocks") or ():
            irs = blk["intervalReadings"]
            blocks.append((meter, blk["readingType"],
                           {intern(ir["timeStamp"]): ir["value"] for ir in irs}, len(irs)))
        for rd in mr.get("readings") or ():
            blocks.append((meter, rd["readingType"], {intern(rd["timeStamp"]): rd["value"]}, 1))
    stamps: set[str] = set()
    for meter, rt, values, _ in blocks:
        if not isinstance(meter, str) or not meter:
            raise Rejected("INVALID_METER", f"meter must be a non-empty string, not {meter!r}")
        if not isinstance(rt, str) or not _READING_TYPE.fullmatch(rt):
            raise Rejected("INVALID_READING_TYPE", f"meter {meter}: bad readingType {rt!r}")
        try:
            sum(values.values())             # raises on strings, null, lists
        except TypeError as exc:
            raise Rejected("INVALID_VALUE", f"meter {meter} {rt}: every value must be a number") from exc
        stamps.update(values)
    bad = [ts for ts in stamps if not _TIMESTAMP.fullmatch(ts)]
    if bad:
        raise Rejected("INVALID_TIMESTAMP", f"timeStamp must be UTC like 2026-10-31T18:45:00Z, not {bad[0]!r}")
    qualities: dict[tuple[str, str, str], list[str]] = {}
    if with_qualities:                       # rare: found by a byte search of the body
        for mr in meter_readings:
            for blk in mr.get("intervalBlocks") or ():
                for ir in blk["intervalReadings"]:
                    if ir.get("qualities"):
                        qualities[(mr["meter"], blk["readingType"], ir["timeStamp"])] = ir["qualities"]
            for rd in mr.get("readings") or ():
                if rd.get("qualities"):
                    qualities[(mr["meter"], rd["readingType"], rd["timeStamp"])] = rd["qualities"]
    return blocks, qualities


def _stage_events(events: list) -> tuple[dict, int]:
    staged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in events:
        meter, event_type, created = ev["meter"], ev["eventType"], ev["createdDateTime"]
        if not isinstance(meter, str) or not meter:
            raise Rejected("INVALID_METER", f"meter must be a non-empty string, not {meter!r}")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise Rejected("INVALID_EVENT_TYPE", f"meter {meter}: bad eventType {event_type!r}")
        if not isinstance(created, str) or not _TIMESTAMP.fullmatch(created):
            raise Rejected("INVALID_TIMESTAMP", f"meter {meter}: bad createdDateTime {created!r}")
        staged[(meter, event_type, created)] = ev
    return staged, len(events)


def _utc(value: Any) -> str | None:
    """An ISO 8601 instant with Z or an offset as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (fractions of a
    second dropped); None if it is not one (a time without offset names no instant)."""
    if not isinstance(value, str) or not _ZONED_INSTANT.fullmatch(value):
        return None
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class MdmsApp:
    """What the MDMS answers, independent of the HTTP server that carries it."""

    def __init__(self, name: str = "mdms-1", bus_url: str | None = None, bus_key: str | None = None,
                 bus_timeout_s: float = 30.0) -> None:
        self.name = name
        self.store = MdmsStore()
        self.faults = Faults()
        self.requests = RequestLog()
        self.bus_url = bus_url.rstrip("/") if bus_url else None
        self.bus_key = bus_key
        self.bus_timeout_s = bus_timeout_s
        self._request_lock = threading.Lock()
        # a session per server thread (a thread per caller's connection): forwards reuse their
        # connection to the bus, as a real MDMS's HTTP client would, instead of a new TCP
        # connection and a new session per request (which was most of this stand-in's CPU)
        self._sessions = threading.local()
        self.request_counts = dict.fromkeys(
            ("determinant_requests", "forwarded_requests", "forward_failures"), 0)

    def _header(self, noun: str | None, correlation_id: str | None) -> dict[str, Any]:
        return {"Verb": "reply", "Noun": noun, "Timestamp": _now(), "Source": self.name,
                "CorrelationID": correlation_id}

    def failed(self, code: str, reason: str, noun: str | None = None,
               message_id: str | None = None) -> dict[str, Any]:
        return {"Header": self._header(noun, message_id),
                "Reply": {"Result": "FAILED",
                          "Error": [{"code": code, "level": "FATAL", "reason": reason}]}}

    def post_message(self, path: str, body: bytes) -> tuple[int, dict, dict] | None:
        """(status, reply, extra headers); None means: drop the connection, answer nothing."""
        mode = self.faults.take()
        if mode.mode != "healthy":  # the id only for the request log of a refusal: no parse on the fast path
            match = _MESSAGE_ID.search(body, 0, 8192)
            message_id = match.group(1).decode("utf-8", "replace") if match else None
            injected = injected_failure(mode, self.requests, path, message_id,
                                        lambda: self.store.bump("refused_posts"),
                                        lambda status: self.failed(str(status), f"injected {status}",
                                                                   message_id=message_id))
            if injected is not None:
                return None if injected == DROP else injected
        noun = message_id = None
        try:
            # orjson parses a 6,000-value message in half the time of json: the stand-in
            # must not be what a benchmark measures
            doc = orjson.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("Header"), dict):
                noun, message_id = doc["Header"].get("Noun"), doc["Header"].get("MessageID")
            noun, message_id, new, dup = self.store.store(doc, body)
        except (ValueError, Rejected) as exc:
            code, reason = ((exc.code, exc.reason) if isinstance(exc, Rejected)
                            else ("MALFORMED_JSON", f"body is not JSON: {exc}"))
            self.store.bump("rejected_posts")
            self.requests.add(method="POST", path=path, message_id=message_id, status=400,
                              error=code)
            return 400, self.failed(code, reason, noun, message_id), {}
        self.requests.add(method="POST", path=path, message_id=message_id, status=200,
                          stored=new, duplicates=dup)
        return 200, {"Header": self._header(noun, message_id), "Reply": {"Result": "OK"},
                     "stored": new, "duplicates": dup}, {}

    def control(self, body: bytes) -> tuple[int, dict]:
        try:
            mode = FailureMode.from_dict(json.loads(body or b"{}"))
        except (ValueError, ControlError) as exc:
            return 400, self.failed("BAD_CONTROL", str(exc))
        self.faults.set(mode)
        return 200, {"mode": mode.to_dict()}

    def reset(self) -> tuple[int, dict]:
        self.store.reset()
        self.requests.clear()
        with self._request_lock:
            self.request_counts = dict.fromkeys(self.request_counts, 0)
        return 200, {"reset": True}

    def stats(self) -> dict[str, Any]:
        with self._request_lock:
            counts = dict(self.request_counts)
        # nested: the top-level integers stay the message counters they always were
        return {**self.store.stats(), "mode": self.faults.current.mode, "name": self.name,
                "request_counts": counts}

    # -- requests (use cases 6-8)
    def _count(self, counter: str) -> None:
        with self._request_lock:
            self.request_counts[counter] += 1

    def post_request(self, path: str, body: bytes) -> tuple[int, bytes | dict, dict] | None:
        """(status, reply, extra headers) for a request POST; the reply is bytes when it is
        the bus's answer passed through.  None means: drop the connection."""
        mode = self.faults.take()
        noun = correlation = message_id = None
        try:
            doc = orjson.loads(body)
        except ValueError as exc:
            doc, bad_json = None, exc
        else:
            bad_json = None
            if isinstance(doc, dict) and isinstance(doc.get("Header"), dict):
                noun, message_id = doc["Header"].get("Noun"), doc["Header"].get("MessageID")
                correlation = doc["Header"].get("CorrelationID") or message_id
        injected = injected_failure(mode, self.requests, path, message_id, lambda: self.store.bump("refused_posts"),
                                    lambda status: self.failed(str(status), f"injected {status}", noun, correlation))
        if injected is not None:
            return None if injected == DROP else injected
        if bad_json is not None:
            status, reply, headers = 400, self.failed("MALFORMED_JSON", f"body is not JSON: {bad_json}",
                                                      noun, correlation), {}
        elif not isinstance(doc, dict) or not isinstance(doc.get("Header"), dict):
            status, reply, headers = 400, self.failed("INVALID_REQUEST", "a request is an object with a "
                                                      "Header object", noun, correlation), {}
        elif path == DETERMINANTS_PATH:
            self._count("determinant_requests")
            status, reply = self.billing_determinants(doc, correlation)
            headers = {}
        else:
            self._count("forwarded_requests")
            status, reply, headers = self.forward(FORWARD_PATHS[path], body, noun, correlation)
        result = (reply.get("Reply") or {}).get("Result") if isinstance(reply, dict) else None
        self.requests.add(method="POST", path=path, message_id=message_id, status=status,
                          **({"result": result} if result else {}))
        return status, reply, headers

    def billing_determinants(self, doc: dict, correlation: str | None) -> tuple[int, dict]:
        noun = "BillingDeterminants"
        header, request = doc["Header"], doc.get("Request")
        if header.get("Noun") not in (None, noun):
            return 400, self.failed("UNKNOWN_NOUN", f"Noun must be {noun!r} here, not {header.get('Noun')!r}",
                                    header.get("Noun"), correlation)
        if not isinstance(request, dict):
            return 400, self.failed("INVALID_REQUEST", "Request must be an object", noun, correlation)
        usage_point = request.get("usagePoint")
        if not isinstance(usage_point, str) or not usage_point.strip():
            return 400, self.failed("INVALID_REQUEST", f"Request.usagePoint must be a non-empty string, "
                                                       f"not {usage_point!r}", noun, correlation)
        start, end = _utc(request.get("from")), _utc(request.get("to"))
        for key, value in (("from", start), ("to", end)):
            if value is None:
                return 400, self.failed("INVALID_TIMESTAMP", f"Request.{key} must be an instant like "
                                        f"2026-11-01T00:00:00Z (or with an offset), not {request.get(key)!r}",
                                        noun, correlation)
        # one usage point per meter in the stand-in: "UP-<meter>" is <meter>'s; a bare meter id works too
        candidates = [usage_point[3:], usage_point] if usage_point.startswith("UP-") else [usage_point]
        meter, series = candidates[0], None
        for candidate in candidates:
            series = self.store.series_of(candidate)
            if series is not None:
                meter = candidate
                break
        try:
            found = billing.determinants(series or {}, start, end)
        except ValueError as exc:
            return 400, self.failed("INVALID_PERIOD", str(exc), noun, correlation)
        if not found["intervals"]:
            return 200, self.failed("NO_DATA", f"no 15-min kWh import readings of usage point {usage_point} "
                                               f"(meter {meter}) in ({start}, {end}]", noun, correlation)
        return 200, {"Header": self._header(noun, correlation), "Reply": {"Result": "OK"},
                     "Payload": {"BillingDeterminants": {"usagePoint": usage_point, "meter": meter, **found}}}

    def forward(self, bus_path: str, body: bytes, noun: str | None,
                correlation: str | None) -> tuple[int, bytes | dict, dict]:
        """The request passed to the bus unchanged; the bus's status and body come back as they are."""
        if not self.bus_url:
            self._count("forward_failures")
            return 503, self.failed("NO_BUS", "this MDMS has no bus to forward requests to "
                                              "(--bus-url / MDMS_BUS_URL)", noun, correlation), {}
        headers = {"Content-Type": "application/json"}
        if self.bus_key:
            headers["X-API-Key"] = self.bus_key
        if correlation:
            headers["X-Correlation-ID"] = str(correlation)
        url = self.bus_url + bus_path
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
            session.trust_env = False  # the bus is named by --bus-url, never reached through a proxy
        try:
            answer = session.post(url, data=body, headers=headers, timeout=self.bus_timeout_s)
        except requests.ConnectionError as exc:      # includes a refused or timed-out connect
            self._count("forward_failures")
            return 502, self.failed("BUS_UNREACHABLE", f"POST {url}: {type(exc).__name__}: {exc}",
                                    noun, correlation), {}
        except requests.Timeout:
            self._count("forward_failures")
            return 504, self.failed("BUS_TIMEOUT", f"POST {url}: no answer within {self.bus_timeout_s:g} s",
                                    noun, correlation), {}
        passed = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
        if "Retry-After" in answer.headers:
            passed["Retry-After"] = answer.headers["Retry-After"]
        return answer.status_code, answer.content, passed


class _Handler(JsonRequestHandler):
    server_version = "gridbus-mdms/1.0"

    def send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """An answer passed through as it came (the bus's reply to a forwarded request)."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        app: MdmsApp = self.server.app
        if url.path == "/stats":
            self.send_json(200, app.stats())
        elif url.path == "/health":
            mode = app.faults.current.mode
            self.send_json(503 if mode in ("error", "down") else 200,
                           {"status": "ok" if mode in ("healthy", "slow") else "unavailable",
                            "mode": mode, "name": app.name})
        elif url.path in ("/readings", "/events") and query.get("meter"):
            meter = query["meter"][0]
            found = (app.store.readings_of(meter) if url.path == "/readings"
                     else app.store.events_of(meter))
            self.send_json(200, {"meter": meter, url.path[1:]: found, "count": len(found)})
        elif url.path == "/_requests":
            limit = int(query.get("limit", ["0"])[0] or 0)
            self.send_json(200, {"requests": app.requests.last(limit)})
        else:
            self.send_json(404, app.failed("NOT_FOUND", f"no GET {url.path} (readings and events need ?meter=)"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.read_body()
        app: MdmsApp = self.server.app
        if path in MESSAGE_PATHS:
            answer = app.post_message(path, body)
            if answer is None:
                self.drop_connection()
            else:
                self.send_json(*answer)
        elif path in REQUEST_PATHS:
            answer = app.post_request(path, body)
            if answer is None:
                self.drop_connection()
            elif isinstance(answer[1], bytes):
                self.send_raw(*answer)
            else:
                self.send_json(*answer)
        elif path == "/_control":
            self.send_json(*app.control(body))
        elif path == "/_reset":
            self.send_json(*app.reset())
        else:
            self.send_json(404, app.failed("NOT_FOUND", f"no POST {path}"))


class MdmsServer(BackgroundServer):
    """The MDMS on ``host:port`` (port 0 picks a free one) in background threads."""

    app: MdmsApp

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "mdms-1",
                 verbose: bool = False, bus_url: str | None = None, bus_key: str | None = None,
                 bus_timeout_s: float = 30.0) -> None:
        super().__init__(_Handler, MdmsApp(name, bus_url, bus_key, bus_timeout_s), host, port, verbose)

    @property
    def store(self) -> MdmsStore:
        return self.app.store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.mdms", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="mdms-1")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.add_argument("--bus-url", default=os.environ.get("MDMS_BUS_URL") or None,
                   help="where on-demand reads and commands go (env MDMS_BUS_URL)")
    p.add_argument("--bus-key", default=os.environ.get("MDMS_BUS_KEY") or None,
                   help="X-API-Key sent to the bus (env MDMS_BUS_KEY)")
    a = p.parse_args(argv)
    return serve_until_signalled(MdmsServer(a.host, a.port, a.name, a.verbose, a.bus_url, a.bus_key))


if __name__ == "__main__":
    sys.exit(main())
