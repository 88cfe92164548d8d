"""HES request destination: split a request by the meter → HES assignment, ask each HES, merge.

The assignment table is a CSV file ``meter,hes`` (a header line, one meter per
line), re-read when it changes.  A meter it does not name fails on its own
(``UNKNOWN_METER``); an HES that does not answer fails its meters
(``HES_UNREACHABLE``, ``TIMEOUT``), and the others' answers still count: the
merged reply is PARTIAL.  The HES are asked at the same time.
"""
from __future__ import annotations

import asyncio
import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.changing_file import ChangingFile
from bus.envelope import Envelope
from bus.errors import ConfigError, ValidationError
from bus.requests.replies import error, merge
from bus.routes.model import Endpoint
from connectors.http_session import LoopSessions, ThreadSessions

OPERATIONS = {"meter-readings": "MeterReadings", "commands": "EndDeviceControls"}


class HesRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    assignment = fields.String(required=True)
    hes = fields.Dict(keys=fields.String(), values=fields.Url(require_tld=False, schemes={"http", "https"}),
                      required=True, validate=validate.Length(min=1))
    operation = fields.String(required=True, validate=validate.OneOf(list(OPERATIONS)))
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300))


class Assignment:
    """meter → HES from the CSV file, cached until the file changes."""

    # a changed file is noticed within this, without a stat on every request
    RECHECK_S = 1.0

    def __init__(self):
        self._files: dict[str, ChangingFile] = {}

    def table(self, path: str) -> dict[str, str]:
        changing = self._files.get(path)
        if changing is None:
            changing = self._files.setdefault(path, ChangingFile(path, _parse_assignment))
        try:
            return changing.read(self.RECHECK_S)
        except OSError as exc:
            raise ConfigError(f"meter assignment {path}: {exc}") from exc


def _parse_assignment(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["meter"].strip(): r["hes"].strip() for r in csv.DictReader(f) if r.get("meter")}


