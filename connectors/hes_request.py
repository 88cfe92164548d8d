"""HES request destination: split a request by the meter → HES assignment, ask each HES, merge.

The assignment table is a CSV file ``meter,hes`` (a header line, one meter per
line), re-read when it changes.  A meter it does not name fails on its own
(``UNKNOWN_METER``); an HES that does not answer fails its meters
(``HES_UNREACHABLE``, ``TIMEOUT``; ``HES_UNTRUSTED`` at once when its certificate does not
verify), and the others' answers still count: the merged reply is PARTIAL.  The HES are asked at the same time.
"""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import orjson
import requests
from marshmallow import RAISE, Schema, fields, validate

from bus.changing_file import ChangingFile
from bus.envelope import Envelope
from bus.errors import ConfigError, ValidationError
from bus.options import describe
from bus.requests import replies
from bus.requests.replies import error, merge
from bus.routes.model import Endpoint
from connectors.http_outcome import certificate_failure, message_headers, never_connected, retry_after, transient
from connectors.http_session import LoopSessions, ThreadSessions

OPERATIONS = {"meter-readings": "MeterReadings", "commands": "EndDeviceControls"}


class HesRequestOptions(Schema):
    class Meta:
        unknown = RAISE

    assignment = fields.String(required=True, metadata=describe(
        "CSV file with the header meter,hes and one meter per line: which HES serves each meter; re-read "
        "within a second of a change."))
    hes = fields.Dict(keys=fields.String(), values=fields.Url(require_tld=False, schemes={"http", "https"}),
                      required=True, validate=validate.Length(min=1), metadata=describe(
        "The HES this route reaches: HES name (as in the assignment file) to its base URL (http or https)."))
    operation = fields.String(required=True, validate=validate.OneOf(list(OPERATIONS)), metadata=describe(
        "What is asked of the HES."))
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300), metadata=describe(
        "How long one HES call may take, in seconds."))
    # how long an HES that does not take a request (refused, 5xx, 429) is asked again; a
    # command is never asked past its expiry
    retry_for_s = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=3600), metadata=describe(
        "How long an HES that does not take a request (refused connection, 5xx, 429) is asked again, in "
        "seconds; a command is never asked past its expiry."))


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

    def _ask(self, hes: str, base: str, options: dict, document: dict, meters: list[str],
             envelope: Envelope) -> tuple[dict | None, list[dict]]:
        """``asking`` driven with requests, in this thread."""
        steps = asking(hes, base, options, document, meters, envelope)
        answer = None
        try:
            while True:
                step = steps.send(answer)
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    answer = None
                    continue
                try:
                    # a session per calling thread of the pool: requests' Session is not thread-safe
                    got = self.sessions.get().request(step.method, step.url, data=step.body, timeout=step.timeout_s,
                                                      headers=step.headers)
                    answer = Heard("answered", got.status_code, got.content, got.headers.get("Retry-After"))
                except requests.Timeout as exc:
                    answer = Heard("not-sent" if never_connected(exc) else "timeout", reason=exc.__class__.__name__)
                except requests.RequestException as exc:
                    self.sessions.drop()  # a broken pool is not reused
                    answer = _not_heard(exc)
        except StopIteration as done:
            return done.value

    async def _ask_async(self, hes: str, base: str, options: dict, document: dict, meters: list[str],
                         envelope: Envelope) -> tuple[dict | None, list[dict]]:
        """``asking`` driven with aiohttp, on the loop."""
        import aiohttp  # only the event-loop worker needs it

        steps = asking(hes, base, options, document, meters, envelope)
        answer = None
        try:
            while True:
                step = steps.send(answer)
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    answer = None
                    continue
                try:
                    async with self.loop_sessions.get().request(
                            step.method, step.url, data=step.body, headers=step.headers,
                            timeout=aiohttp.ClientTimeout(total=step.timeout_s)) as got:
                        answer = Heard("answered", got.status, await got.read(), got.headers.get("Retry-After"))
                except asyncio.TimeoutError:
                    answer = Heard("timeout", reason="TimeoutError")
                except aiohttp.ClientError as exc:
                    answer = _not_heard(exc)
        except StopIteration as done:
            return done.value


# -- asking one HES: what to send, what an answer means, when to ask again ---------------------
# Written once as a generator of steps (a POST or GET to make, or a pause) that is sent what
# was heard; the thread worker drives it with requests, the event-loop worker with aiohttp.
# The rules (the 2020 lesson: every answer about a meter is what its HES said about it):
# - an HES that did not take the request (connection refused, 5xx, 408, 429) is asked again,
#   after its Retry-After, until the retry budget or the command's expiry runs out: transient
#   is not final, and its meters end HES_UNAVAILABLE (the command id stays usable);
# - a command whose answer never came (timeout, a connection broken after sending) has an
#   unknown outcome: the HES is asked for the command's status (``GET
#   /requests/commands/{commandId}``, docs/request-formats.md) until every meter is known or
#   the command is past its expiry by more than the timeout; still unknown then, the meter is
#   OUTCOME_UNKNOWN and the request ``unknown``, never ``failed``;
# - a meter is executed only if its HES said so; read values only from the HES's answer.

