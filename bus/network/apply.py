"""One document of changes, applied change by change inside one transaction of the writer.

Per chunk of changes (5,000) the state they need is read in a few statements (their elements'
latest rows and their parents', the change ids already applied, the last sequence per element,
the holders of their meters, their consumers' path versions); the changes are then checked
against that state in GIS order, the state updated as each applies, and the writes buffered and
sent with executemany.  A query that must see the document's own writes (the consumers under a
moved DT, a retired element's children) flushes the buffers first.

Consumer paths carry mRIDs only, so a DT's or feeder's attribute update changes no path: paths
change on a consumer's own change and on a move of its DT or of its DT's feeder.
"""
from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import orjson

from bus.network.bulk import BULK_CHUNK, BulkState, store_is_empty
from bus.network.model import (METER_ATTRIBUTE, PARENT_TYPE, ApplyResult, Change, Outcome, Reason, applied,
                               parse_change, refused)
from bus.network.path_body import stored
from bus.network.schema import ELEMENT_COLUMNS, OPEN

CHUNK = 5_000
AS_OF = "valid_from <= ? AND valid_to > ?"


@dataclass(frozen=True)
class Row:
    """An element's latest row, as the applier sees it while it works."""

    mrid: str
    version: int
    type: str
    parent: str | None
    name: str | None
    meter: str | None
    attributes: dict
    valid_from: float
    valid_to: float
    born: float
    change_id: str

    @classmethod
    def of(cls, row: tuple) -> "Row":
        values = dict(zip(ELEMENT_COLUMNS, row))
        values["attributes"] = json.loads(values["attributes"])
        return cls(**values)

    def exists_at(self, t: float) -> bool:
        return self.born <= t < self.valid_to


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t < OPEN else "never"


