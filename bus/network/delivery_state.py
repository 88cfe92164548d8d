"""What each billing route has taken: the last version delivered per consumer.

The outbox is at-least-once: a publisher that crashed between the broker's confirm and
``mark_published`` publishes those updates again, after later ones may have gone out.  Billing
answers 409 to a version older than the one it holds, so the delivery process drops every update
not newer than what the route already delivered for that consumer.  The row is written after
billing answered 200 and before the batch is acked: a crash between the two redelivers versions
equal to the ones held, which billing takes as 200.

SQLite (``$GRIDBUS_STATE/network-delivery.sqlite``), shared by the delivery processes of one host;
several hosts need it in PostgreSQL beside the network store (not done yet).

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

from bus.sqlite_local import ThreadConnections

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (route, consumer)) WITHOUT ROWID;
"""
PARKING_SCHEMA = """
CREATE TABLE IF NOT EXISTS parked_consumers (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version INTEGER NOT NULL, reason TEXT NOT NULL,
    since REAL NOT NULL, PRIMARY KEY (route, consumer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parked_updates (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL,
    headers TEXT NOT NULL, properties TEXT NOT NULL, parked_at REAL NOT NULL,
    PRIMARY KEY (route, consumer, version)) WITHOUT ROWID;
"""
_CHUNK = 500  # SQLite's host-parameter limit is well above this


def default_location() -> Path:
    from bus.settings import Settings

    return Settings.load().state_dir / "network-delivery.sqlite"


class DeliveryState:
    def __init__(self, path: Path | None = None):
        self.db = ThreadConnections(path or default_location(), SCHEMA + PARKING_SCHEMA, synchronous="NORMAL")

    def delivered(self, route: str, consumers: Iterable[str]) -> dict[str, int]:
        """The last version delivered to ``route`` of each of ``consumers`` that has one."""
        wanted, found = list(dict.fromkeys(consumers)), {}
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i:i + _CHUNK]
            marks = ",".join("?" * len(part))
            found.update(self.db().execute(
                f"SELECT consumer, version FROM delivered WHERE route = ? AND consumer IN ({marks})",
                [route, *part]).fetchall())
        return found

    def record(self, route: str, versions: dict[str, int]) -> None:
        """``versions`` were delivered; a version never goes down."""
        with self.db.transaction() as db:
            db.executemany("INSERT INTO delivered (route, consumer, version) VALUES (?, ?, ?) "
                           "ON CONFLICT (route, consumer) DO UPDATE SET version = MAX(version, excluded.version)",
                           [(route, c, v) for c, v in versions.items()])


    # -- parking ------------------------------------------------------------------------
    def park(self, route: str, consumer: str, version: int, reason: str) -> None:
        with self.db.transaction() as db:
            db.execute("INSERT INTO parked_consumers (route, consumer, version, reason, since) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (route, consumer) DO UPDATE "
                       "SET version = excluded.version, reason = excluded.reason",
                       (route, consumer, version, reason[:500], time.time()))

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
        with self.db.transaction() as db:
            parked: set[str] = set()
            for i in range(0, len(consumers), _CHUNK):
                part = consumers[i:i + _CHUNK]
                parked.update(c for (c,) in db.execute(
                    f"SELECT consumer FROM parked_consumers WHERE route = ? AND consumer IN ({','.join('?' * len(part))})",
                    [route, *part]))
            db.executemany("INSERT INTO parked_updates (route, consumer, version, body, headers, properties, "
                           "parked_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           [(route, u.consumer, u.version, u.body, json.dumps(u.headers, default=str),
                             json.dumps(u.properties, default=str), time.time())
                            for u in updates if u.consumer in parked])
        return parked

    def _any_parked(self, route: str, consumers: list[str]) -> bool:
        db = self.db()
        for i in range(0, len(consumers), _CHUNK):
            part = consumers[i:i + _CHUNK]
            if db.execute(f"SELECT 1 FROM parked_consumers WHERE route = ? AND consumer IN "
                          f"({','.join('?' * len(part))}) LIMIT 1", [route, *part]).fetchone():
                return True
        return False

    def parked_updates(self, route: str, consumer: str) -> list[tuple[int, bytes, dict, dict]]:
        rows = self.db().execute("SELECT version, body, headers, properties FROM parked_updates "
                                 "WHERE route = ? AND consumer = ? ORDER BY version", (route, consumer)).fetchall()
        return [(v, bytes(b), json.loads(h), json.loads(p)) for v, b, h, p in rows]

    def unpark(self, route: str, consumer: str, sent_up_to: int, stay: bool = False) -> bool:
        """Forget parked updates up to ``sent_up_to``; if none is left (and not ``stay``), the
        consumer flows again (True).  Otherwise (one was held meanwhile) it stays parked."""
        with self.db.transaction() as db:
            db.execute("DELETE FROM parked_updates WHERE route = ? AND consumer = ? AND version <= ?",
                       (route, consumer, sent_up_to))
            if stay or db.execute("SELECT 1 FROM parked_updates WHERE route = ? AND consumer = ? LIMIT 1",
                          (route, consumer)).fetchone():
                return False
            db.execute("DELETE FROM parked_consumers WHERE route = ? AND consumer = ?", (route, consumer))
            return True

    def parked(self, route: str | None = None) -> list[dict]:
        """Parked consumers, oldest first, with how many updates each holds."""
        sql = ("SELECT c.route, c.consumer, c.version, c.reason, c.since, COUNT(u.version), MAX(u.version) "
               "FROM parked_consumers c LEFT JOIN parked_updates u ON u.route = c.route AND u.consumer = c.consumer "
               + ("WHERE c.route = ? " if route else "") + "GROUP BY c.route, c.consumer ORDER BY c.since")
        rows = self.db().execute(sql, (route,) if route else ()).fetchall()
        return [{"route": r, "consumer": c, "deadLetteredVersion": v, "reason": why, "since": since,
                 "held": n, "lastHeldVersion": last} for r, c, v, why, since, n, last in rows]
