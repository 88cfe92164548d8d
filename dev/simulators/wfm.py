"""WFM stand-in: workforce management, a real HTTP server that keeps work items.

    POST /work-items  {"Header": {"Noun": "WorkItems", "MessageID", ...},
                       "WorkItems": [{"key", "meter", "problem", "severity", "firstSeen",
                                      "lastSeen", "restored", "events": [canonical events]}]}
                      also accepted on /messages
    POST /work-items/<id>/close    close an item (404 if unknown; closing twice is harmless)
    GET  /work-items[?meter=M][&status=open|closed][&key=K]   {"items": [...], "count": n}
    GET  /work-items/<id>, /health
    GET  /stats       {"posts", "items", "open_items", "updates", "events", "duplicate_events",
                       "rejected_posts", "refused_posts", "mode", "name"}
    POST /_control, /_reset; GET /_requests?limit=N   as the MDMS stand-in

One open item per key (the bus uses "<meter>:<problem>"): a posted item whose key
has an open item merges into it, else it opens a new one ("WO-000001", ...).
Events are keyed by (eventType, createdDateTime) across every item of a key, so a
redelivered message changes nothing but the ``posts`` and ``duplicate_events``
counters, even after its item was closed; only an event never seen for the key
opens a new item after a close.  A message is checked completely before any of
it is stored, so a 400 leaves the store untouched.
"""
from __future__ import annotations

import re
import sys
import threading
from typing import Any

from simulators.control import (SEVERITIES, BackgroundServer, MessageRejected, MessageStandIn,
                                MessageStandInHandler, check_events, check_instant, check_text,
                                most_severe, standin_main, utc_now)

_ITEM_PATH = re.compile(r"/work-items/([^/]+)")
_CLOSE_PATH = re.compile(r"/work-items/([^/]+)/close")


