"""What each billing route has taken: the last version delivered per consumer.

The outbox is at-least-once: a publisher that crashed between the broker's confirm and
``mark_published`` publishes those updates again, after later ones may have gone out.  Billing
answers 409 to a version older than the one it holds, so the delivery process drops every update
not newer than what the route already delivered for that consumer.  The row is written after
billing answered 200 and before the batch is acked: a crash between the two redelivers versions
equal to the ones held, which billing takes as 200.

SQLite (``$GRIDBUS_STATE/network-delivery.sqlite``), shared by the delivery processes of one host;
several hosts need it in PostgreSQL beside the network store (not done yet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bus.sqlite_local import ThreadConnections

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    route TEXT NOT NULL, consumer TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (route, consumer)) WITHOUT ROWID;
"""
_CHUNK = 500  # SQLite's host-parameter limit is well above this


def default_location() -> Path:
    from bus.settings import Settings

    return Settings.load().state_dir / "network-delivery.sqlite"


class DeliveryState:
    def __init__(self, path: Path | None = None):
        self.db = ThreadConnections(path or default_location(), SCHEMA, synchronous="NORMAL")

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
