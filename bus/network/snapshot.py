"""A GIS consumer-indexing snapshot (CSV, docs/network-formats.md) diffed against the store as of
the snapshot's instant: only the real changes, each as if the GIS had pushed it.

One pass over the file, line by line (a line that cannot be read is rejected with its number and
a reason, never an exception).  Held in memory: one small integer per consumer of the store (a
hash of its row: consumer, meter, admin codes, DT), the meters and consumers seen, and the DTs,
feeders and substations (≈ 1 % of the rows).  The consumer changes are spooled to a temporary
file, so a 1,000,000-row first import never holds a million changes in memory.

Order of the changes: creates and updates of substations, feeders, DTs (parents first); consumer
retirements (their meters become free); consumer updates and moves (a replaced meter is free before
a new consumer takes it), then creates, each in file order; then the DTs, feeders and substations
the snapshot emptied.  Change ids are ``snap-<checksum>-...``
(so a snapshot read twice gives the same ids, which the store acknowledges as DUPLICATE);
sequences continue above the highest the store has applied.

A row rejected for any reason never retires its consumer: its consumer, if readable, is kept as
the store has it.
"""
from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bus.network.export import SNAPSHOT_COLUMNS, cell_text
from bus.network.model import ATTRIBUTE_VALUE_MAX, MRID_MAX, Change, parse_time
from bus.network.store import NetworkStore, iso

MAX_LINE_BYTES = 64 * 1024
REQUIRED = ("consumer", "meter", "dt", "feeder", "substation")
CONSUMER_FIELDS = ("consumer_no", "meter", "category", "circle", "division", "subdivision")
KEEP_REJECTED = 1000  # rejected lines listed in the report; the count is always whole
CHUNK = 5_000


class SnapshotError(ValueError):
    """The file as a whole cannot be read as a snapshot (no header, a column missing)."""


