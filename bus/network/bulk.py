"""The bulk path of the applier: a document of creates into an empty store (a first snapshot
import, a GIS's initial load of 1,000,000 consumers).

Same validation, same rows, same outbox as the ordinary path; what differs is where the state
comes from.  The ordinary path reads, per chunk, what the chunk's changes need from the store
(their elements, change ids, sequences, meter holders) through the secondary indexes.  Into an
empty store everything there is was written by this document, so the bulk path keeps it in
memory across chunks instead (change ids, the last sequence per mRID, meter → holder, the rows
of substations, feeders and DTs; not the consumers' rows, which only a later change would read,
by primary key), drops the secondary indexes for the load and builds them once at the end, in
the same transaction: a crash rolls the indexes back with the rows.

The first change that is not a create ends the bulk path (the indexes are built, the ordinary
path takes over for the rest of the document with the store as it now stands).
"""
from __future__ import annotations

from collections import Counter
from operator import attrgetter

from bus.network.schema import INDEXES, OPEN

SECONDARY_INDEXES = ("elements_parent", "elements_meter", "changes_mrid", "outbox_pending")
BULK_CHUNK = 20_000
_MRID, _PARENT, _METER, _CHANGE_ID = (attrgetter(name) for name in ("mrid", "parent", "meter", "change_id"))


def store_is_empty(db) -> bool:
    return not db.rows("SELECT 1 FROM elements LIMIT 1") and not db.rows("SELECT 1 FROM changes LIMIT 1")


class BulkState:
    def __init__(self, db, first_outbox_id: int):
        self.db = db
        self.first_outbox_id = first_outbox_id
        self.done: set[str] = set()           # change ids applied by this document
        self.seq: dict[str, int] = {}         # mRID → its last sequence (every element created)
        self.rows: dict = {}                  # mRID → Row, for substations, feeders and DTs
        self.meters: dict[str, str] = {}      # meter serial → the element holding it
        self.paths: dict[str, tuple] = {}     # DT → (feeder, substation), for consumer paths
        for name in SECONDARY_INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {name}")
        db.load_pragmas(True)

    def end(self) -> None:
        # the consumers the applier's short path created: path version 1 each, one statement
        # rather than a million bound rows (the others have theirs already, also 1)
        self.db.execute("INSERT INTO path_versions (consumer, version) SELECT consumer, version FROM outbox "
                        "WHERE id >= ? ON CONFLICT (consumer) DO NOTHING", (self.first_outbox_id,))
        for statement in INDEXES:
            self.db.execute(statement)
        self.db.load_pragmas(False)
        self.done, self.seq, self.rows, self.meters, self.paths = set(), {}, {}, {}, {}

    def consumer_creates(self, changes: list) -> set[int]:
        """The indexes of the chunk's consumer creates that may take the applier's short path: their
        change id, mRID and meter appear nowhere else, neither in the chunk (as an mRID, a parent,
        a meter, a change id) nor among what the document has applied so far.  Such a create
        cannot meet DUPLICATE, STALE, EXISTS or METER_IN_USE, and no other change of the chunk
        reads its state."""
        # map(attrgetter) rather than generators: Counter then counts in C (None is counted, and
        # matches nothing: a candidate has an mRID, a meter and a change id)
        names = Counter(map(_MRID, changes))
        names.update(map(_PARENT, changes))
        meters = Counter(map(_METER, changes))
        ids = Counter(map(_CHANGE_ID, changes))
        done, seq, held = self.done, self.seq, self.meters
        return {c.index for c in changes
                if c.kind == "create" and c.type == "consumer" and names[c.mrid] == 1 and meters[c.meter] == 1
                and ids[c.change_id] == 1 and c.mrid not in seq and c.meter not in held
                and c.change_id not in done}

    def prefetch(self, applier, changes: list) -> None:
        """The applier's per-chunk state, from memory (see the module docstring)."""
        rows, seq = applier.rows, self.seq
        for c in changes:
            for mrid in (c.mrid, c.parent):
                if mrid is None or mrid in rows:
                    continue
                if mrid in self.rows:
                    rows[mrid] = self.rows[mrid]
                elif mrid not in seq:
                    rows[mrid] = None
                # else: a consumer created in an earlier chunk: Applier._latest reads it by primary key
            if c.change_id in self.done:
                applier.done_ids.add(c.change_id)
            if c.mrid in seq:
                applier.last_seq[c.mrid] = seq[c.mrid]
            if c.meter and c.meter in self.meters:
                applier.holders[c.meter] = {self.meters[c.meter]: OPEN}

    def remember(self, applier) -> None:
        """What the chunk just applied, for the chunks after it."""
        self.done |= applier.done_ids
        self.seq.update(applier.last_seq)
        for mrid, row in applier.rows.items():
            if row is not None and row.type != "consumer":
                self.rows[mrid] = row
        for meter, holders in applier.holders.items():
            for mrid, end in holders.items():
                if end >= OPEN:
                    self.meters[meter] = mrid
