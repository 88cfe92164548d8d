"""HES stand-in: a head-end system answering on-demand reads and meter commands.

    POST /requests/meter-readings   {"Header": {"Verb": "get", "Noun": "MeterReadings", ...},
                                     "Request": {"meters": [...], "readingTypes": [...]?}}
    POST /requests/commands         {"Header": {"Verb": "create", "Noun": "EndDeviceControls", ...},
                                     "Request": {"commandId", "action", "meters": [...], "params": {...}}}
    GET  /meters                    {"meters": [every meter it was asked about], "count"}
    GET  /meters/<meter>            {"meter", "state", "executions": [{"commandId", "action", "params", "at"}],
                                     "reads": n}
    GET  /stats       {"arrivals" (requests received, counted before any latency), "posts",
                       "read_requests", "meters_read", "command_requests", "executions",
                       "duplicate_executions", "unreachable_answers", "rejected_posts",
                       "refused_posts", "mode", "name"}
    POST /_meters     {"unreachable": [meters], "timeout": [meters], "latency_ms": N, "timeout_s": S}
                      per-meter faults; a key given replaces that setting, one left out keeps it
    GET  /_meters     the per-meter faults
    POST /_control, /_reset; GET /health, /_requests?limit=N   as the other stand-ins
                      (/_control modes apply to the two business POSTs; /_reset also clears
                      meter states and the per-meter faults)

Replies are IEC 61968-100 JSON (docs/request-formats.md): Result OK when every meter
succeeded, FAILED when none did, else PARTIAL, with one Error per failed meter naming
it.  A request the HES cannot read at all is a 400 FAILED reply.

The HES serves any meter (the bus decides which HES gets which meter) and remembers
which meters it was asked about.  Reads are register values that depend only on
(meter, readingType), stamped now.  Commands are idempotent per (commandId, meter): a
repeat does not execute again and answers the first execution's result.
"""
from __future__ import annotations

import hashlib
import math
import re
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote

import orjson

from simulators.control import (DROP, BackgroundServer, MessageRejected, MessageStandIn,
                                MessageStandInHandler, injected_failure, standin_main, utc_now)

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


class HesApp(MessageStandIn):
    """Meter states, executions per (commandId, meter) and the per-meter faults."""

    noun = "MeterReadings"
    message_paths = (READ_PATH, COMMAND_PATH)

    def __init__(self, name: str = "hes") -> None:
        super().__init__(name)
        self._store_lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._store_lock:
            self.states: dict[str, dict[str, Any]] = {}
            self.executions: dict[str, list[dict[str, Any]]] = {}
            self.done: dict[tuple[str, str], dict[str, Any]] = {}   # (commandId, meter) -> first result
            self.asked: dict[str, int] = {}                         # meter -> reads answered
            self.meter_faults = _MeterFaults()
            self.counts = dict.fromkeys(
                ("arrivals", "posts", "read_requests", "meters_read", "command_requests", "executions",
                 "duplicate_executions", "unreachable_answers"), 0)

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
        faults (latency, a hung HES) apply."""
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
        injected = injected_failure(mode, self.requests, path, message_id, lambda: self._bump("refused_posts"),
                                    lambda status: self.failed(str(status), f"injected {status}", correlation, noun))
        if injected is not None:
            return None if injected == DROP else injected
        with self._store_lock:
            latency_s = self.meter_faults.latency_ms / 1000
        if latency_s:
            time.sleep(latency_s)
        try:
            if bad_json is not None:
                raise MessageRejected("MALFORMED_JSON", f"body is not JSON: {bad_json}")
            request = self._check(doc, noun, verbs)
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
            checked.update(commandId=command_id, action=action, params=_params(action, request.get("params")))
        return checked

    def _hang_if_asked(self, meters: list[str]) -> None:
        with self._store_lock:
            hang = self.meter_faults.timeout_s if self.meter_faults.timeout.intersection(meters) else 0
        if hang:
            time.sleep(hang)       # a hung HES; it then answers (and executes) late

    def _unreachable(self, meter: str) -> dict[str, Any]:
        self.counts["unreachable_answers"] += 1
        return {"code": "METER_UNREACHABLE", "level": "FATAL", "reason": f"meter {meter} does not answer",
                "meter": meter}

    def _read(self, request: dict[str, Any]) -> tuple[list[dict], dict]:
        now = utc_now()
        errors: list[dict[str, Any]] = []
        blocks: list[dict[str, Any]] = []
        with self._store_lock:
            unreachable = set(self.meter_faults.unreachable)
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
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        with self._store_lock:
            unreachable = set(self.meter_faults.unreachable)
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
                    results.append({"meter": meter, "status": "failed", "error": "COMMAND_ID_REUSED",
                                    "state": dict(state)})
                elif first is not None:              # a retry: answer what the execution answered
                    self.counts["duplicate_executions"] += 1
                    results.append({**first["result"], "duplicate": True})
                elif meter in unreachable:           # not executed, so a retry may execute
                    errors.append(self._unreachable(meter))
                    results.append({"meter": meter, "status": "failed", "error": "METER_UNREACHABLE",
                                    "state": dict(state)})
                else:
                    _apply(state, action, params)
                    self.executions.setdefault(meter, []).append(
                        {"commandId": command_id, "action": action, "params": params, "at": utc_now()})
                    self.counts["executions"] += 1
                    result = {"meter": meter, "status": "executed", "state": dict(state)}
                    self.done[(command_id, meter)] = {"action": action, "params": params, "result": result}
                    results.append(dict(result))
        return errors, {"EndDeviceControls": {"commandId": command_id, "action": action, "results": results}}

    def counters(self) -> dict[str, Any]:
        with self._store_lock:
            return dict(self.counts)

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
        match = _METER_PATH.fullmatch(path)
        return (200, self.meter(unquote(match.group(1)))) if match else None

    def post(self, path: str, body: bytes) -> tuple[int, Any] | None:
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
    return standin_main(HesServer, "python -m simulators.hes", __doc__.split("\n")[0], "hes", argv)


if __name__ == "__main__":
    sys.exit(main())