class _Staged:
    """A posted work item, checked, not yet stored."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise MessageRejected("INVALID_WORK_ITEM", f"{where} must be an object, not {type(raw).__name__}")
        self.key = check_text(raw.get("key"), f"{where}.key", "INVALID_WORK_ITEM")
        self.meter = check_text(raw.get("meter"), f"{where}.meter", "INVALID_METER")
        self.problem = check_text(raw.get("problem"), f"{where}.problem", "INVALID_WORK_ITEM")
        self.severity = raw.get("severity")
        if self.severity not in SEVERITIES:
            raise MessageRejected("INVALID_SEVERITY", f"{where}.severity must be one of {SEVERITIES}, "
                                                      f"not {self.severity!r}")
        self.first_seen = check_instant(raw.get("firstSeen"), f"{where}.firstSeen")
        self.last_seen = check_instant(raw.get("lastSeen"), f"{where}.lastSeen")
        self.restored = raw.get("restored")
        if not isinstance(self.restored, bool):
            raise MessageRejected("INVALID_WORK_ITEM", f"{where}.restored must be true or false")
        self.events = check_events(raw.get("events"), f"{where}.events")
        self.sent = len(raw["events"])      # repeats inside the list count as duplicates


class _Item:
    """One work order as the WFM keeps it."""

    def __init__(self, item_id: str, posted: _Staged, events: dict) -> None:
        self.id, self.key, self.meter, self.problem = item_id, posted.key, posted.meter, posted.problem
        self.severity, self.restored = posted.severity, posted.restored
        self.first_seen, self.last_seen = posted.first_seen, posted.last_seen
        self.events = dict(events)
        self.status = "open"
        self.opened_at = self.updated_at = utc_now()
        self.closed_at: str | None = None

    def merge(self, posted: _Staged, new: dict) -> None:
        # restored belongs to the newest news: an older message arriving late must not undo it
        if posted.last_seen >= self.last_seen:
            self.restored = posted.restored
        self.events.update(new)
        self.first_seen = min(self.first_seen, posted.first_seen)
        self.last_seen = max(self.last_seen, posted.last_seen)
        self.severity = most_severe(self.severity, posted.severity)
        self.updated_at = utc_now()

    def to_dict(self) -> dict[str, Any]:
        events = [self.events[k] for k in sorted(self.events, key=lambda k: (k[1], k[0]))]
        return {"id": self.id, "key": self.key, "meter": self.meter, "problem": self.problem,
                "status": self.status, "severity": self.severity, "firstSeen": self.first_seen,
                "lastSeen": self.last_seen, "restored": self.restored, "occurrences": len(events),
                "events": events, "openedAt": self.opened_at, "updatedAt": self.updated_at,
                "closedAt": self.closed_at}


class WfmApp(MessageStandIn):
    """Work items by id, the open one of each key, and every event key ever seen per key."""

    noun = "WorkItems"
    message_paths = ("/work-items", "/messages")

    def __init__(self, name: str = "wfm") -> None:
        super().__init__(name)
        self._store_lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._store_lock:
            self.items: dict[str, _Item] = {}
            self.open_by_key: dict[str, str] = {}
            self.last_by_key: dict[str, str] = {}
            self.seen_by_key: dict[str, set[tuple[str, str]]] = {}
            self.counts = dict.fromkeys(("posts", "updates", "duplicate_events"), 0)

    def accept(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("Header"), dict):
            raise MessageRejected("INVALID_MESSAGE", "a message is an object with a Header object")
        noun = doc["Header"].get("Noun")
        if noun != self.noun:
            raise MessageRejected("UNKNOWN_NOUN", f"Noun must be {self.noun!r}, not {noun!r}")
        posted = doc.get("WorkItems")
        if not isinstance(posted, list):
            raise MessageRejected("INVALID_MESSAGE", "WorkItems must be an array")
        staged = [_Staged(raw, f"WorkItems[{i}]") for i, raw in enumerate(posted)]
        with self._store_lock:
            created = updated = 0
            ids: list[str] = []
            for item in staged:
                outcome, item_id = self._apply(item)
                created += outcome == "created"
                updated += outcome == "updated"
                if item_id not in ids:
                    ids.append(item_id)
            self.counts["posts"] += 1
            self.counts["updates"] += updated
        return {"created": created, "updated": updated, "items": ids}

    def _apply(self, posted: _Staged) -> tuple[str, str]:
        seen = self.seen_by_key.setdefault(posted.key, set())
        new = {k: ev for k, ev in posted.events.items() if k not in seen}
        self.counts["duplicate_events"] += posted.sent - len(new)
        open_id = self.open_by_key.get(posted.key)
        if not new:                          # a redelivery, or a repeat of known events
            return "unchanged", open_id or self.last_by_key[posted.key]
        seen.update(new)
        if open_id is not None:
            self.items[open_id].merge(posted, new)
            return "updated", open_id
        item_id = f"WO-{len(self.items) + 1:06d}"
        self.items[item_id] = _Item(item_id, posted, new)
        self.open_by_key[posted.key] = self.last_by_key[posted.key] = item_id
        return "created", item_id

    def close(self, item_id: str) -> tuple[int, dict]:
        with self._store_lock:
            item = self.items.get(item_id)
            if item is None:
                return 404, self.failed("NOT_FOUND", f"no work item {item_id}")
            if item.status == "open":
                item.status, item.closed_at = "closed", utc_now()
                del self.open_by_key[item.key]
            return 200, {"item": item.to_dict()}

    def find(self, meter: str | None = None, status: str | None = None,
             key: str | None = None) -> list[dict[str, Any]]:
        with self._store_lock:
            return [i.to_dict() for i in self.items.values()
                    if (meter is None or i.meter == meter) and (status is None or i.status == status)
                    and (key is None or i.key == key)]

    def counters(self) -> dict[str, Any]:
        with self._store_lock:
            return {"posts": self.counts["posts"], "items": len(self.items),
                    "open_items": len(self.open_by_key), "updates": self.counts["updates"],
                    "events": sum(len(s) for s in self.seen_by_key.values()),
                    "duplicate_events": self.counts["duplicate_events"]}

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
        if path == "/work-items":
            one = {name: query[name][0] for name in ("meter", "status", "key") if query.get(name)}
            found = self.find(**one)
            return 200, {"items": found, "count": len(found)}
        match = _ITEM_PATH.fullmatch(path)
        if match:
            with self._store_lock:
                item = self.items.get(match.group(1))
                doc = item.to_dict() if item else None
            return (200, {"item": doc}) if doc else (404, self.failed("NOT_FOUND", f"no work item {match.group(1)}"))
        return None

    def post(self, path: str, body: bytes) -> tuple[int, Any] | None:
        match = _CLOSE_PATH.fullmatch(path)
        return self.close(match.group(1)) if match else None


class _Handler(MessageStandInHandler):
    server_version = "gridbus-wfm/1.0"


class WfmServer(BackgroundServer):
    """The WFM on ``host:port`` (port 0 picks a free one) in background threads."""

    app: WfmApp

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "wfm",
                 verbose: bool = False) -> None:
        super().__init__(_Handler, WfmApp(name), host, port, verbose)


def main(argv: list[str] | None = None) -> int:
    return standin_main(WfmServer, "python -m simulators.wfm", __doc__.split("\n")[0], "wfm", argv)


if __name__ == "__main__":
    sys.exit(main())
