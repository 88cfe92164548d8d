"""What each billing route has taken: the last version delivered per consumer.

The outbox is at-least-once: a publisher that crashed between the broker's confirm and
``mark_published`` publishes those updates again, after later ones may have gone out.  Billing
answers 409 to a version older than the one it holds, so the delivery process drops every update
not newer than what the route already delivered for that consumer.  The row is written after
billing answered 200 and before the batch is acked: a crash between the two redelivers versions
equal to the ones held, which billing takes as 200.

SQLite (``$GRIDBUS_STATE/network-delivery.sqlite``), shared by the delivery processes of one host,
or the PostgreSQL state store (``GRIDBUS_STATE_STORE``) shared by the delivery processes of every
host.

Parking: a consumer whose update was dead-lettered on a route is *parked* there; its later
updates for that route are kept here (not sent) until the dead letter is replayed or the consumer
released, and then go out in version order.  Holding an update and unparking are each one
transaction, so an update either finds its consumer parked and is held, or is sent after the
release: never both, never lost between.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from bus.state_store import open_state_db

SCHEMA = ["""CREATE TABLE IF NOT EXISTS delivered (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version {BIGINT} NOT NULL,
    PRIMARY KEY (route, consumer)){WITHOUT_ROWID}"""]
PARKING_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS parked_consumers (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version {BIGINT} NOT NULL, reason TEXT NOT NULL,
    since {REAL} NOT NULL, PRIMARY KEY (route, consumer)){WITHOUT_ROWID}""",
    """CREATE TABLE IF NOT EXISTS parked_updates (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version {BIGINT} NOT NULL, body {BLOB} NOT NULL,
    headers TEXT NOT NULL, properties TEXT NOT NULL, parked_at {REAL} NOT NULL,
    PRIMARY KEY (route, consumer, version)){WITHOUT_ROWID}""",
]
_CHUNK = 500  # SQLite's host-parameter limit is well above this


def default_location() -> Path:
    from bus.settings import Settings

    return Settings.load().state_dir / "network-delivery.sqlite"


