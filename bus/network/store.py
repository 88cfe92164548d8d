"""NetworkStore: the network model as of any instant, and the outbox of consumer-path updates.

SQLite by default ($GRIDBUS_HOME/state/network.sqlite), PostgreSQL by URL
(``GRIDBUS_NETWORK_STORE=postgresql://...``); the same statements run on both.

Every query takes ``at``: epoch seconds, an aware datetime, or None for now.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bus.network.db import NetworkStoreError, PostgresDb, SqliteDb
from bus.network.model import CHILD_TYPE, ApplyResult
from bus.network.path_body import path_of
from bus.network.schema import ELEMENT_COLUMNS, OPEN

__all__ = ["NetworkStore", "NetworkStoreError", "PathUpdate", "open_store", "default_location"]

AS_OF = "valid_from <= ? AND valid_to > ?"
_COLUMNS = ", ".join(ELEMENT_COLUMNS)


def instant(at: float | dt.datetime | None) -> float:
    """``at`` as epoch seconds; None is now."""
    if at is None:
        return time.time()
    if isinstance(at, dt.datetime):
        return at.timestamp()
    return float(at)


def iso(ts: float) -> str | None:
    return None if ts >= OPEN else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def element_record(row: tuple) -> dict:
    """An element row as the CLI and callers see it."""
    r = dict(zip(ELEMENT_COLUMNS, row))
    r["attributes"] = json.loads(r["attributes"])
    r["validFrom"], r["validTo"] = iso(r.pop("valid_from")), iso(r.pop("valid_to"))
    r["created"], r["changeId"] = iso(r.pop("born")), r.pop("change_id")
    return r


@dataclass(frozen=True)
class PathUpdate:
    """One consumer-path update waiting in the outbox (``body`` is what billing gets)."""

    id: int
    consumer: str
    version: int
    body: dict


class NetworkStore:
    def __init__(self, db: SqliteDb | PostgresDb):
        self.db = db
        self.dialect = db.dialect

    @property
    def location(self) -> str:
        return self.db.location

    def _rows(self, sql: str, args=()) -> list[tuple]:
        return self.db.rows(sql, args)

    def _in(self, values: Iterable[str]) -> str:
        """One parameter holding a whole list (see Dialect.values_of)."""
        return json.dumps(list(values))

    # -- writing ------------------------------------------------------------------------------
    def apply(self, changes: Iterable, document_id: str | None = None, progress=None) -> ApplyResult:
        """Apply one document's changes (raw dicts, as in ``Payload.changes``) in GIS order, in one
        transaction under the writer lock: each change applied or refused with a reason, never
        half of the document.  ``progress(done)`` is called now and then for a long document."""
        from bus.network.apply import Applier

        with self.db.writing() as db:
            applier = Applier(db, document_id, progress)
            result = applier.run(changes)
        if applier.used_bulk:
            self.db.checkpoint()  # a bulk load's WAL (GBs for a million consumers) back to nothing
        return result

    # -- elements -----------------------------------------------------------------------------
    def element(self, mrid: str, at=None) -> dict | None:
        """The element as it was at ``at``, or None if it did not exist then."""
        t = instant(at)
        rows = self._rows(f"SELECT {_COLUMNS} FROM elements WHERE mrid = ? AND {AS_OF}", (mrid, t, t))
        return element_record(rows[0]) if rows else None

    def history(self, mrid: str) -> list[dict]:
        """Every version of the element, oldest first (a retired element's last row is closed)."""
        return [element_record(r) for r in
                self._rows(f"SELECT {_COLUMNS} FROM elements WHERE mrid = ? ORDER BY version", (mrid,))]

    def path(self, mrid: str, at=None) -> list[dict]:
        """The element and its ancestors up to the substation, as of ``at`` ([] if unknown then)."""
        out: list[dict] = []
        current = self.element(mrid, at)
        while current is not None and len(out) < 8:
            out.append(current)
            current = self.element(current["parent"], at) if current["parent"] else None
        return out

    def children(self, mrid: str, at=None) -> list[str]:
        t = instant(at)
        return [r[0] for r in self._rows(f"SELECT mrid FROM elements WHERE parent = ? AND {AS_OF} ORDER BY mrid",
                                         (mrid, t, t))]

    def children_counts(self, mrid: str, at=None) -> dict[str, int]:
        """Live descendants by type at ``at``: a feeder's DTs and the consumers under them."""
        t = instant(at)
        element = self.element(mrid, t)
        counts: dict[str, int] = {}
        level, parents = (element or {}).get("type"), [mrid]
        while element and CHILD_TYPE.get(level) and parents:
            level = CHILD_TYPE[level]
            parents = [r[0] for r in self._rows(
                f"SELECT mrid FROM elements WHERE parent IN ({self.dialect.values_of}) AND {AS_OF}",
                (self._in(parents), t, t))]
            counts[level] = len(parents)
        return counts

    def consumers_under(self, mrid: str, at=None) -> dict[str, str]:
        """consumer mRID → meter serial, for every consumer under the element (DT, feeder,
        substation) at ``at``: what a DT-wise energy audit sums and an outage share counts."""
        t = instant(at)
        element = self.element(mrid, t)
        if element is None:
            return {}
        if element["type"] == "consumer":
            return {mrid: element["meter"]}
        level, parents = element["type"], [mrid]
        while CHILD_TYPE[level] != "consumer" and parents:
            level = CHILD_TYPE[level]
            parents = [r[0] for r in self._rows(
                f"SELECT mrid FROM elements WHERE parent IN ({self.dialect.values_of}) AND {AS_OF}",
                (self._in(parents), t, t))]
        if not parents:
            return {}
        return dict(self._rows(
            f"SELECT mrid, meter FROM elements WHERE parent IN ({self.dialect.values_of}) AND {AS_OF} ORDER BY mrid",
            (self._in(parents), t, t)))

    # -- meters -------------------------------------------------------------------------------
    def meters(self, meters: Iterable[str], at=None) -> dict[str, tuple[str, str, str | None]]:
        """meter serial → (type, element mRID, parent mRID) at ``at``, for the serials known then;
        one indexed query for the whole list."""
        t = instant(at)
        rows = self._rows(f"SELECT meter, type, mrid, parent FROM elements WHERE meter IN ({self.dialect.values_of}) "
                          f"AND {AS_OF}", (self._in(meters), t, t))
        return {meter: (type_, mrid, parent) for meter, type_, mrid, parent in rows}

    def dts_of(self, meters: Iterable[str], at=None) -> dict[str, str]:
        """meter serial → the DT it was under at ``at``: a consumer meter gives its DT, a DT
        meter its own DT; feeder-head meters and unknown serials are left out.  One query."""
        out = {}
        for meter, (type_, mrid, parent) in self.meters(meters, at).items():
            if type_ == "consumer":
                out[meter] = parent
            elif type_ == "dt":
                out[meter] = mrid
        return out

    def consumer_of(self, meter: str, at=None) -> str | None:
        """The consumer whose meter this serial was at ``at``."""
        found = self.meters([meter], at).get(meter)
        return found[1] if found and found[0] == "consumer" else None

    def feeders_of(self, dts: Iterable[str], at=None) -> dict[str, str]:
        """DT mRID → its feeder at ``at`` (the outage correlator's second step, after dts_of)."""
        t = instant(at)
        return dict(self._rows(f"SELECT mrid, parent FROM elements WHERE mrid IN ({self.dialect.values_of}) "
                               f"AND type = 'dt' AND {AS_OF}", (self._in(dts), t, t)))

    # -- counts -------------------------------------------------------------------------------
    def counts(self, at=None) -> dict[str, int]:
        t = instant(at)
        found = dict(self._rows(f"SELECT type, COUNT(*) FROM elements WHERE {AS_OF} GROUP BY type", (t, t)))
        return {type_: int(found.get(type_, 0)) for type_ in CHILD_TYPE}

    def stats(self) -> dict:
        changes, last = self._rows("SELECT COUNT(*), MAX(applied_at) FROM changes")[0]
        pending = self._rows("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")[0][0]
        return {"elements": self.counts(), "changesApplied": int(changes), "lastAppliedAt": last,
                "outboxPending": int(pending), "store": self.location}

    def change(self, change_id: str) -> dict | None:
        """An applied change: what it was, when it was applied, from which document."""
        cols = ("changeId", "sequence", "mrid", "kind", "type", "effectiveFrom", "appliedAt", "document")
        rows = self._rows("SELECT change_id, sequence, mrid, kind, type, effective_from, applied_at, document "
                          "FROM changes WHERE change_id = ?", (change_id,))
        return dict(zip(cols, rows[0])) if rows else None

    # -- the outbox ---------------------------------------------------------------------------
    def pending_updates(self, limit: int = 1000) -> list[PathUpdate]:
        """The oldest consumer-path updates not yet published, in the order written (so each
        consumer's versions in order)."""
        rows = self._rows("SELECT id, consumer, version, change_id, body FROM outbox WHERE published_at IS NULL "
                          "ORDER BY id LIMIT ?", (int(limit),))
        return [PathUpdate(int(i), c, int(v), path_of(b, c, int(v), ch)) for i, c, v, ch, b in rows]

    def mark_published(self, ids: Iterable[int]) -> int:
        """Mark outbox updates as handed to the bus (after the broker confirmed them)."""
        ids = [int(i) for i in ids]
        now = time.time()
        with self.db.writing() as db:
            for i in range(0, len(ids), 10_000):
                db.execute(f"UPDATE outbox SET published_at = ? WHERE id IN ({self.dialect.ids_of}) "
                           "AND published_at IS NULL", (now, json.dumps(ids[i:i + 10_000])))
        return len(ids)

    def updates_of(self, consumer: str) -> list[PathUpdate]:
        """Every outbox update of one consumer, published or not, in version order."""
        rows = self._rows("SELECT id, consumer, version, change_id, body FROM outbox WHERE consumer = ? "
                          "ORDER BY version", (consumer,))
        return [PathUpdate(int(i), c, int(v), path_of(b, c, int(v), ch)) for i, c, v, ch, b in rows]

    # -- snapshots held for a human ---------------------------------------------------------------
    def last_sequence(self) -> int:
        """The highest GIS sequence applied so far (0 for an empty store)."""
        return int(self._rows("SELECT COALESCE(MAX(sequence), 0) FROM changes")[0][0])

    def hold(self, held_id: str, reason: str, counts: dict, snapshot: str, effective_from: float) -> None:
        """Keep a snapshot for a human to approve or discard.  The same file held again keeps its
        first hold; dropped again after a discard, it is held again."""
        with self.db.writing() as db:
            db.execute("INSERT INTO held_documents (id, received, reason, counts, snapshot, effective_from, state) "
                       "VALUES (?, ?, ?, ?, ?, ?, 'held') ON CONFLICT (id) DO UPDATE SET state = 'held', "
                       "received = excluded.received, reason = excluded.reason, counts = excluded.counts, "
                       "snapshot = excluded.snapshot, effective_from = excluded.effective_from, decided_by = NULL, "
                       "decided_at = NULL WHERE held_documents.state <> 'held'",
                       (held_id, time.time(), reason, json.dumps(counts), snapshot, effective_from))

    def held(self, held_id: str | None = None, state: str | None = "held") -> list[dict]:
        """Held documents, oldest first (one, by id; every state when ``state`` is None)."""
        sql = "SELECT id, received, reason, counts, snapshot, effective_from, state, decided_by, decided_at " \
              "FROM held_documents WHERE 1 = 1"
        args: list = []
        if held_id is not None:
            sql, args = sql + " AND id = ?", [*args, held_id]
        if state is not None:
            sql, args = sql + " AND state = ?", [*args, state]
        cols = ("id", "received", "reason", "counts", "snapshot", "effectiveFrom", "state", "decidedBy", "decidedAt")
        out = [dict(zip(cols, r)) for r in self._rows(sql + " ORDER BY received, id", tuple(args))]
        for d in out:
            d["counts"] = json.loads(d["counts"])
        return out

    def decide_held(self, held_id: str, state: str, user: str) -> bool:
        """Mark a held document approved or discarded; False if it was no longer held."""
        with self.db.writing() as db:
            if not db.rows("SELECT 1 FROM held_documents WHERE id = ? AND state = 'held'", (held_id,)):
                return False
            db.execute("UPDATE held_documents SET state = ?, decided_by = ?, decided_at = ? WHERE id = ?",
                       (state, user, time.time(), held_id))
        return True

    def export_rows(self, at=None) -> Iterator[dict]:
        """One snapshot row per consumer live at ``at`` (see export.py), streamed."""
        from bus.network.export import snapshot_rows

        return snapshot_rows(self.db, instant(at))


def default_location() -> str | Path:
    """$GRIDBUS_NETWORK_STORE (a postgresql:// URL or a file), else $GRIDBUS_STATE_STORE, else
    $GRIDBUS_HOME/state/network.sqlite."""
    from bus.state_store import store_location

    return store_location("GRIDBUS_NETWORK_STORE", "network.sqlite")


def open_store(location: str | Path | None = None) -> NetworkStore:
    """A ``postgresql://`` URL, the path of a SQLite file, or None for the default location."""
    text = str(location if location is not None else default_location())
    if text.startswith(("postgresql://", "postgres://")):
        return NetworkStore(PostgresDb(text))
    return NetworkStore(SqliteDb(Path(text)))
