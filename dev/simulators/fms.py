"""FMS stand-in: fraud management, a real HTTP server that keeps fraud cases.

    POST /cases       {"Header": {"Noun": "FraudCases", "MessageID", ...},
                       "Cases": [{"caseKey", "meter", "windowStart", "windowEnd", "severity",
                                  "evidence": [canonical events]}]}
                      also accepted on /messages
    GET  /cases[?meter=M][&caseKey=K]   {"cases": [...], "count": n}
    GET  /cases/<id>, /health
    GET  /stats       {"posts", "cases", "evidence", "duplicate_evidence", "rejected_posts",
                       "refused_posts", "mode", "name"}
    POST /_control, /_reset; GET /_requests?limit=N   as the MDMS stand-in

A case is upserted by its caseKey (the bus uses "<meter>:<window start>"): the
first post of a key opens "FC-000001", ...; later ones add the evidence the case
does not have yet, keyed by (eventType, createdDateTime), widen the window and
raise the severity.  A redelivered message therefore changes nothing but the
``posts`` and ``duplicate_evidence`` counters.  A message is checked completely
before any of it is stored, so a 400 leaves the store untouched.
"""
from __future__ import annotations

import re
import sys
import threading
from typing import Any

from simulators.control import (SEVERITIES, BackgroundServer, MessageRejected, MessageStandIn,
                                MessageStandInHandler, check_events, check_instant, check_text,
                                most_severe, standin_main, utc_now)

_CASE_PATH = re.compile(r"/cases/([^/]+)")


class _Staged:
    """A posted case, checked, not yet stored."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise MessageRejected("INVALID_CASE", f"{where} must be an object, not {type(raw).__name__}")
        self.case_key = check_text(raw.get("caseKey"), f"{where}.caseKey", "INVALID_CASE")
        self.meter = check_text(raw.get("meter"), f"{where}.meter", "INVALID_METER")
        self.window_start = check_instant(raw.get("windowStart"), f"{where}.windowStart")
        self.window_end = check_instant(raw.get("windowEnd"), f"{where}.windowEnd")
        if self.window_end < self.window_start:
            raise MessageRejected("INVALID_CASE", f"{where}: windowEnd {self.window_end} is before "
                                                  f"windowStart {self.window_start}")
        self.severity = raw.get("severity")
        if self.severity not in SEVERITIES:
            raise MessageRejected("INVALID_SEVERITY", f"{where}.severity must be one of {SEVERITIES}, "
                                                      f"not {self.severity!r}")
        self.evidence = check_events(raw.get("evidence"), f"{where}.evidence")
        self.sent = len(raw["evidence"])    # repeats inside the list count as duplicates


class _Case:
    def __init__(self, case_id: str, posted: _Staged) -> None:
        self.id, self.case_key, self.meter = case_id, posted.case_key, posted.meter
        self.window_start, self.window_end = posted.window_start, posted.window_end
        self.severity = posted.severity
        self.evidence = dict(posted.evidence)
        self.opened_at = self.updated_at = utc_now()

    def merge(self, posted: _Staged, new: dict) -> None:
        self.evidence.update(new)
        self.window_start = min(self.window_start, posted.window_start)
        self.window_end = max(self.window_end, posted.window_end)
        self.severity = most_severe(self.severity, posted.severity)
        self.updated_at = utc_now()

    def to_dict(self) -> dict[str, Any]:
        evidence = [self.evidence[k] for k in sorted(self.evidence, key=lambda k: (k[1], k[0]))]
        return {"id": self.id, "caseKey": self.case_key, "meter": self.meter,
                "windowStart": self.window_start, "windowEnd": self.window_end,
                "severity": self.severity, "evidenceCount": len(evidence), "evidence": evidence,
                "openedAt": self.opened_at, "updatedAt": self.updated_at}


class FmsApp(MessageStandIn):
    """Fraud cases by id and by caseKey."""

    noun = "FraudCases"
    message_paths = ("/cases", "/messages")

    def __init__(self, name: str = "fms") -> None:
        super().__init__(name)
        self._store_lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._store_lock:
            self.cases: dict[str, _Case] = {}
            self.by_key: dict[str, str] = {}
            self.counts = dict.fromkeys(("posts", "duplicate_evidence"), 0)

    def accept(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("Header"), dict):
            raise MessageRejected("INVALID_MESSAGE", "a message is an object with a Header object")
        noun = doc["Header"].get("Noun")
        if noun != self.noun:
            raise MessageRejected("UNKNOWN_NOUN", f"Noun must be {self.noun!r}, not {noun!r}")
        posted = doc.get("Cases")
        if not isinstance(posted, list):
            raise MessageRejected("INVALID_MESSAGE", "Cases must be an array")
        staged = [_Staged(raw, f"Cases[{i}]") for i, raw in enumerate(posted)]
        with self._store_lock:
            created = updated = 0
            ids: list[str] = []
            for case in staged:
                outcome, case_id = self._apply(case)
                created += outcome == "created"
                updated += outcome == "updated"
                if case_id not in ids:
                    ids.append(case_id)
            self.counts["posts"] += 1
        return {"created": created, "updated": updated, "cases": ids}

    def _apply(self, posted: _Staged) -> tuple[str, str]:
        case_id = self.by_key.get(posted.case_key)
        if case_id is None:
            case_id = self.by_key[posted.case_key] = f"FC-{len(self.cases) + 1:06d}"
            self.cases[case_id] = _Case(case_id, posted)
            self.counts["duplicate_evidence"] += posted.sent - len(posted.evidence)
            return "created", case_id
        case = self.cases[case_id]
        new = {k: ev for k, ev in posted.evidence.items() if k not in case.evidence}
        self.counts["duplicate_evidence"] += posted.sent - len(new)
        if not new:                          # a redelivery: nothing changes
            return "unchanged", case_id
        case.merge(posted, new)
        return "updated", case_id

    def find(self, meter: str | None = None, case_key: str | None = None) -> list[dict[str, Any]]:
        with self._store_lock:
            return [c.to_dict() for c in self.cases.values()
                    if (meter is None or c.meter == meter) and (case_key is None or c.case_key == case_key)]

    def counters(self) -> dict[str, Any]:
        with self._store_lock:
            return {"posts": self.counts["posts"], "cases": len(self.cases),
                    "evidence": sum(len(c.evidence) for c in self.cases.values()),
                    "duplicate_evidence": self.counts["duplicate_evidence"]}

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
        if path == "/cases":
            found = self.find(meter=(query.get("meter") or [None])[0],
                              case_key=(query.get("caseKey") or [None])[0])
            return 200, {"cases": found, "count": len(found)}
        match = _CASE_PATH.fullmatch(path)
        if match:
            with self._store_lock:
                case = self.cases.get(match.group(1))
                doc = case.to_dict() if case else None
            return (200, {"case": doc}) if doc else (404, self.failed("NOT_FOUND", f"no case {match.group(1)}"))
        return None


class _Handler(MessageStandInHandler):
    server_version = "gridbus-fms/1.0"


class FmsServer(BackgroundServer):
    """The FMS on ``host:port`` (port 0 picks a free one) in background threads."""

    app: FmsApp

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "fms",
                 verbose: bool = False) -> None:
        super().__init__(_Handler, FmsApp(name), host, port, verbose)


def main(argv: list[str] | None = None) -> int:
    return standin_main(FmsServer, "python -m simulators.fms", __doc__.split("\n")[0], "fms", argv)


if __name__ == "__main__":
    sys.exit(main())