class DeliveryState:
    """``path``: the SQLite file, used when no shared state store is set (``url`` as
    ``open_state_db`` takes it)."""

    def __init__(self, path: Path | None = None, url: str | None = None):
        # synchronous=NORMAL on SQLite, as before: WAL stays consistent after a power cut, which
        # can lose only the last commits, and what they recorded is delivered again (billing
        # takes a version equal to its own as 200); no fsync per batch on the delivery path
        self.db = open_state_db("network-delivery", SCHEMA + PARKING_SCHEMA, path or default_location(),
                                synchronous="NORMAL", url=url)

    def close(self) -> None:
        self.db.close()

    def delivered(self, route: str, consumers: Iterable[str]) -> dict[str, int]:
        """The last version delivered to ``route`` of each of ``consumers`` that has one."""
        wanted, found = list(dict.fromkeys(consumers)), {}
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i:i + _CHUNK]
            marks = ",".join("?" * len(part))
            found.update(self.db.rows(
                f"SELECT consumer, version FROM delivered WHERE route = ? AND consumer IN ({marks})",
                [route, *part]))
        return found

    def record(self, route: str, versions: dict[str, int]) -> None:
        """``versions`` were delivered; a version never goes down."""
        with self.db.writing():
            # CASE, not MAX(a, b) (SQLite) or GREATEST (PostgreSQL): both databases speak it
            self.db.executemany("INSERT INTO delivered (route, consumer, version) VALUES (?, ?, ?) "
                                "ON CONFLICT (route, consumer) DO UPDATE SET version = CASE WHEN "
                                "excluded.version > delivered.version THEN excluded.version ELSE delivered.version END",
                                [(route, c, v) for c, v in versions.items()])


    # -- parking ------------------------------------------------------------------------
    def park(self, route: str, consumer: str, version: int, reason: str) -> None:
        reason = reason[:500].replace("\x00", "\ufffd")  # billing's words: PostgreSQL's text holds no NUL
        with self.db.writing():
            self.db.execute("INSERT INTO parked_consumers (route, consumer, version, reason, since) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (route, consumer) DO UPDATE "
                            "SET version = excluded.version, reason = excluded.reason",
                            (route, consumer, version, reason, time.time()))

    def hold_if_parked(self, route: str, updates: list) -> set[str]:
        """Keep the updates (``consumer``, ``version``, ``body``, ``headers``, ``properties``) of
        parked consumers; returns those consumers."""
        consumers = list(dict.fromkeys(u.consumer for u in updates))
        if not consumers or not self._any_parked(route, consumers):
            # A flowing consumer is parked by its partition's thread (this one) after a refusal;
            # the replays thread parks only one it is releasing, or, rarely, one whose old dead
            # letter is replayed after its release.  So one found unparked here stays so until
            # it is sent; the write transaction below is for the ones that are parked.
            return set()
        with self.db.writing():
            parked: set[str] = set()
            for i in range(0, len(consumers), _CHUNK):
                part = consumers[i:i + _CHUNK]
                parked.update(c for (c,) in self.db.rows(
                    f"SELECT consumer FROM parked_consumers WHERE route = ? AND consumer IN ({','.join('?' * len(part))})",
                    [route, *part]))
            self.db.executemany("INSERT INTO parked_updates (route, consumer, version, body, headers, properties, "
                                "parked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                [(route, u.consumer, u.version, u.body, json.dumps(u.headers, default=str),
                                  json.dumps(u.properties, default=str), time.time())
                                 for u in updates if u.consumer in parked])
        return parked

    def _any_parked(self, route: str, consumers: list[str]) -> bool:
        for i in range(0, len(consumers), _CHUNK):
            part = consumers[i:i + _CHUNK]
            if self.db.rows(f"SELECT 1 FROM parked_consumers WHERE route = ? AND consumer IN "
                            f"({','.join('?' * len(part))}) LIMIT 1", [route, *part]):
                return True
        return False

    def parked_updates(self, route: str, consumer: str) -> list[tuple[int, bytes, dict, dict]]:
        rows = self.db.rows("SELECT version, body, headers, properties FROM parked_updates "
                            "WHERE route = ? AND consumer = ? ORDER BY version", (route, consumer))
        return [(v, bytes(b), json.loads(h), json.loads(p)) for v, b, h, p in rows]

    def unpark(self, route: str, consumer: str, sent_up_to: int, stay: bool = False) -> bool:
        """Forget parked updates up to ``sent_up_to``; if none is left (and not ``stay``), the
        consumer flows again (True).  Otherwise (one was held meanwhile) it stays parked."""
        with self.db.writing():
            self.db.execute("DELETE FROM parked_updates WHERE route = ? AND consumer = ? AND version <= ?",
                            (route, consumer, sent_up_to))
            if stay or self.db.rows("SELECT 1 FROM parked_updates WHERE route = ? AND consumer = ? LIMIT 1",
                                    (route, consumer)):
                return False
            self.db.execute("DELETE FROM parked_consumers WHERE route = ? AND consumer = ?", (route, consumer))
            return True

    def parked(self, route: str | None = None) -> list[dict]:
        """Parked consumers, oldest first, with how many updates each holds."""
        sql = ("SELECT c.route, c.consumer, c.version, c.reason, c.since, COUNT(u.version), MAX(u.version) "
               "FROM parked_consumers c LEFT JOIN parked_updates u ON u.route = c.route AND u.consumer = c.consumer "
               + ("WHERE c.route = ? " if route else "") + "GROUP BY c.route, c.consumer ORDER BY c.since")
        rows = self.db.rows(sql, (route,) if route else ())
        return [{"route": r, "consumer": c, "deadLetteredVersion": v, "reason": why, "since": since,
                 "held": n, "lastHeldVersion": last} for r, c, v, why, since, n, last in rows]