STATUS_POLL_S = 1.0
# errors that say the HES did not take the command: a resend of the same command id may run
NOT_TAKEN = {"HES_UNAVAILABLE", "HES_UNREACHABLE", "HES_UNTRUSTED"}


class Call:
    __slots__ = ("method", "url", "body", "headers", "timeout_s")

    def __init__(self, method: str, url: str, body: bytes | None, headers: dict, timeout_s: float):
        self.method, self.url, self.body, self.headers, self.timeout_s = method, url, body, headers, timeout_s


class Pause:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float):
        self.seconds = seconds


class Heard:
    """What came of a Call: ``answered`` (status, content), ``not-sent`` (no connection: the HES
    never saw it), ``untrusted`` (its certificate did not verify: never sent), ``timeout`` or
    ``broken`` (it may have been seen)."""
    __slots__ = ("kind", "status", "content", "retry_after", "reason")

    def __init__(self, kind: str, status: int = 0, content: bytes = b"", retry_after: str | None = None,
                 reason: str = ""):
        self.kind, self.status, self.content, self.retry_after, self.reason = kind, status, content, retry_after, reason


def _not_heard(exc: Exception) -> Heard:
    """What a requests or aiohttp error says was heard: nothing sent, or maybe sent (broken),
    or an HES whose certificate did not verify (``untrusted``, before anything was sent)."""
    failure = certificate_failure(exc)
    if failure is not None:
        return Heard("untrusted", reason=getattr(failure, "verify_message", None) or str(failure))
    return Heard("not-sent" if never_connected(exc) else "broken", reason=exc.__class__.__name__)


