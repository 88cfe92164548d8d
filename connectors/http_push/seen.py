"""Alarm ids already accepted, so a resent alarm gets the same answer and is not published twice.

In the state store (``bus.state_store``): SQLite under $GRIDBUS_HOME/state, or
the PostgreSQL database every gateway shares, so an alarm a HES resends to
another gateway is known there too.  Ids are kept for ``keep_s`` (a day by
default): long enough for any HES retry loop.
"""
from __future__ import annotations

import time
from pathlib import Path

from bus.state_store import open_state_db

SCHEMA = ["""CREATE TABLE IF NOT EXISTS seen (
    system TEXT NOT NULL, alarm_id TEXT NOT NULL, message_id TEXT NOT NULL, at {REAL} NOT NULL,
    PRIMARY KEY (system, alarm_id)){WITHOUT_ROWID}""",
          "CREATE INDEX IF NOT EXISTS seen_at ON seen (at)"]
# the first acceptance's message id is kept only while it is fresh: an id seen again after
# ``keep_s`` is a new alarm, and takes the row over
_REMEMBER = ("INSERT INTO seen VALUES (?, ?, ?, ?) ON CONFLICT (system, alarm_id) DO UPDATE "
             "SET message_id = excluded.message_id, at = excluded.at")


class SeenAlarms:
    def __init__(self, path: Path, keep_s: float = 86400, url: str | None = None, wait_s: float | None = None):
        """``path``: the SQLite file, unless ``GRIDBUS_STATE_STORE`` (or ``url``) names PostgreSQL."""
        self.path, self.keep_s = path, keep_s
        self._db = open_state_db("seen", SCHEMA, path, url=url, wait_s=wait_s)

    def known(self, system: str, alarm_ids: list[str]) -> dict[str, str]:
        """alarm id → message id it was accepted in, for those seen before."""
        out: dict[str, str] = {}
        for i in range(0, len(alarm_ids), 500):
            part = alarm_ids[i:i + 500]
            out.update(self._db.rows(
                f"SELECT alarm_id, message_id FROM seen WHERE system = ? AND at > ? AND alarm_id IN "
                f"({','.join('?' * len(part))})", [system, time.time() - self.keep_s, *part]))
        return out

    def remember(self, system: str, alarm_ids: list[str], message_id: str) -> None:
        now = time.time()
        # one row per id: a document naming the same alarm twice would otherwise have one
        # statement of PostgreSQL's upsert touch a row twice
        rows = [(system, a, message_id, now) for a in dict.fromkeys(alarm_ids)]
        with self._db.writing():
            self._db.executemany(_REMEMBER, rows)
        # on its own, after the commit: two gateways' transactions each holding new rows while
        # deleting the same old ones could deadlock each other on a shared PostgreSQL
        self._db.execute("DELETE FROM seen WHERE at < ?", (now - self.keep_s,))

    def close(self) -> None:
        self._db.close()


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
