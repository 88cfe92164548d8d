"""Alarm ids already accepted, so a resent alarm gets the same answer and is not published twice.

SQLite under $GRIDBUS_HOME/state (one connection per gateway thread); ids are
kept for ``keep_s`` (a day by default): long enough for any HES retry loop.
"""
from __future__ import annotations

import time
from pathlib import Path

from bus.sqlite_local import ThreadConnections

SCHEMA = """CREATE TABLE IF NOT EXISTS seen (
    system TEXT NOT NULL, alarm_id TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (system, alarm_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (at);"""


class SeenAlarms:
    def __init__(self, path: Path, keep_s: float = 86400):
        self.path, self.keep_s = path, keep_s
        self._db = ThreadConnections(path, SCHEMA)

    def known(self, system: str, alarm_ids: list[str]) -> dict[str, str]:
        """alarm id → message id it was accepted in, for those seen before."""
        out: dict[str, str] = {}
        for i in range(0, len(alarm_ids), 500):
            part = alarm_ids[i:i + 500]
            rows = self._db().execute(
                f"SELECT alarm_id, message_id FROM seen WHERE system = ? AND at > ? AND alarm_id IN "
                f"({','.join('?' * len(part))})", [system, time.time() - self.keep_s, *part])
            out.update(rows)
        return out

    def remember(self, system: str, alarm_ids: list[str], message_id: str) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)",
                           [(system, a, message_id, now) for a in alarm_ids])
            db.execute("DELETE FROM seen WHERE at < ?", (now - self.keep_s,))


def alarm_ids(document) -> list[tuple[int, str]] | None:
    """(index, alarm id) of every alarm in a vendor alarm document, or None when it has no ids
    (then there is nothing to deduplicate by)."""
    if isinstance(document, dict) and isinstance(document.get("alarms"), list):
        items = document["alarms"]
    elif isinstance(document, list):
        items = document
    elif isinstance(document, dict) and ("alarm_id" in document or "alarmId" in document):
        items = [document]
    else:
        return None
    found = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            value = item.get("alarm_id", item.get("alarmId"))
            if value is not None and str(value):
                found.append((index, str(value)))
    return found or None


def without(document, drop: set[int]):
    """The document minus the alarms at the ``drop`` indexes (same shape as it came)."""
    if isinstance(document, dict) and isinstance(document.get("alarms"), list):
        return {**document, "alarms": [a for i, a in enumerate(document["alarms"]) if i not in drop]}
    if isinstance(document, list):
        return [a for i, a in enumerate(document) if i not in drop]
    return document