@dataclass
class SnapshotDiff:
    """What a snapshot read against the store amounts to; ``changes()`` yields them, in order."""

    checksum: str
    effective_from: float
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_lines: list[tuple[int, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)      # "create consumer": n, ...
    store_consumers: int = 0
    structure: list[dict] = field(default_factory=list)       # substation/feeder/DT creates and updates
    consumer_retires: list[str] = field(default_factory=list)
    element_retires: list[tuple[str, str]] = field(default_factory=list)  # (type, mrid), children first
    spools: list[Path] = field(default_factory=list)          # consumer updates/moves, then creates: JSON lines
    first_sequence: int = 1

    @property
    def retired_consumers(self) -> int:
        return len(self.consumer_retires)

    @property
    def retire_share(self) -> float:
        return self.retired_consumers / self.store_consumers if self.store_consumers else 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {"checksum": self.checksum, "effectiveFrom": iso(self.effective_from), "rowsRead": self.rows,
                "rowsAccepted": self.accepted, "rowsRejected": self.rejected, "changes": self.total,
                "byKind": dict(sorted(self.counts.items())), "storeConsumers": self.store_consumers,
                "retireShare": round(self.retire_share, 4)}

    def changes(self, parsed: bool = False) -> Iterator:
        """Every change, as the GIS would have pushed it (sequences and ids assigned here).  With
        ``parsed``, a consumer create comes as the ``Change`` the applier would read it into (the
        reader has checked every field parse_change checks: a million creates are not read
        twice); the rest, and any create whose meter the change format would refuse, as dicts."""
        seq = self.first_sequence
        when = iso(self.effective_from)
        at = parse_time(when)  # the instant as the text says it, exactly as every dict change is read
        prefix = f"snap-{self.checksum[:16]}"
        index = 0

        def stamp(change: dict, suffix: str) -> dict:
            nonlocal seq, index
            change.update(changeId=f"{prefix}-{suffix}", sequence=seq, effectiveFrom=when)
            seq += 1
            index += 1
            return change

        for change in self.structure:
            yield stamp(change, change.pop("_id"))
        for mrid in self.consumer_retires:
            yield stamp({"kind": "retire", "type": "consumer", "mrid": mrid}, f"retire-{mrid}")
        updates, creates = self.spools
        with open(updates, "rb") as f:
            for line in f:
                change = orjson.loads(line)
                yield stamp(change, change.pop("_id"))
        with open(creates, "rb") as f:
            for line in f:
                line_no, mrid, dt_, *fields = orjson.loads(line)
                attributes = dict(zip(CONSUMER_FIELDS, fields))
                if "" in fields:
                    attributes = {k: v for k, v in attributes.items() if v != ""}  # blank is absent
                meter = attributes["meter"]
                if parsed and len(meter) <= MRID_MAX:
                    yield Change(index, f"{prefix}-{line_no}", seq, at, when, "create", "consumer", mrid, dt_, None,
                                 attributes, meter)
                    seq += 1
                    index += 1
                    continue
                yield stamp({"kind": "create", "type": "consumer", "mrid": mrid, "parent": dt_,
                             "attributes": attributes}, str(line_no))
        for type_, mrid in self.element_retires:
            yield stamp({"kind": "retire", "type": type_, "mrid": mrid}, f"retire-{mrid}")

    def close(self) -> None:
        for spool in self.spools:
            spool.unlink(missing_ok=True)
        self.spools = []

    def __enter__(self) -> "SnapshotDiff":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def checksum_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_MASK = (1 << 62) - 1


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _attrs(pairs) -> dict:
    """Snapshot text → attributes: blank is absent (null in an update), kVA and kV numbers."""
    return {k: (None if v == "" else (_number(v) if k in NUMERIC_ATTRS else v)) for k, v in pairs}


NUMERIC_ATTRS = ("rating_kva", "voltage_kv")


class _Reader:
    """The diff's one pass; see the module docstring."""

    def __init__(self, store: NetworkStore, path: Path, at: float, diff: SnapshotDiff):
        self.store, self.path, self.t, self.diff = store, path, at, diff
        self.state: dict[str, int] = {}      # consumer → hash of its store row, or -line once read
        self.store_dt_of: dict[str, str] = {}
        self.meters: dict[str, int] = {}     # meter → line of the row that has it
        self.dts: dict[str, tuple] = {}      # dt → (feeder, rating, dt_meter, line)
        self.feeders: dict[str, tuple] = {}  # feeder → (substation, kv, head_meter, line)
        self.substations: dict[str, int] = {}
        self.protected: set[str] = set()     # consumers of rejected rows: never retired
        self.creates = 0                     # new consumers (spooled)

    # -- the store as of t ---------------------------------------------------------------------
    def load_store(self) -> None:
        store_dts_used: set[str] = set()
        interned: dict[str, str] = {}
        state, t, loads = self.state, self.t, orjson.loads
        # the consumers' own rows, no join: a value of another JSON type than the file's text (a
        # number) hashes differently and is compared again, exactly, in _consumer_batch
        for mrid, meter, parent, attrs in self.store.db.stream(
                "SELECT mrid, meter, parent, attributes FROM elements WHERE type = 'consumer' "
                "AND valid_from <= ? AND valid_to > ?", (t, t)):
            a = loads(attrs)
            dt_ = interned.setdefault(parent, parent) if parent else ""
            state[mrid] = hash((a.get("consumer_no", ""), meter, a.get("category", ""), a.get("circle", ""),
                                a.get("division", ""), a.get("subdivision", ""), dt_)) & _MASK
            store_dts_used.add(dt_)
        self.diff.store_consumers = len(self.state)
        self.store_dts_used = store_dts_used
        t = self.t
        self.store_elements: dict[str, tuple] = {}  # mrid → (type, parent, attributes text)
        for mrid, type_, parent, attrs in self.store.db.rows(
                "SELECT mrid, type, parent, attributes FROM elements WHERE type <> 'consumer' "
                "AND valid_from <= ? AND valid_to > ?", (t, t)):
            self.store_elements[mrid] = (type_, parent, orjson.loads(attrs))

    # -- the file ------------------------------------------------------------------------------
    def read(self, pending, creates) -> None:
        """The pass over the file: new consumers' creates to ``creates``, changed rows to ``pending``."""
        with open(self.path, "rb") as f:
            header = f.readline(MAX_LINE_BYTES + 1)
            try:
                names = next(csv.reader([header.decode("utf-8-sig").rstrip("\r\n")]))
            except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
                raise SnapshotError(f"line 1: the header cannot be read ({exc})") from exc
            missing = [c for c in SNAPSHOT_COLUMNS if c not in names]
            if missing:
                raise SnapshotError(f"line 1: the header lacks {', '.join(missing)}")
            index = [names.index(c) for c in SNAPSHOT_COLUMNS]
            index = None if index == list(range(len(SNAPSHOT_COLUMNS))) else index  # the usual order
            width = len(names)
            line_no = 1
            while True:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                line_no += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                        raw = f.readline(MAX_LINE_BYTES + 1)
                    self._reject(line_no, f"longer than {MAX_LINE_BYTES:,} bytes", None)
                    continue
                if not raw.strip():
                    continue
                self.diff.rows += 1
                self._row(line_no, raw, index, width, pending, creates)

    def _reject(self, line_no: int, reason: str, consumer: str | None) -> None:
        d = self.diff
        d.rejected += 1
        if len(d.rejected_lines) < KEEP_REJECTED:
            d.rejected_lines.append((line_no, reason))
        if consumer and len(consumer) <= MRID_MAX and consumer in self.state:
            self.protected.add(consumer)  # kept as the store has it: a bad row never retires

    def _row(self, line_no: int, raw: bytes, index: list[int] | None, width: int, pending, creates) -> None:
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            first = raw.decode("utf-8", "replace").split(",", 1)[0].strip()
            self._reject(line_no, f"not UTF-8 (byte {exc.start})", first if "\ufffd" not in first else None)
            return
        if '"' in text:
            try:
                cells = next(csv.reader([text]))
            except (csv.Error, StopIteration) as exc:
                self._reject(line_no, f"not a CSV row ({exc})", None)
                return
        else:
            cells = text.split(",")  # the common row: no quoting, no need for the csv module
        if len(cells) != width:
            self._reject(line_no, f"{len(cells)} fields, the header has {width}", cells[0].strip() if cells else None)
            return
        if index is not None:
            cells = [cells[i] for i in index]
        if " " in text or "\t" in text:
            cells = [c.strip() for c in cells]
        (consumer, consumer_no, meter, category, circle, division, subdivision, dt_, kva, dt_meter, feeder, kv,
         head, substation) = cells
        known_dt, known_feeder = self.dts.get(dt_), self.feeders.get(feeder)
        before = self.state.get(consumer)
        # the common row passes this one expression; anything else goes to _problem, which says
        # what is wrong (or finds nothing: a long attribute within its limit)
        if not (consumer and meter and dt_ and feeder and substation and max(map(len, cells)) <= MRID_MAX
                and (before is None or before >= 0) and meter not in self.meters
                and (known_dt is None or (known_dt[0] == feeder and known_dt[1] == kva and known_dt[2] == dt_meter))
                and (known_feeder is None or (known_feeder[0] == substation and known_feeder[1] == kv
                                              and known_feeder[2] == head))):
            problem = self._problem(dict(zip(SNAPSHOT_COLUMNS, cells)), cells, line_no)
            if problem:
                self._reject(line_no, problem, consumer)
                return
        self.diff.accepted += 1
        self.meters[meter] = line_no
        if known_dt is None:
            self.dts[dt_] = (feeder, kva, dt_meter, line_no)
        if known_feeder is None:
            self.feeders[feeder] = (substation, kv, head, line_no)
        if substation not in self.substations:
            self.substations[substation] = line_no
        self.state[consumer] = -line_no
        if before is None:  # spooled as [line, consumer, DT, *CONSUMER_FIELDS]; changes() makes the create
            self.creates += 1
            creates.write(orjson.dumps([line_no, consumer, dt_, consumer_no, meter, category, circle, division,
                                        subdivision]) + b"\n")
        elif hash((consumer_no, meter, category, circle, division, subdivision, dt_)) & _MASK != before:
            pending.write(orjson.dumps([line_no, dict(zip(SNAPSHOT_COLUMNS, cells))]) + b"\n")

    def _problem(self, row: dict, cells: list[str], line_no: int) -> str | None:
        for name in REQUIRED:
            if not row[name]:
                return f"{name} is blank"
        for name, value in row.items() if max(map(len, cells)) > MRID_MAX else ():
            limit = MRID_MAX if name in ("consumer", "dt", "feeder", "substation") else ATTRIBUTE_VALUE_MAX
            if len(value) > limit:
                return f"{name} is {len(value):,} characters long (at most {limit})"
        before = self.state.get(row["consumer"])
        if before is not None and before < 0:
            return f"consumer {row['consumer']} is on line {-before} already"
        holder = self.meters.get(row["meter"])
        if holder is not None:
            return f"meter {row['meter']} is on line {holder} already, for another consumer"
        dt_ = self.dts.get(row["dt"])
        if dt_ and dt_[:3] != (row["feeder"], row["dt_rating_kva"], row["dt_meter"]):
            return (f"DT {row['dt']} is given as feeder {dt_[0]}, {dt_[1]} kVA, meter {dt_[2]} on line {dt_[3]}; "
                    f"here feeder {row['feeder']}, {row['dt_rating_kva']} kVA, meter {row['dt_meter']}")
        feeder = self.feeders.get(row["feeder"])
        if feeder and feeder[:3] != (row["substation"], row["feeder_kv"], row["feeder_head_meter"]):
            return (f"feeder {row['feeder']} is given as substation {feeder[0]}, {feeder[1]} kV, head meter "
                    f"{feeder[2]} on line {feeder[3]}; here {row['substation']}, {row['feeder_kv']} kV, "
                    f"{row['feeder_head_meter']}")
        return None

    # -- after the pass ------------------------------------------------------------------------
    def structure_changes(self) -> list[dict]:
        out: list[dict] = []
        for ss, line_no in self.substations.items():
            self._element(out, "substation", ss, None, {}, line_no)
        for fdr, (ss, kv, head, line_no) in self.feeders.items():
            self._element(out, "feeder", fdr, ss, {"voltage_kv": kv, "head_meter": head}, line_no)
        for dt_, (fdr, kva, meter, line_no) in self.dts.items():
            self._element(out, "dt", dt_, fdr, {"rating_kva": kva, "dt_meter": meter}, line_no)
        return out

    def _element(self, out: list, type_: str, mrid: str, parent: str | None, text: dict, line_no: int) -> None:
        known = self.store_elements.get(mrid)
        if known is None:
            attrs = {k: v for k, v in _attrs(text.items()).items() if v is not None}
            change = {"kind": "create", "type": type_, "mrid": mrid, "attributes": attrs, "_id": f"{line_no}-{type_}"}
            if parent:
                change["parent"] = parent
            self._count(out, change)
            return
        _, old_parent, old_attrs = known
        differ = [(k, v) for k, v in text.items() if cell_text(old_attrs.get(k)) != v]
        if old_parent == parent and not differ:
            return
        change = {"kind": "move" if old_parent != parent else "update", "type": type_, "mrid": mrid,
                  "attributes": _attrs(differ), "_id": f"{line_no}-{type_}"}
        if old_parent != parent:
            change["parent"] = parent
        self._count(out, change)

    def _count(self, out: list | None, change: dict) -> None:
        key = f"{change['kind']} {change['type']}"
        self.diff.counts[key] = self.diff.counts.get(key, 0) + 1
        if out is not None:
            out.append(change)

    def consumer_changes(self, pending: Path, spool) -> None:
        """The changed rows, spooled by the pass, compared with the store's rows a chunk at a time:
        an update of the attributes that differ, a move if the DT differs (with them)."""
        batch: list = []
        with open(pending, "rb") as f:
            for line in f:
                batch.append(orjson.loads(line))
                if len(batch) == CHUNK:
                    self._consumer_batch(batch, spool)
                    batch = []
        if batch:
            self._consumer_batch(batch, spool)

    def _consumer_batch(self, batch: list, spool) -> None:
        changed = [row["consumer"] for _, row in batch]
        current = {}
        if changed:
            t = self.t
            for mrid, parent, attrs in self.store.db.rows(
                    f"SELECT mrid, parent, attributes FROM elements WHERE mrid IN ({self.store.dialect.values_of}) "
                    "AND valid_from <= ? AND valid_to > ?", (orjson.dumps(changed).decode(), t, t)):
                current[mrid] = (parent, orjson.loads(attrs))
        for line_no, row in batch:
            parent, attrs = current[row["consumer"]]
            differ = [(k, row[k]) for k in CONSUMER_FIELDS if cell_text(attrs.get(k)) != row[k]]
            if not differ and parent == row["dt"]:
                continue  # the same row, spelled differently (e.g. 11.0 for 11)
            change = {"kind": "move" if parent != row["dt"] else "update", "type": "consumer",
                      "mrid": row["consumer"], "attributes": _attrs(differ)}
            if parent != row["dt"]:
                change["parent"] = row["dt"]
            change["_id"] = str(line_no)
            self._count(None, change)
            spool.write(orjson.dumps(change) + b"\n")

    def retirements(self) -> None:
        d = self.diff
        d.consumer_retires = sorted(c for c, v in self.state.items() if v >= 0 and c not in self.protected)
        d.counts["retire consumer"] = len(d.consumer_retires) if d.consumer_retires else 0
        if not d.consumer_retires:
            d.counts.pop("retire consumer")
        # an element is retired only if the snapshot emptied it: a DT that had consumers in the store
        # and has none in the file; a feeder all of whose DTs go; a substation all of whose feeders go
        gone_dts = [m for m in sorted(self.store_dts_used) if m not in self.dts and m in self.store_elements]
        children: dict[str, list[str]] = {}
        for mrid, (type_, parent, _) in self.store_elements.items():
            if parent:
                children.setdefault(parent, []).append(mrid)
        gone = set(gone_dts)
        gone_feeders = [f for f, (type_, _, _) in sorted(self.store_elements.items()) if type_ == "feeder"
                        and f not in self.feeders and children.get(f) and all(c in gone for c in children[f])]
        gone.update(gone_feeders)
        gone_ss = [s for s, (type_, _, _) in sorted(self.store_elements.items()) if type_ == "substation"
                   and s not in self.substations and children.get(s) and all(c in gone for c in children[s])]
        for type_, mrids in (("dt", gone_dts), ("feeder", gone_feeders), ("substation", gone_ss)):
            for mrid in mrids:
                d.element_retires.append((type_, mrid))
                self._count(None, {"kind": "retire", "type": type_})


def _temporary(suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="gridbus-snapshot-", suffix=suffix)
    os.close(fd)
    return Path(name)


def diff_snapshot(store: NetworkStore, path: str | os.PathLike, at: float) -> SnapshotDiff:
    """Read the snapshot at ``path`` against the store as of ``at`` (epoch seconds).  Raises
    SnapshotError if the file as a whole is not a snapshot; bad rows are counted and listed."""
    path = Path(path)
    diff = SnapshotDiff(checksum=checksum_of(path), effective_from=at)
    reader = _Reader(store, path, at, diff)
    reader.load_store()
    pending = _temporary(".rows")
    try:
        diff.spools = [_temporary(".updates"), _temporary(".creates")]
        with open(pending, "wb") as rows, open(diff.spools[1], "wb") as creates:
            reader.read(rows, creates)
        with open(diff.spools[0], "wb") as updates:
            reader.consumer_changes(pending, updates)
    except BaseException:
        diff.close()
        raise
    finally:
        pending.unlink(missing_ok=True)
    if reader.creates:
        diff.counts["create consumer"] = reader.creates
    diff.structure = reader.structure_changes()
    reader.retirements()
    diff.first_sequence = store.last_sequence() + 1
    return diff