class HesRequestDestination:
    name = "hes-request"
    roles = ("destination",)
    takes_requests = True

    def __init__(self):
        self.assignment = Assignment()
        self.sessions = ThreadSessions()
        self.loop_sessions = LoopSessions()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hes-request")

    def options_schema(self, role: str) -> type[Schema]:
        return HesRequestOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, endpoint.options["operation"], tuple(sorted(endpoint.options["hes"])))

    def _split(self, document: dict, endpoint: Endpoint) -> tuple[list, dict[str, list[str]], list[dict]]:
        """(the meters asked, meters by HES, errors of the meters no HES here serves)."""
        options = endpoint.options
        body = document.get("Request") if isinstance(document, dict) else None
        meters = body.get("meters") if isinstance(body, dict) else None
        if not isinstance(meters, list) or not meters:
            raise ValidationError("request without a meters list")
        table = self.assignment.table(options["assignment"])
        groups: dict[str, list[str]] = {}
        errors = []
        for meter in meters:
            hes = table.get(meter)
            if hes is None:
                errors.append(error("UNKNOWN_METER", f"meter {meter} is not assigned to any HES", meter))
            elif hes not in options["hes"]:
                errors.append(error("UNKNOWN_HES", f"meter {meter} is assigned to {hes}, which this route "
                                                   "does not reach", meter))
            else:
                groups.setdefault(hes, []).append(meter)
        return meters, groups, errors

    @staticmethod
    def _merged(endpoint: Endpoint, envelope: Envelope, meters: list, answers: list, errors: list) -> dict:
        parts = []
        for part, part_errors in answers:
            errors += part_errors
            if part:
                parts.append(part)
        return merge(OPERATIONS[endpoint.options["operation"]], envelope.correlation, meters, parts, errors)

    def request(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        meters, groups, errors = self._split(document, endpoint)
        options = endpoint.options
        if len(groups) == 1:  # one HES (most requests): asked from this thread, no hand-over to the pool
            (hes, group), = groups.items()
            answers = [self._ask(hes, options["hes"][hes], options, document, group, envelope)]
        else:  # several HES: asked side by side, so the slowest sets the time, not their sum
            asks = [self._pool.submit(self._ask, hes, options["hes"][hes], options, document, group, envelope)
                    for hes, group in groups.items()]
            answers = [future.result() for future in asks]
        return self._merged(endpoint, envelope, meters, answers, errors)

    async def close_async(self) -> None:
        """The event-loop worker stops: its HTTP connections close with it."""
        await self.loop_sessions.close()

    async def request_async(self, document: dict, envelope: Envelope, endpoint: Endpoint) -> dict:
        """``request`` on an event loop: the HES are asked side by side without threads."""
        meters, groups, errors = self._split(document, endpoint)
        options = endpoint.options
        answers = await asyncio.gather(*(self._ask_async(hes, options["hes"][hes], options, document, group,
                                                         envelope) for hes, group in groups.items()))
        return self._merged(endpoint, envelope, meters, list(answers), errors)

    @staticmethod
    def _call(hes: str, base: str, options: dict, document: dict, meters: list[str], envelope: Envelope):
        """(url, body, headers) of asking ``hes`` for its ``meters``."""
        sub = {**document, "Request": {**document["Request"], "meters": meters}}
        return (f"{base.rstrip('/')}/requests/{options['operation']}", orjson.dumps(sub),
                {"Content-Type": "application/json", "X-Correlation-ID": envelope.correlation,
                 "X-Message-ID": envelope.message_id, "traceparent": envelope.traceparent})

    def _ask(self, hes: str, base: str, options: dict, document: dict, meters: list[str],
             envelope: Envelope) -> tuple[dict | None, list[dict]]:
        url, body, headers = self._call(hes, base, options, document, meters, envelope)
        try:
            # a session per calling thread of the pool: requests' Session is not thread-safe
            answer = self.sessions.get().post(url, data=body, timeout=options["timeout_s"], headers=headers)
        except requests.Timeout:
            return None, _timed_out(hes, options, meters)
        except requests.RequestException as exc:
            self.sessions.drop()  # a broken pool is not reused
            return None, _unreachable(hes, exc, meters)
        return _interpret(hes, answer.status_code, answer.content, meters)

    async def _ask_async(self, hes: str, base: str, options: dict, document: dict, meters: list[str],
                         envelope: Envelope) -> tuple[dict | None, list[dict]]:
        import aiohttp  # only the event-loop worker needs it

        url, body, headers = self._call(hes, base, options, document, meters, envelope)
        try:
            async with self.loop_sessions.get().post(url, data=body, headers=headers,
                                                     timeout=aiohttp.ClientTimeout(total=options["timeout_s"])) as answer:
                return _interpret(hes, answer.status, await answer.read(), meters)
        except asyncio.TimeoutError:
            return None, _timed_out(hes, options, meters)
        except aiohttp.ClientError as exc:
            return None, _unreachable(hes, exc, meters)


def _timed_out(hes: str, options: dict, meters: list[str]) -> list[dict]:
    return [error("TIMEOUT", f"{hes} did not answer within {options['timeout_s']:g}s", m) for m in meters]


def _unreachable(hes: str, exc: Exception, meters: list[str]) -> list[dict]:
    return [error("HES_UNREACHABLE", f"{hes}: {exc.__class__.__name__}", m) for m in meters]


def _interpret(hes: str, status: int, content: bytes, meters: list[str]) -> tuple[dict | None, list[dict]]:
    """An HES's answer: its reply, or the errors of its meters."""
    try:
        reply = orjson.loads(content)
    except ValueError:  # orjson.JSONDecodeError is one
        reply = None
    if not isinstance(reply, dict) or "Reply" not in reply:
        return None, [error("HES_ERROR", f"{hes} answered {status} without a reply", m) for m in meters]
    if (reply["Reply"].get("Result") == "FAILED" and not any(e.get("meter") for e in reply["Reply"].get("Error") or [])):
        # the HES refused the whole request: each of its meters failed for that reason
        reason = "; ".join(e.get("reason", "") for e in reply["Reply"].get("Error") or []) or "FAILED"
        return None, [error("HES_REFUSED", f"{hes}: {reason}", m) for m in meters]
    return reply, []


def assignment_file(path: Path, rows: dict[str, str]) -> None:
    """Write an assignment table (used by the demo, tests and benchmarks)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["meter", "hes"])
        w.writerows(sorted(rows.items()))
