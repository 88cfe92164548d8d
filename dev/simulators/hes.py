"""HES stand-in: a head-end system answering on-demand reads and meter commands.

    POST /requests/meter-readings   {"Header": {"Verb": "get", "Noun": "MeterReadings", ...},
                                     "Request": {"meters": [...], "readingTypes": [...]?}}
    POST /requests/commands         {"Header": {"Verb": "create", "Noun": "EndDeviceControls", ...},
                                     "Request": {"commandId", "action", "meters": [...], "params": {...},
                                                 "expiresAt": instant?}}
    GET  /requests/commands/<commandId>[?meters=A,B]
                                    {"commandId", "meters": {meter: {"status": "in-progress" | "executed"
                                     (+ "state", "at") | "failed" (+ "error") | "expired"}}}; a meter
                                     never received is absent; not subject to /_control
    GET  /meters                    {"meters": [every meter it was asked about], "count"}
    GET  /meters/<meter>            {"meter", "state", "executions": [{"commandId", "action", "params", "at"}],
                                     "reads": n}
    GET  /stats       {"arrivals" (requests received, counted before any latency), "posts",
                       "read_requests", "meters_read", "command_requests", "executions",
                       "duplicate_executions", "unreachable_answers", "expired_refusals",
                       "rejected_posts", "refused_posts", "mode", "name"}
    POST /_meters     {"unreachable": [meters], "timeout": [meters], "latency_ms": N, "timeout_s": S}
                      per-meter faults; a key given replaces that setting, one left out keeps it
    GET  /_meters     the per-meter faults
    POST /_outages    {"meters": [meters]} puts them out (no power), {"restore": [meters]} brings them
                      back, {"clear": true} restores every one (keys may be combined: clear, then
                      restore, then meters);
                      answers {"out": [meters out], "count"}.  A meter out answers METER_UNREACHABLE,
                      as an unreachable one does (reads leave it out, commands do not execute on it),
                      whatever /_meters says; unlike /_meters, the keys add to and take from the
                      outages, and a /_meters "unreachable" list never restores a meter out
    GET  /_outages    {"out": [meters out], "count"}
    POST /_control, /_reset; GET /health, /_requests?limit=N   as the other stand-ins
                      (/_control modes apply to the two business POSTs; /_reset also clears
                      meter states, command statuses, the per-meter faults and the outages)

Replies are IEC 61968-100 JSON (docs/request-formats.md): Result OK when every meter
succeeded, FAILED when none did, else PARTIAL, with one Error per failed meter naming
it.  A request the HES cannot read at all is a 400 FAILED reply.

The HES serves any meter (the bus decides which HES gets which meter) and remembers
which meters it was asked about.  In a dev stack (``GRIDBUS_DEV_NETWORK_*`` set, see
simulators.network ``shared_model``) a HES named hes-a or hes-b serves only its meters of
that shared network (consumer, DT and feeder-head meters; odd serials HES-A, even HES-B,
as the dev stack's meter assignment): any other meter answers ``METER_UNREACHABLE``, as a
real head-end does for a meter it does not have.  ``/stats`` then gives ``fleet``, their number.

Reads are register values that depend only on (meter, readingType), stamped now.
Commands are idempotent per (commandId, meter): a repeat does not execute again and
answers the first execution's result.

The outages it simulates (``/_outages``) are what the outage correlator's verification (use
case 3, an "AMI ping" through the on-demand reads of use case 7) finds: a meter without power
does not answer its HES, so a read of it fails ``METER_UNREACHABLE`` while a meter with power
returns its values.  Whoever sends the last gasps (a test, a demo) sets them here too: the
stand-in does not see the alarms.

So that the bus can learn what became of a command whose answer it never saw, a command
may carry ``expiresAt``: when it comes to execute (after every latency, slow mode or hang)
a meter that has not executed it yet is refused ``EXPIRED`` at or after that instant, and
stays refused.  A valid command POST marks its meters in progress as it arrives, before any
sleep, until the execution step decides them; an injected refusal (error, down) removes the
marks again.  So a meter absent from the status answer was never received, and after
``expiresAt`` "absent" and "expired" are final: never executed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote

import orjson

from simulators.control import (DROP, BackgroundServer, FailureMode, MessageRejected, MessageStandIn,
                                MessageStandInHandler, injected_failure, standin_main, utc_now)
from simulators.network import hes_of, shared_model

RT_KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KVAH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0"
RT_KVAH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0"
DEFAULT_READING_TYPES = (RT_KWH_IMP, RT_KWH_EXP, RT_KVAH_IMP, RT_KVAH_EXP)

READ_PATH = "/requests/meter-readings"
COMMAND_PATH = "/requests/commands"
# path -> (Noun of the request and of its reply, the Verbs a request may have)
KINDS = {READ_PATH: ("MeterReadings", ("get",)), COMMAND_PATH: ("EndDeviceControls", ("create", "execute"))}
ACTIONS = ("connect", "disconnect", "load-limit", "credit-update", "payment-mode")
PAYMENT_MODES = ("prepaid", "postpaid")
DEFAULT_TIMEOUT_S = 30.0
_READING_TYPE = re.compile(r"\d+(?:\.\d+){17}")
_METER_PATH = re.compile(r"/meters/([^/]+)")
_STATUS_PATH = re.compile(r"/requests/commands/([^/]+)")     # the commandId, URL-encoded
_ZONED_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
MAX_OUT = 5_000_000       # meters out at once (/_outages): a whole network's, not unbounded
FINAL = ("executed", "expired")   # outcomes no later POST changes; "failed" (unreachable) may still execute


def initial_state() -> dict[str, Any]:
    return {"relay": "connected", "load_limit_kw": None, "credit": 0, "payment_mode": "postpaid"}


def register_value(meter: str, reading_type: str) -> float:
    """A deterministic value for (meter, readingType), 3 decimals: a delta (accumulation 4,
    e.g. the 15-min block-load energies) in [0, 2.5) kWh, anything else in [0, 100000)."""
    digest = int.from_bytes(hashlib.sha256(f"{meter}|{reading_type}".encode()).digest()[:8], "big")
    fields = reading_type.split(".")
    scale = 2_500 if len(fields) > 3 and fields[3] == "4" else 100_000_000
    return (digest % scale) / 1000


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _meters(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise MessageRejected("INVALID_REQUEST", "Request.meters must be a non-empty array of meter ids")
    out: list[str] = []
    for i, meter in enumerate(value):
        if not isinstance(meter, str) or not meter.strip():
            raise MessageRejected("INVALID_METER", f"Request.meters[{i}] must be a non-empty string, not {meter!r}")
        if meter not in out:                 # a meter named twice is asked once
            out.append(meter)
    return out


def _expires_at(value: Any) -> dt.datetime | None:
    """``Request.expiresAt``: an ISO 8601 instant with Z or an offset (a time without one names
    no instant); None when left out."""
    if value is None:
        return None
    instant = None
    if isinstance(value, str) and _ZONED_INSTANT.fullmatch(value):
        try:
            instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:                   # 30 February, hour 25
            pass
    if instant is None:
        raise MessageRejected("INVALID_REQUEST", f"Request.expiresAt must be an instant like 2026-12-04T22:10:00Z "
                                                 f"(or with an offset), not {value!r}")
    return instant


def _params(action: str, params: Any) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise MessageRejected("INVALID_PARAMS", "Request.params must be an object")
    if action == "load-limit" and not (_number(params.get("limit_kw")) and params["limit_kw"] > 0):
        raise MessageRejected("INVALID_PARAMS", f"load-limit needs params.limit_kw > 0, not {params.get('limit_kw')!r}")
    if action == "credit-update" and not _number(params.get("amount")):
        raise MessageRejected("INVALID_PARAMS", f"credit-update needs a number params.amount, not {params.get('amount')!r}")
    if action == "payment-mode" and params.get("mode") not in PAYMENT_MODES:
        raise MessageRejected("INVALID_PARAMS", f"payment-mode needs params.mode in {PAYMENT_MODES}, "
                                                f"not {params.get('mode')!r}")
    return params


def _apply(state: dict[str, Any], action: str, params: dict[str, Any]) -> None:
    if action in ("connect", "disconnect"):
        state["relay"] = action + "ed"
    elif action == "load-limit":
        state["load_limit_kw"] = params["limit_kw"]
    elif action == "credit-update":            # a top-up (or, negative, a correction): adds
        state["credit"] = round(state["credit"] + params["amount"], 6)
    else:
        state["payment_mode"] = params["mode"]


class _MeterFaults:
    """Per-meter faults set with ``POST /_meters``."""

    def __init__(self) -> None:
        self.unreachable: set[str] = set()
        self.timeout: set[str] = set()
        self.latency_ms: float = 0.0
        self.timeout_s: float = DEFAULT_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return {"unreachable": sorted(self.unreachable), "timeout": sorted(self.timeout),
                "latency_ms": self.latency_ms, "timeout_s": self.timeout_s}


class _NotInFleet:
    """``meter in`` it: set unreachable by /_meters or out by /_outages, or not a meter of the fleet."""

    def __init__(self, unreachable: set[str], fleet: frozenset[str] | None, out: set[str] = frozenset()) -> None:
        # ``out`` is read, not copied (it may hold a whole network): used under the store lock only
        self.unreachable, self.fleet, self.out = set(unreachable), fleet, out

    def __contains__(self, meter: object) -> bool:
        return (meter in self.unreachable or meter in self.out
                or (self.fleet is not None and meter not in self.fleet))


def shared_fleet(name: str, env: dict[str, str] | None = None) -> frozenset[str] | None:
    """The meters HES ``name`` (hes-a, hes-b) has in the dev stack's shared network; None when
    there is no shared network or the name is another."""
    model = shared_model(env) if name in ("hes-a", "hes-b") else None
    if model is None:
        return None
    meters = [model.meter_of(c) for d in range(model.dts) for c in model.consumers_of_dt(d)]
    meters += [model.dt_meter(d) for d in range(model.dts)] + [model.feeder_head_meter(f) for f in range(model.feeders)]
    return frozenset(m for m in meters if hes_of(m) == name)


class HesApp(MessageStandIn):
    """Meter states, executions per (commandId, meter), what became of each command on each
    meter (``GET /requests/commands/{commandId}``) and the per-meter faults."""

    noun = "MeterReadings"
    message_paths = (READ_PATH, COMMAND_PATH)

    def __init__(self, name: str = "hes", fleet: frozenset[str] | None = None) -> None:
        super().__init__(name)
        self._store_lock = threading.Lock()
        self.fleet = fleet          # None: any meter; else only these answer
        self.clear()

    def clear(self) -> None:
        with self._store_lock:
            self.states: dict[str, dict[str, Any]] = {}
            self.executions: dict[str, list[dict[str, Any]]] = {}
            self.done: dict[tuple[str, str], dict[str, Any]] = {}   # (commandId, meter) -> first result
            self.asked: dict[str, int] = {}                         # meter -> reads answered
            # commandId -> meter -> {"posts": POSTs naming it not answered yet, "outcome": the last
            # status entry or None}; a meter is here from the first POST naming it, in that order
            self.tracked: dict[str, dict[str, dict[str, Any]]] = {}
            self.meter_faults = _MeterFaults()
            self.out: set[str] = set()                              # meters without power (/_outages)
            self.counts = dict.fromkeys(
                ("arrivals", "posts", "read_requests", "meters_read", "command_requests", "executions",
                 "duplicate_executions", "unreachable_answers", "expired_refusals"), 0)

    # -- replies: the Noun follows the request's kind; CorrelationID echoes the request's
    def header(self, correlation_id: str | None, noun: str | None = None) -> dict[str, Any]:
        return {"Verb": "reply", "Noun": noun or self.noun, "Timestamp": utc_now(), "Source": self.name,
                "CorrelationID": correlation_id}

    def failed(self, code: str, reason: str, message_id: str | None = None,
               noun: str | None = None) -> dict[str, Any]:
        return {"Header": self.header(message_id, noun),
                "Reply": {"Result": "FAILED", "Error": [{"code": code, "level": "FATAL", "reason": reason}]}}

    def post_message(self, path: str, body: bytes) -> tuple[int, dict, dict] | None:
        """As ``MessageStandIn.post_message``, but the Result is per meter and the per-meter
        faults (latency, a hung HES) apply.  A valid command is marked in progress on its
        meters from here until its answer is decided, sleeps included."""
        noun, verbs = KINDS[path]
        with self._store_lock:
            self.counts["arrivals"] += 1  # before the latency: a test sees what is in flight here
        mode = self.faults.take()
        correlation = message_id = None
        try:
            doc = orjson.loads(body)
        except ValueError as exc:
            doc, bad_json = None, exc
        else:
            bad_json = None
            header = doc.get("Header") if isinstance(doc, dict) else None
            if isinstance(header, dict):
                message_id = header.get("MessageID")
                correlation = header.get("CorrelationID") or message_id
        # Checked before any sleep so the status request sees a command the moment it arrives;
        # a refusal is still answered after the injected failure and the latency, as before.
        request: dict[str, Any] | None = None
        rejected = None if bad_json is None else MessageRejected("MALFORMED_JSON", f"body is not JSON: {bad_json}")
        if rejected is None:
            try:
                request = self._check(doc, noun, verbs)
            except MessageRejected as exc:
                rejected = exc
        received = self._receive(request) if path == COMMAND_PATH and request else None
        try:
            return self._answer(path, noun, mode, request, rejected, message_id, correlation)
        finally:                  # answered, refused or dropped: this POST no longer holds its meters
            if received:
                self._release(*received)

    def _answer(self, path: str, noun: str, mode: FailureMode, request: dict[str, Any] | None,
                rejected: MessageRejected | None, message_id: str | None,
                correlation: str | None) -> tuple[int, dict, dict] | None:
        injected = injected_failure(mode, self.requests, path, message_id, lambda: self._bump("refused_posts"),
                                    lambda status: self.failed(str(status), f"injected {status}", correlation, noun))
        if injected is not None:
            return None if injected == DROP else injected
        with self._store_lock:
            latency_s = self.meter_faults.latency_ms / 1000
        if latency_s:
            time.sleep(latency_s)
        try:
            if rejected is not None:
                raise rejected
            assert request is not None
            self._hang_if_asked(request["meters"])
            if path == READ_PATH:
                errors, payload = self._read(request)
            else:
                errors, payload = self._command(request)
        except MessageRejected as exc:
            self._bump("rejected_posts")
            self.requests.add(method="POST", path=path, message_id=message_id, status=400, error=exc.code)
            return 400, self.failed(exc.code, exc.reason, correlation, noun), {}
        failed_meters = {e["meter"] for e in errors}
        result = ("OK" if not errors else
                  "FAILED" if failed_meters >= set(request["meters"]) else "PARTIAL")
        reply: dict[str, Any] = {"Result": result}
        if errors:
            reply["Error"] = errors
        self.requests.add(method="POST", path=path, message_id=message_id, status=200, result=result,
                          meters=len(request["meters"]), failed=len(failed_meters))
        return 200, {"Header": self.header(correlation, noun), "Reply": reply, "Payload": payload}, {}

    def _check(self, doc: Any, noun: str, verbs: tuple[str, ...]) -> dict[str, Any]:
        """The request's ``Request`` object, checked completely before anything runs."""
        if not isinstance(doc, dict) or not isinstance(doc.get("Header"), dict):
            raise MessageRejected("INVALID_REQUEST", "a request is an object with a Header object")
        header = doc["Header"]            # Noun and Verb may be left out; if given they must fit
        if header.get("Noun") not in (None, noun):
            raise MessageRejected("UNKNOWN_NOUN", f"Noun must be {noun!r} here, not {header.get('Noun')!r}")
        if header.get("Verb") not in (None, *verbs):
            raise MessageRejected("INVALID_REQUEST", f"Verb must be one of {verbs} for {noun}, "
                                                     f"not {header.get('Verb')!r}")
        request = doc.get("Request")
        if not isinstance(request, dict):
            raise MessageRejected("INVALID_REQUEST", "Request must be an object")
        checked: dict[str, Any] = {"meters": _meters(request.get("meters"))}
        if noun == "MeterReadings":
            types = request.get("readingTypes")
            if types is None:
                types = list(DEFAULT_READING_TYPES)
            if not isinstance(types, list) or not types:
                raise MessageRejected("INVALID_REQUEST", "Request.readingTypes must be a non-empty array")
            for rt in types:
                if not isinstance(rt, str) or not _READING_TYPE.fullmatch(rt):
                    raise MessageRejected("INVALID_READING_TYPE", f"bad readingType {rt!r} (18 dot-separated numbers)")
            checked["readingTypes"] = list(dict.fromkeys(types))
        else:
            command_id = request.get("commandId")
            if not isinstance(command_id, str) or not command_id.strip():
                raise MessageRejected("INVALID_REQUEST", f"Request.commandId must be a non-empty string, "
                                                         f"not {command_id!r}")
            action = request.get("action")
            if action not in ACTIONS:
                raise MessageRejected("UNKNOWN_ACTION", f"action must be one of {ACTIONS}, not {action!r}")
            checked.update(commandId=command_id, action=action, params=_params(action, request.get("params")),
                           expiresAt=_expires_at(request.get("expiresAt")))
        return checked

    def _hang_if_asked(self, meters: list[str]) -> None:
        with self._store_lock:
            hang = self.meter_faults.timeout_s if self.meter_faults.timeout.intersection(meters) else 0
        if hang:
            time.sleep(hang)       # a hung HES; it then answers (and executes) late

    # -- what became of a command on each meter
    def _receive(self, request: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """Mark the command in progress on its meters: this POST holds them until answered."""
        command_id = request["commandId"]
        held = []
        with self._store_lock:
            meters = self.tracked.setdefault(command_id, {})
            for meter in request["meters"]:
                entry = meters.setdefault(meter, {"posts": 0, "outcome": None})
                entry["posts"] += 1
                held.append((meter, entry))
        return command_id, held

    def _release(self, command_id: str, held: list[tuple[str, dict[str, Any]]]) -> None:
        """The POST is answered (or refused before anything ran): a meter no POST holds and no
        outcome names was never received, so it disappears again."""
        with self._store_lock:
            for meter, entry in held:     # the entries themselves: a /_reset meanwhile made new ones
                entry["posts"] -= 1
                tracked = self.tracked.get(command_id, {})
                if entry["posts"] <= 0 and entry["outcome"] is None and tracked.get(meter) is entry:
                    del tracked[meter]
                    if not tracked:
                        del self.tracked[command_id]

    def _settle(self, command_id: str, meter: str, outcome: dict[str, Any]) -> None:
        # Called under _store_lock by the execution step; an executed meter stays executed.
        entry = self.tracked.setdefault(command_id, {}).setdefault(meter, {"posts": 0, "outcome": None})
        if entry["outcome"] is None or entry["outcome"]["status"] not in FINAL:
            entry["outcome"] = outcome

    def _outcome(self, command_id: str, meter: str) -> dict[str, Any] | None:
        entry = self.tracked.get(command_id, {}).get(meter)
        return entry["outcome"] if entry else None

    def command_status(self, command_id: str, only: set[str] | None) -> dict[str, Any]:
        """``GET /requests/commands/{commandId}``: a final outcome, else in progress while a
        POST holds the meter (a retry of a failed meter may still execute), else the failure."""
        answer: dict[str, Any] = {}
        with self._store_lock:
            for meter, entry in self.tracked.get(command_id, {}).items():
                if only is not None and meter not in only:
                    continue
                outcome = entry["outcome"]
                if outcome is not None and (outcome["status"] in FINAL or entry["posts"] <= 0):
                    answer[meter] = dict(outcome)      # outcomes are replaced, never changed in place
                else:
                    answer[meter] = {"status": "in-progress"}
        return {"commandId": command_id, "meters": answer}

    def _unreachable(self, meter: str) -> dict[str, Any]:
        self.counts["unreachable_answers"] += 1
        reason = f"meter {meter} does not answer" if self._has(meter) else f"meter {meter} is not on {self.name}"
        return {"code": "METER_UNREACHABLE", "level": "FATAL", "reason": reason, "meter": meter}

    def _has(self, meter: str) -> bool:
        return self.fleet is None or meter in self.fleet

    def _unreachable_now(self) -> "_NotInFleet":
        return _NotInFleet(self.meter_faults.unreachable, self.fleet, self.out)

    def _read(self, request: dict[str, Any]) -> tuple[list[dict], dict]:
        now = utc_now()
        errors: list[dict[str, Any]] = []
        blocks: list[dict[str, Any]] = []
        with self._store_lock:
            unreachable = self._unreachable_now()
            self.counts["posts"] += 1
            self.counts["read_requests"] += 1
            for meter in request["meters"]:
                self.asked[meter] = self.asked.get(meter, 0)
                if meter in unreachable:
                    errors.append(self._unreachable(meter))
                    continue
                self.asked[meter] += 1
                self.counts["meters_read"] += 1
                blocks.append({"meter": meter, "readings": [
                    {"readingType": rt, "timeStamp": now, "value": register_value(meter, rt)}
                    for rt in request["readingTypes"]]})
        return errors, {"MeterReadings": {"MeterReading": blocks}}

    def _command(self, request: dict[str, Any]) -> tuple[list[dict], dict]:
        command_id, action, params = request["commandId"], request["action"], request["params"]
        expires_at = request["expiresAt"]
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        with self._store_lock:
            # The clock is read here, after every sleep: a slow HES must not execute a command
            # that expired while it waited.
            expired = expires_at is not None and dt.datetime.now(dt.timezone.utc) >= expires_at
            unreachable = self._unreachable_now()
            self.counts["posts"] += 1
            self.counts["command_requests"] += 1
            for meter in request["meters"]:
                self.asked.setdefault(meter, 0)
                state = self.states.setdefault(meter, initial_state())
                first = self.done.get((command_id, meter))
                if first is not None and (first["action"], first["params"]) != (action, params):
                    errors.append({"code": "COMMAND_ID_REUSED", "level": "FATAL", "meter": meter,
                                   "reason": f"commandId {command_id} was {first['action']} "
                                             f"{first['params']} on meter {meter}, not {action} {params}"})
                    # the status stays "executed": the meter did execute this commandId (the first one)
                    results.append({"meter": meter, "status": "failed", "error": "COMMAND_ID_REUSED",
                                    "state": dict(state)})
                elif first is not None:              # a retry: answer what the execution answered
                    self.counts["duplicate_executions"] += 1
                    results.append({**first["result"], "duplicate": True})
                elif expired or (self._outcome(command_id, meter) or {}).get("status") == "expired":
                    # once refused as expired, never executed: a retry with another expiresAt
                    # must not turn an "expired" the caller may have acted on into "executed"
                    errors.append(self._expired(meter, request))
                    results.append({"meter": meter, "status": "expired", "state": dict(state)})
                    self._settle(command_id, meter, {"status": "expired"})
                elif meter in unreachable:           # not executed, so a retry may execute
                    errors.append(self._unreachable(meter))
                    results.append({"meter": meter, "status": "failed", "error": "METER_UNREACHABLE",
                                    "state": dict(state)})
                    self._settle(command_id, meter, {"status": "failed", "error": "METER_UNREACHABLE"})
                else:
                    _apply(state, action, params)
                    at = utc_now()
                    self.executions.setdefault(meter, []).append(
                        {"commandId": command_id, "action": action, "params": params, "at": at})
                    self.counts["executions"] += 1
                    result = {"meter": meter, "status": "executed", "state": dict(state)}
                    self.done[(command_id, meter)] = {"action": action, "params": params, "result": result}
                    results.append(dict(result))
                    self._settle(command_id, meter, {"status": "executed", "state": dict(state), "at": at})
        return errors, {"EndDeviceControls": {"commandId": command_id, "action": action, "results": results}}

    def _expired(self, meter: str, request: dict[str, Any]) -> dict[str, Any]:
        self.counts["expired_refusals"] += 1
        expires_at = request["expiresAt"]
        when = f"at {expires_at.isoformat()}" if expires_at is not None else "earlier"
        return {"code": "EXPIRED", "level": "FATAL", "meter": meter,
                "reason": f"command {request['commandId']} expired {when}; not executed on meter {meter}"}

    def counters(self) -> dict[str, Any]:
        with self._store_lock:
            return {**self.counts, **({"fleet": len(self.fleet)} if self.fleet is not None else {})}

    def set_meter_faults(self, body: bytes) -> tuple[int, dict]:
        try:
            spec = orjson.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            unknown = set(spec) - {"unreachable", "timeout", "latency_ms", "timeout_s"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            for key in ("unreachable", "timeout"):
                if key in spec and not (isinstance(spec[key], list)
                                        and all(isinstance(m, str) and m for m in spec[key])):
                    raise ValueError(f"{key} must be an array of meter ids")
            for key in ("latency_ms", "timeout_s"):
                if key in spec and not (_number(spec[key]) and spec[key] >= 0):
                    raise ValueError(f"{key} must be a number >= 0")
        except ValueError as exc:
            return 400, self.failed("BAD_CONTROL", str(exc))
        with self._store_lock:
            faults = self.meter_faults
            if "unreachable" in spec:
                faults.unreachable = set(spec["unreachable"])
            if "timeout" in spec:
                faults.timeout = set(spec["timeout"])
            if "latency_ms" in spec:
                faults.latency_ms = float(spec["latency_ms"])
            if "timeout_s" in spec:
                faults.timeout_s = float(spec["timeout_s"])
            return 200, {"meters": faults.to_dict()}

    def outages(self) -> dict[str, Any]:
        with self._store_lock:
            return {"out": sorted(self.out), "count": len(self.out)}

    def set_outages(self, body: bytes) -> tuple[int, dict]:
        """``POST /_outages``: meters out (``meters``), back (``restore``), all back (``clear``)."""
        try:
            spec = orjson.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            unknown = set(spec) - {"meters", "restore", "clear"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            if not spec:
                raise ValueError("give meters (out), restore (back) or clear: true")
            for key in ("meters", "restore"):
                if key in spec and not (isinstance(spec[key], list) and len(spec[key]) <= MAX_OUT
                                        and all(isinstance(m, str) and m for m in spec[key])):
                    raise ValueError(f"{key} must be an array of at most {MAX_OUT} meter ids")
            if "clear" in spec and not isinstance(spec["clear"], bool):
                raise ValueError("clear must be true or false")
        except ValueError as exc:
            return 400, self.failed("BAD_CONTROL", str(exc))
        with self._store_lock:
            out = set() if spec.get("clear") else set(self.out)
            out.difference_update(spec.get("restore", ()))
            out.update(spec.get("meters", ()))
            if len(out) > MAX_OUT:
                return 400, self.failed("BAD_CONTROL", f"more than {MAX_OUT} meters out")
            self.out = out          # a new set: a read holding the old one under the lock is done
        return 200, self.outages()

    def meter(self, meter: str) -> dict[str, Any]:
        with self._store_lock:
            return {"meter": meter, "state": dict(self.states.get(meter) or initial_state()),
                    "executions": [dict(e) for e in self.executions.get(meter, ())],
                    "reads": self.asked.get(meter, 0)}

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
        if path == "/meters":
            with self._store_lock:
                meters = sorted(self.asked)
            return 200, {"meters": meters, "count": len(meters)}
        if path == "/_meters":
            with self._store_lock:
                return 200, {"meters": self.meter_faults.to_dict()}
        if path == "/_outages":
            return 200, self.outages()
        match = _STATUS_PATH.fullmatch(path)
        if match:               # not a business POST: answered whatever /_control says
            only = {m for value in query.get("meters", ()) for m in value.split(",") if m}
            return 200, self.command_status(unquote(match.group(1)), only or None)
        match = _METER_PATH.fullmatch(path)
        return (200, self.meter(unquote(match.group(1)))) if match else None

    def post(self, path: str, body: bytes) -> tuple[int, Any] | None:
        if path == "/_outages":
            return self.set_outages(body)
        return self.set_meter_faults(body) if path == "/_meters" else None


class _Handler(MessageStandInHandler):
    server_version = "gridbus-hes/1.0"


class HesServer(BackgroundServer):
    """The HES on ``host:port`` (port 0 picks a free one) in background threads."""

    app: HesApp

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "hes",
                 verbose: bool = False) -> None:
        super().__init__(_Handler, HesApp(name), host, port, verbose)


def main(argv: list[str] | None = None) -> int:
    def server(host: str, port: int, name: str, verbose: bool) -> HesServer:
        made = HesServer(host, port, name, verbose)
        fleet = shared_fleet(name)          # the dev stack's shared network, when there is one
        if fleet is not None:
            made.app.fleet = fleet
        return made
    return standin_main(server, "python -m simulators.hes", __doc__.split("\n")[0], "hes", argv)


if __name__ == "__main__":
    sys.exit(main())