def expiry_of(document: dict) -> float | None:
    """The command's expiresAt (epoch seconds), as the gateway settled it; None without one."""
    value = (document.get("Request") or {}).get("expiresAt") if isinstance(document, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def asking(hes: str, base: str, options: dict, document: dict, meters: list[str], envelope: Envelope):
    """Ask ``hes`` for its ``meters``; returns (its reply or None, the errors of its meters)."""
    operation = options["operation"]
    commands = operation == "commands"
    url, body, headers = _call(base, options, document, meters, envelope)
    expires = expiry_of(document) if commands else None
    budget_end = time.time() + options["retry_for_s"]
    if expires is not None:
        budget_end = min(budget_end, expires)
    while True:
        heard = yield Call("POST", url, body, headers, options["timeout_s"])
        if heard.kind == "answered" and not transient(heard.status):
            return _interpret(hes, heard.status, heard.content, meters, commands)
        if heard.kind == "untrusted":
            # not asked again: a certificate that did not verify fails the same way until someone
            # changes it or GRIDBUS_DESTINATION_CA (connectors/http_outcome.py, untrusted); nothing
            # was sent, so a command is failed, not unknown
            return None, [error("HES_UNTRUSTED", f"{hes}: certificate verification failed: {heard.reason}", m)
                          for m in meters]
        if heard.kind in ("answered", "not-sent"):  # the HES did not take it: worth asking again
            why = f"answered {heard.status}" if heard.kind == "answered" else f"not reachable ({heard.reason})"
            wait = max(1.0, retry_after(heard.retry_after) or 0.0)
            if time.time() + wait >= budget_end:
                return None, [error("HES_UNAVAILABLE", f"{hes} {why}; asked until "
                                    f"{'the command expired' if expires and budget_end == expires else 'the retry budget ran out'}",
                                    m) for m in meters]
            yield Pause(wait)
            continue
        if not commands:  # a read that timed out: its meters fail; reading again is the caller's choice
            return None, (_timed_out(hes, options, meters) if heard.kind == "timeout"
                          else _unreachable(hes, heard.reason, meters))
        break
    # a command whose answer never came: ask the HES what became of it
    command_id = document["Request"]["commandId"]
    status_url = f"{base.rstrip('/')}/requests/commands/{quote(command_id, safe='')}?meters={','.join(meters)}"
    give_up = max(expires or time.time(), time.time()) + options["timeout_s"]
    known: dict[str, dict] = {}
    while True:
        heard = yield Call("GET", status_url, None, {"X-Correlation-ID": envelope.correlation},
                           options["timeout_s"])
        if heard.kind == "answered" and heard.status == 200:
            known = _outcomes(hes, heard.content, meters, expires)
            if len(known) == len(meters):
                break
        if time.time() >= give_up:
            break
        yield Pause(STATUS_POLL_S)
    results, errors = [], []
    for m in meters:
        outcome = known.get(m)
        if outcome is None:
            errors.append(error("OUTCOME_UNKNOWN", f"{hes} did not answer and could not say whether it executed "
                                                   "the command on this meter", m))
        elif outcome.get("status") == "executed":
            results.append({"meter": m, "status": "executed", "state": outcome.get("state")})
        else:
            results.append({"meter": m, "status": outcome.get("status")})
            errors.append(outcome["error"])
    reply = {"Reply": {"Result": replies.result_of(meters, errors)},
             "Payload": {"EndDeviceControls": {"commandId": command_id, "action": document["Request"].get("action"),
                                               "results": results}}} if results else None
    return reply, errors


def _outcomes(hes: str, content: bytes, meters: list[str], expires: float | None) -> dict[str, dict]:
    """The meters whose outcome the HES's status answer settles: meter → {status, state | error}."""
    try:
        answer = orjson.loads(content)
    except ValueError:
        return {}
    statuses = answer.get("meters") if isinstance(answer, dict) else None
    if not isinstance(statuses, dict):
        return {}
    past_expiry = expires is not None and time.time() >= expires
    known = {}
    for m in meters:
        status = statuses.get(m)
        kind = status.get("status") if isinstance(status, dict) else None
        if kind == "executed":
            known[m] = {"status": "executed", "state": status.get("state")}
        elif kind in ("failed", "expired"):
            code = status.get("error") or ("EXPIRED" if kind == "expired" else "FAILED")
            known[m] = {"status": kind, "error": error(code, f"{hes}: {kind} ({code})", m)}
        elif kind is None and past_expiry:
            # never received, and an HES never executes a command past its expiry: final
            known[m] = {"status": "not-executed", "error": error(
                "NOT_EXECUTED", f"{hes} never received the command before its expiry", m)}
    return known


def _call(base: str, options: dict, document: dict, meters: list[str], envelope: Envelope):
    """(url, body, headers) of asking an HES for its ``meters``."""
    sub = {**document, "Request": {**document["Request"], "meters": meters}}
    return (f"{base.rstrip('/')}/requests/{options['operation']}", orjson.dumps(sub),
            message_headers(envelope))


def _timed_out(hes: str, options: dict, meters: list[str]) -> list[dict]:
    return [error("TIMEOUT", f"{hes} did not answer within {options['timeout_s']:g}s", m) for m in meters]


def _unreachable(hes: str, reason: str, meters: list[str]) -> list[dict]:
    return [error("HES_UNREACHABLE", f"{hes}: {reason}", m) for m in meters]


def _interpret(hes: str, status: int, content: bytes, meters: list[str],
               commands: bool = False) -> tuple[dict | None, list[dict]]:
    """An HES's answer: its reply, or the errors of its meters.  Every meter asked ends with
    what the HES said about it: executed (a command's result), read (a read's values), or an
    error; a meter it said nothing about is an error too, never a success."""
    try:
        reply = orjson.loads(content)
    except ValueError:  # orjson.JSONDecodeError is one
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("Reply"), dict):
        return None, [error("HES_ERROR", f"{hes} answered {status} without a reply", m) for m in meters]
    stated = reply["Reply"].get("Error") or []
    stated = [e for e in stated if isinstance(e, dict)]
    if reply["Reply"].get("Result") == "FAILED" and not any(e.get("meter") for e in stated):
        # the HES refused the whole request: each of its meters failed for that reason
        reason = "; ".join(str(e.get("reason", "")) for e in stated) or "FAILED"
        return None, [error("HES_REFUSED", f"{hes}: {reason}", m) for m in meters]
    failed = {e.get("meter") for e in stated}
    confirmed = _confirmed(reply, commands)
    silent = [m for m in meters if m not in failed and m not in confirmed]
    return reply, [error("NOT_CONFIRMED", f"{hes} answered without a "
                         f"{'result' if commands else 'reading'} for this meter", m) for m in silent]


def _confirmed(reply: dict, commands: bool) -> set:
    """The meters the HES's payload answers for: executed (a command) or read (a read)."""
    payload = reply.get("Payload") if isinstance(reply.get("Payload"), dict) else {}
    if commands:
        results = (payload.get("EndDeviceControls") or {}).get("results") or []
        return {r.get("meter") for r in results if isinstance(r, dict) and r.get("status") == "executed"}
    blocks = (payload.get("MeterReadings") or {}).get("MeterReading") or []
    return {b.get("meter") for b in blocks if isinstance(b, dict) and (b.get("readings") or b.get("intervalBlocks")
                                                                       or b.get("Readings"))}