class Applier:
    def __init__(self, db, document_id: str | None = None, progress: Callable[[int], None] | None = None):
        self.db = db
        self.values_of = db.dialect.values_of
        self.document_id = document_id
        self.progress = progress
        self.now = time.time()
        self.next_id = int(db.rows("SELECT COALESCE(MAX(id), 0) FROM outbox")[0][0]) + 1
        self.result = ApplyResult()
        self._forget()
        # into an empty store: state kept in memory, indexes built once at the end (bulk.py)
        self.bulk = BulkState(db, self.next_id) if store_is_empty(db) else None
        self.used_bulk = self.bulk is not None

    def _forget(self) -> None:
        self.rows: dict[str, Row | None] = {}
        self.done_ids: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.holders: dict[str, dict[str, float]] = {}   # meter → {mrid: the end of its last row with it}
        self.versions: dict[str, int] = {}
        self.inserts: list[tuple] = []
        self.closes: list[tuple] = []
        self.change_rows: list[tuple] = []
        self.outbox_rows: list[tuple] = []
        self.version_rows: dict[str, int] = {}

    # -- the run --------------------------------------------------------------------------------
    def run(self, changes: Iterable) -> ApplyResult:
        if self.bulk is None or not gc.isenabled():
            return self._run(changes)
        # a first load makes millions of objects that all live until its end: the cyclic
        # collector's full passes over them cost seconds and free nothing (none are cycles)
        gc.disable()
        try:
            return self._run(changes)
        finally:
            gc.enable()

    def _run(self, changes: Iterable) -> ApplyResult:
        chunk: list = []
        for index, raw in enumerate(changes):
            chunk.append(parse_change(raw, index))
            if len(chunk) >= (BULK_CHUNK if self.bulk else CHUNK):
                self._chunk(chunk)
                chunk = []
        if chunk:
            self._chunk(chunk)
        self._end_bulk()
        return self.result

    def _end_bulk(self) -> None:
        if self.bulk is not None:
            self.bulk.end()
            self.bulk = None

    def _chunk(self, parsed: list) -> None:
        good = [c for c in parsed if isinstance(c, Change)]
        if self.bulk is not None and any(c.kind != "create" for c in good):
            self._end_bulk()  # the ordinary path, on the indexes, for the rest of the document
        fast: set[int] = set()
        if self.bulk is not None:
            fast = self.bulk.consumer_creates(good)
            self.bulk.prefetch(self, [c for c in good if c.index not in fast])
        else:
            self._prefetch(good)
        outcomes = self.result.outcomes
        short = self._bulk_consumers(fast) if fast else None
        for item in parsed:
            if isinstance(item, Outcome):
                outcomes.append(item)
            elif item.index in fast:
                outcomes.append(short(item) or self._one_prefetched(item))
            else:
                outcomes.append(self._one(item))
        self._flush()
        if self.bulk is not None:
            self.bulk.remember(self)
        self._forget()
        if self.progress:
            self.progress(len(self.result.outcomes))

    def _query_in(self, sql: str, values: Iterable[str], *args) -> list[tuple]:
        return self.db.rows(sql.replace("{IN}", self.values_of), (json.dumps(list(values)), *args))

    def _prefetch(self, changes: list[Change]) -> None:
        if not changes:
            return
        mrids = {c.mrid for c in changes} | {c.parent for c in changes if c.parent}
        for row in self._query_in(
                f"SELECT {', '.join(ELEMENT_COLUMNS)} FROM elements e WHERE mrid IN ({{IN}}) AND version = "
                "(SELECT MAX(version) FROM elements WHERE mrid = e.mrid)", mrids):
            self.rows[row[0]] = Row.of(row)
        for mrid in mrids:
            self.rows.setdefault(mrid, None)
        self.done_ids = {r[0] for r in self._query_in("SELECT change_id FROM changes WHERE change_id IN ({IN})",
                                                      {c.change_id for c in changes})}
        self.last_seq = dict(self._query_in("SELECT mrid, MAX(sequence) FROM changes WHERE mrid IN ({IN}) "
                                            "GROUP BY mrid", {c.mrid for c in changes}))
        meters = {c.meter for c in changes if c.meter}
        if meters:
            earliest = min(c.effective_from for c in changes)
            for meter, mrid, end in self._query_in(
                    "SELECT meter, mrid, MAX(valid_to) FROM elements WHERE meter IN ({IN}) AND valid_to > ? "
                    "GROUP BY meter, mrid", meters, earliest):
                self.holders.setdefault(meter, {})[mrid] = end
        consumers = [c.mrid for c in changes if c.type == "consumer" and self.rows.get(c.mrid)]
        if consumers:
            self.versions = dict(self._query_in("SELECT consumer, version FROM path_versions "
                                                "WHERE consumer IN ({IN})", consumers))

    def _flush(self) -> None:
        db = self.db
        db.executemany(f"INSERT INTO elements ({', '.join(ELEMENT_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(ELEMENT_COLUMNS))})", self.inserts)
        db.executemany("UPDATE elements SET valid_to = ? WHERE mrid = ? AND version = ?", self.closes)
        db.executemany("INSERT INTO changes (change_id, sequence, mrid, kind, type, effective_from, applied_at, "
                       "document) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.change_rows)
        db.executemany("INSERT INTO outbox (id, consumer, version, change_id, effective_from, body) "
                       "VALUES (?, ?, ?, ?, ?, ?)", self.outbox_rows)
        db.executemany("INSERT INTO path_versions (consumer, version) VALUES (?, ?) ON CONFLICT (consumer) "
                       "DO UPDATE SET version = excluded.version", list(self.version_rows.items()))
        self.inserts, self.closes, self.change_rows, self.outbox_rows = [], [], [], []
        self.version_rows = {}

    # -- state ----------------------------------------------------------------------------------
    def _latest(self, mrid: str) -> Row | None:
        if mrid not in self.rows:
            found = self.db.rows(f"SELECT {', '.join(ELEMENT_COLUMNS)} FROM elements WHERE mrid = ? "
                                 "ORDER BY version DESC LIMIT 1", (mrid,))
            self.rows[mrid] = Row.of(found[0]) if found else None
        return self.rows[mrid]

    def _at(self, mrid: str, t: float) -> Row | None:
        """The element's row at ``t`` (None if it did not exist then)."""
        row = self._latest(mrid)
        if row is None or not row.exists_at(t):
            return None
        if row.valid_from <= t:
            return row
        self._flush()  # an older row: read it from the store, which must hold this document's writes
        found = self.db.rows(f"SELECT {', '.join(ELEMENT_COLUMNS)} FROM elements WHERE mrid = ? AND {AS_OF}",
                             (mrid, t, t))
        return Row.of(found[0]) if found else None

    def _meter_taken(self, meter: str, mrid: str, t: float) -> str | None:
        for holder, end in self.holders.get(meter, {}).items():
            if holder != mrid and end > t:
                return holder
        return None

    def _write_row(self, row: Row, change: Change, closing: Row | None) -> None:
        if closing is not None:
            self.closes.append((change.effective_from, closing.mrid, closing.version))
            if closing.meter:
                self.holders.setdefault(closing.meter, {})[closing.mrid] = change.effective_from
        self.inserts.append((row.mrid, row.version, row.type, row.parent, row.name, row.meter,
                             _dumps(row.attributes), row.valid_from, row.valid_to, row.born, row.change_id))
        if row.meter:
            self.holders.setdefault(row.meter, {})[row.mrid] = OPEN
        self.rows[row.mrid] = row

    # -- one change -----------------------------------------------------------------------------
    def _one(self, c: Change) -> Outcome:
        if c.change_id in self.done_ids:
            return refused(c, Reason.DUPLICATE, f"change {c.change_id} was applied before; not applied again")
        last = self.last_seq.get(c.mrid)
        if last is not None and c.sequence <= last:
            return refused(c, Reason.STALE, f"sequence {c.sequence} is not newer than {last}, the last applied "
                                            f"for {c.mrid}")
        row = self._latest(c.mrid)
        problem = self._create(c, row) if c.kind == "create" else self._change(c, row)
        if problem is not None:
            return problem
        self.done_ids.add(c.change_id)
        self.last_seq[c.mrid] = c.sequence
        self.change_rows.append((c.change_id, c.sequence, c.mrid, c.kind, c.type, c.effective_from, self.now,
                                 self.document_id))
        self._paths(c)
        return applied(c)

    def _one_prefetched(self, c: Change) -> Outcome:
        self.bulk.prefetch(self, [c])  # alone in its chunk (BulkState.consumer_creates): read it now
        return self._one(c)

    def _bulk_consumers(self, fast: set[int]) -> Callable[[Change], Outcome | None]:
        """The short path of a chunk's consumer creates on the bulk path: a function checking and
        writing one of them without the ordinary machinery.  BulkState.consumer_creates has made
        sure that nothing else in the chunk or the store names its change id, mRID or meter, so
        what is left to check is its DT.  The function answers None when the DT is not one to
        hang under at effectiveFrom: the ordinary checks then say why.  (A closure over the
        chunk's state: a million of them, and every attribute lookup shows.)"""
        bulk, rows, now, document = self.bulk, self.rows, self.now, self.document_id
        bulk_rows, paths, done, seq, meters = bulk.rows, bulk.paths, bulk.done, bulk.seq, bulk.meters
        insert, change_row, outbox_row = self.inserts.append, self.change_rows.append, self.outbox_rows.append
        dumps, result = orjson.dumps, self.result

        def short(c: Change) -> Outcome | None:
            t, mrid, dt_, change_id, meter = c.effective_from, c.mrid, c.parent, c.change_id, c.meter
            dt_row = rows.get(dt_) or bulk_rows.get(dt_)
            if dt_row is None or dt_row.type != "dt" or not dt_row.valid_from <= t < dt_row.valid_to:
                return None
            path = paths.get(dt_)
            if path is None:
                feeder_row = rows.get(dt_row.parent) or bulk_rows.get(dt_row.parent)
                if feeder_row is None:
                    return None
                # no move or retire happens on the bulk path: a DT's feeder and substation stay put
                path = paths[dt_] = (dt_row.parent, feeder_row.parent)
            attributes = c.attributes
            if None in attributes.values():
                attributes = {k: v for k, v in attributes.items() if v is not None}
            insert((mrid, 1, "consumer", dt_, c.name, meter, dumps(attributes).decode(), t, OPEN, t, change_id))
            change_row((change_id, c.sequence, mrid, "create", "consumer", t, now, document))
            done.add(change_id)
            seq[mrid] = c.sequence
            meters[meter] = mrid
            get = attributes.get  # path version 1: BulkState.end writes them, from the outbox, in one statement
            body = stored(get("consumer_no"), meter, get("category"), get("circle"), get("division"),
                          get("subdivision"), dt_, path[0], path[1], c.effective_text, False)
            outbox_row((self.next_id, mrid, 1, change_id, t, body))
            self.next_id += 1
            result.updates += 1
            return Outcome(c.index, change_id, mrid, "applied")

        return short

    def _check_parent(self, c: Change, parent_id: str | None) -> Outcome | None:
        wanted = PARENT_TYPE[c.type]
        if wanted is None:
            return None if parent_id is None else refused(
                c, Reason.WRONG_PARENT_TYPE, f"a substation hangs under nothing, not under {parent_id}")
        parent = self._at(parent_id, c.effective_from)
        if parent is None:
            known = self._latest(parent_id)
            detail = "is not known" if known is None else f"does not exist at {c.effective_text}"
            return refused(c, Reason.UNKNOWN_PARENT, f"parent {parent_id} {detail}")
        # walk up from the new parent: meeting the element itself would make a cycle (a new
        # element has no descendants yet)
        seen, up = 0, parent if c.kind == "move" else None
        while up is not None and seen < 8:
            if up.mrid == c.mrid:
                return refused(c, Reason.CYCLE, f"{c.mrid} would hang under its own descendant {parent_id}")
            up = self._at(up.parent, c.effective_from) if up.parent else None
            seen += 1
        if parent.type != wanted:
            return refused(c, Reason.WRONG_PARENT_TYPE,
                           f"a {c.type} hangs under a {wanted}; {parent_id} is a {parent.type}")
        return None

    def _create(self, c: Change, row: Row | None) -> Outcome | None:
        if row is not None:
            state = f"a {row.type} since {_when(row.born)}" if row.valid_to >= OPEN else \
                f"a {row.type} retired at {_when(row.valid_to)}; mRIDs are not reused"
            return refused(c, Reason.EXISTS, f"{c.mrid} exists already ({state})")
        problem = self._check_parent(c, c.parent) or self._check_meter(c, c.meter)
        if problem:
            return problem
        attributes = {k: v for k, v in c.attributes.items() if v is not None}
        self._write_row(Row(c.mrid, 1, c.type, c.parent, c.name, c.meter, attributes, c.effective_from, OPEN,
                            c.effective_from, c.change_id), c, None)
        return None

    def _check_meter(self, c: Change, meter: str | None) -> Outcome | None:
        holder = self._meter_taken(meter, c.mrid, c.effective_from) if meter else None
        if holder:
            return refused(c, Reason.METER_IN_USE, f"meter {meter} belongs to {holder} at {c.effective_text}")
        return None

    def _change(self, c: Change, row: Row | None) -> Outcome | None:
        t = c.effective_from
        if row is None:
            return refused(c, Reason.UNKNOWN_ELEMENT, f"{c.mrid} is not known")
        if row.type != c.type:
            return refused(c, Reason.WRONG_TYPE, f"{c.mrid} is a {row.type}, not a {c.type}")
        if t < row.born:
            return refused(c, Reason.UNKNOWN_ELEMENT, f"{c.mrid} does not exist before {_when(row.born)}")
        if row.valid_to < OPEN and t >= row.valid_to:
            return refused(c, Reason.UNKNOWN_ELEMENT, f"{c.mrid} was retired at {_when(row.valid_to)}")
        if t < row.valid_from or row.valid_to < OPEN:
            return refused(c, Reason.BACKDATED, f"{c.mrid} changed at {_when(row.valid_from)}, after "
                                                f"{c.effective_text}: history is not rewritten")
        if c.kind == "retire":
            return self._retire(c, row)
        parent = row.parent
        if c.kind == "move":
            problem = self._check_parent(c, c.parent)
            if problem:
                return problem
            parent = c.parent
        elif c.parent is not None and c.parent != row.parent:
            return refused(c, Reason.INVALID, f"an update keeps the parent ({row.parent}); send a move to "
                                              f"hang {c.mrid} under {c.parent}")
        attributes = {**row.attributes, **c.attributes}
        attributes = {k: v for k, v in attributes.items() if v is not None}  # null removes an attribute
        key = METER_ATTRIBUTE.get(c.type)
        meter = attributes.get(key) if key else None
        if meter != row.meter:
            problem = self._check_meter(c, meter)
            if problem:
                return problem
        new = Row(c.mrid, row.version + 1, row.type, parent, c.name or row.name, meter, attributes, t, OPEN,
                  row.born, c.change_id)
        self._write_row(new, c, row)
        return None

    def _retire(self, c: Change, row: Row) -> Outcome | None:
        if row.type != "consumer":
            self._flush()
            live = self.db.rows("SELECT mrid FROM elements WHERE parent = ? AND valid_to > ? ORDER BY mrid LIMIT 3",
                                (c.mrid, c.effective_from))
            if live:
                count = self.db.rows("SELECT COUNT(DISTINCT mrid) FROM elements WHERE parent = ? AND valid_to > ?",
                                     (c.mrid, c.effective_from))[0][0]
                return refused(c, Reason.HAS_CHILDREN, f"{c.mrid} still has {count} element(s) under it at "
                                                       f"{c.effective_text} (e.g. {', '.join(r[0] for r in live)}); "
                                                       "move or retire them first")
        self.closes.append((c.effective_from, row.mrid, row.version))
        if row.meter:
            self.holders.setdefault(row.meter, {})[row.mrid] = c.effective_from
        self.rows[row.mrid] = replace(row, valid_to=c.effective_from)
        return None

    # -- consumer paths (the outbox) ------------------------------------------------------------
    def _paths(self, c: Change) -> None:
        if c.type == "consumer":
            self._path(c, self._latest(c.mrid), retired=c.kind == "retire")
        elif c.kind == "move" and c.type in ("dt", "feeder"):
            self._flush()
            t = c.effective_from
            dts = [c.mrid] if c.type == "dt" else [r[0] for r in self.db.rows(
                f"SELECT mrid FROM elements WHERE parent = ? AND {AS_OF}", (c.mrid, t, t))]
            if not dts:
                return
            consumers = [Row.of(r) for r in self._query_in(
                f"SELECT {', '.join(ELEMENT_COLUMNS)} FROM elements WHERE parent IN ({{IN}}) AND {AS_OF} "
                "ORDER BY mrid", dts, t, t)]
            unknown = [r.mrid for r in consumers if r.mrid not in self.versions]
            for i in range(0, len(unknown), 10_000):
                self.versions.update(self._query_in("SELECT consumer, version FROM path_versions "
                                                    "WHERE consumer IN ({IN})", unknown[i:i + 10_000]))
            for consumer in consumers:
                self._path(c, consumer, retired=False)

    def _path(self, c: Change, consumer: Row, retired: bool) -> None:
        t = c.effective_from
        dt_ = consumer.parent
        dt_row = self._at(dt_, t) if dt_ else None
        feeder = dt_row.parent if dt_row else None
        feeder_row = self._at(feeder, t) if feeder else None
        substation = feeder_row.parent if feeder_row else None
        version = self.versions.get(consumer.mrid, 0) + 1
        self.versions[consumer.mrid] = self.version_rows[consumer.mrid] = version
        a = consumer.attributes
        body = stored(a.get("consumer_no"), consumer.meter, a.get("category"), a.get("circle"), a.get("division"),
                      a.get("subdivision"), dt_, feeder, substation, c.effective_text, retired)
        self.outbox_rows.append((self.next_id, consumer.mrid, version, c.change_id, t, body))
        self.next_id += 1
        self.result.updates += 1
