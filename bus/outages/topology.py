"""What the outage engine needs from the network model, behind one small interface.

* ``locate(meter, at)`` → ``Place``: is the serial a consumer meter, a DT meter or a
  feeder-head meter at ``at``, and under which DT and feeder (None: unknown then);
* ``dt(mrid, at)`` → ``DtInfo``: name, feeder, DT meter, its consumer meters (their count is
  what a DT share is counted against);
* ``feeder(mrid, at)`` → ``FeederInfo``: name, head meter, its DTs;
* ``prefetch(meters, t_min, t_max)``: a hint, before a batch, to look up many meters at once;
* ``feeders_over(meters, t_from, t_to)`` → every feeder each meter was under at some time in the
  range (the router sends a first breath to each of their partitions: a DT switched onto another
  feeder to restore it breathes on the new feeder, while its outage is on the old one).

Two implementations: ``MemoryTopology`` (tests and the benchmark: a fixed tree, e.g. from
``NetworkModel.feeder_tree()``) and ``StoreTopology`` over the network store, which answers
``locate`` from bulk queries and caches each row with its validity interval, so a cached answer
is exact for any instant; a DT's consumer meters are cached per ``members_bucket_s`` (default
300 s) of event time, so a share is counted against the DT as it was at the start of that bucket.
The network changes while the correlator runs (GIS pushes, a DT moved onto another feeder, meters
installed), so every cache is dropped when the network store has been written since it was
filled, which is asked at most every ``check_s`` (default 1 s) of wall clock (SQLite's
``data_version``; on PostgreSQL the store's ``store_version`` row): an answer, a "no such meter"
included, is never older than the store's last write by more than that.  (Dropping them every
10 s instead cost a fifth of the correlator's time in a storm: 100,000 meters loaded again and
again.)
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Place", "DtInfo", "FeederInfo", "Topology", "MemoryTopology", "StoreTopology"]

CONSUMER, DT, FEEDER = "consumer", "dt", "feeder"


@dataclass(frozen=True, slots=True)
class Place:
    kind: str            # consumer | dt (a DT meter) | feeder (a feeder-head meter)
    dt: str | None       # None for a feeder-head meter
    feeder: str


@dataclass(frozen=True, slots=True)
class DtInfo:
    mrid: str
    name: str
    feeder: str
    dt_meter: str | None
    meters: tuple[str, ...]   # consumer meters, sorted


@dataclass(frozen=True, slots=True)
class FeederInfo:
    mrid: str
    name: str
    head_meter: str | None
    dts: tuple[str, ...]      # sorted


class Topology(Protocol):
    def locate(self, meter: str, at: float) -> Place | None: ...

    def dt(self, mrid: str, at: float) -> DtInfo | None: ...

    def feeder(self, mrid: str, at: float) -> FeederInfo | None: ...

    def prefetch(self, meters: Iterable[str], t_min: float, t_max: float) -> None: ...

    def feeders_over(self, meters: Iterable[str], t_from: float, t_to: float) -> dict[str, set[str]]: ...


class MemoryTopology:
    """A fixed network: ``{feeder: {dt: [consumer meters]}}`` plus DT and head meters and names.
    ``at`` is ignored (the tree does not change)."""

    def __init__(self, tree: dict[str, dict[str, list[str]]], dt_meters: dict[str, str] | None = None,
                 head_meters: dict[str, str] | None = None, names: dict[str, str] | None = None):
        names = names or {}
        dt_meters, head_meters = dt_meters or {}, head_meters or {}
        self.places: dict[str, Place] = {}
        self.dts: dict[str, DtInfo] = {}
        self.feeders: dict[str, FeederInfo] = {}
        for feeder, dts in tree.items():
            self.feeders[feeder] = FeederInfo(feeder, names.get(feeder, feeder), head_meters.get(feeder),
                                              tuple(sorted(dts)))
            if head_meters.get(feeder):
                self.places[head_meters[feeder]] = Place(FEEDER, None, feeder)
            for dt, meters in dts.items():
                self.dts[dt] = DtInfo(dt, names.get(dt, dt), feeder, dt_meters.get(dt), tuple(sorted(meters)))
                if dt_meters.get(dt):
                    self.places[dt_meters[dt]] = Place(DT, dt, feeder)
                for m in meters:
                    self.places[m] = Place(CONSUMER, dt, feeder)

    @classmethod
    def from_model(cls, model: Any) -> "MemoryTopology":
        """The network of a ``simulators.network.NetworkModel`` as it is now."""
        tree = model.feeder_tree()
        dt_meters, head_meters, names = {}, {}, {}
        for f in range(model.feeders):
            head_meters[model.feeder_id(f)] = model.feeder_head_meter(f)
            names[model.feeder_id(f)] = model.feeder_name(f)
        for d in range(model.dts):
            dt_meters[model.dt_id(d)] = model.dt_meter(d)
            names[model.dt_id(d)] = model.dt_name(d)
        return cls(tree, dt_meters, head_meters, names)

    def locate(self, meter: str, at: float) -> Place | None:
        return self.places.get(meter)

    def dt(self, mrid: str, at: float) -> DtInfo | None:
        return self.dts.get(mrid)

    def feeder(self, mrid: str, at: float) -> FeederInfo | None:
        return self.feeders.get(mrid)

    def prefetch(self, meters: Iterable[str], t_min: float, t_max: float) -> None:
        return None

    def feeders_over(self, meters: Iterable[str], t_from: float, t_to: float) -> dict[str, set[str]]:
        return {m: {p.feeder} for m in meters if (p := self.places.get(m)) is not None}


class StoreTopology:
    """The network store (bus/network/store.py) as the engine's topology: bulk queries on its
    ``elements`` table (bus/network/schema.py), answers cached.

    * meter rows (consumer, DT, feeder-head meter) are read for a whole batch of meters over a
      time range and kept with their validity ``[valid_from, valid_to)``: exact for any instant
      inside the range queried (``span_s`` either side of a single lookup, default 1 h);
    * DT and feeder rows likewise;
    * a DT's consumer meters and a feeder's DTs: one query per element per ``members_bucket_s``.
    Caches are cleared when they pass ``max_cached`` entries (memory stays bounded)."""

    def __init__(self, store: Any, span_s: float = 3600.0, members_bucket_s: float = 300.0,
                 max_cached: int = 2_000_000, check_s: float = 1.0, clock=time.monotonic):
        self.store = store
        self.db = store.db
        self.values_of = store.dialect.values_of
        self.span_s, self.bucket_s, self.max_cached = span_s, members_bucket_s, max_cached
        self.check_s, self.clock = check_s, clock
        self._checked: float | None = None  # when the store's version was last asked
        self._version: int | None = None    # the store's version the caches hold
        # meter -> (covered_from, covered_to, [(valid_from, valid_to, type, mrid, parent)])
        self._meters: dict[str, tuple[float, float, list[tuple]]] = {}
        # element mrid -> (covered_from, covered_to, [(valid_from, valid_to, parent, name, attributes)])
        self._elements: dict[str, tuple[float, float, list[tuple]]] = {}
        self._members: dict[tuple[str, int], tuple[str, ...]] = {}
        self._places: dict[str, tuple[float, float, Place | None]] = {}
        self.queries = 0

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        self.queries += 1
        return self.db.rows(sql, args)

    def _trim(self) -> None:
        for cache in (self._meters, self._elements, self._members):
            if len(cache) > self.max_cached:
                cache.clear()

    def _refresh(self) -> None:
        """Drop every cache if the network store was written since they were filled (asked at
        most every ``check_s``; before each batch)."""
        now = self.clock()
        if self._checked is not None and now - self._checked < self.check_s:
            return
        self._checked = now
        version = self.db.data_version()
        if version != self._version:
            if self._version is not None:
                for cache in (self._meters, self._elements, self._members, self._places):
                    cache.clear()
            self._version = version

    # -- meters ---------------------------------------------------------------------------------
    def feeders_over(self, meters: Iterable[str], t_from: float, t_to: float) -> dict[str, set[str]]:
        """Every feeder each meter was under at some time in [t_from, t_to] (two queries; a little
        more than exact: a DT's feeders over the whole range, whichever part the meter was under it)."""
        meters = sorted(set(meters))
        out: dict[str, set[str]] = {m: set() for m in meters}
        dt_of: dict[str, set[str]] = {}
        for i in range(0, len(meters), 20_000):
            for meter, type_, mrid, parent in self._rows(
                    f"SELECT meter, type, mrid, parent FROM elements WHERE meter IN ({self.values_of}) "
                    f"AND valid_from <= ? AND valid_to > ?", (json.dumps(meters[i:i + 20_000]), t_to, t_from)):
                if type_ == "consumer" and parent:
                    dt_of.setdefault(parent, set()).add(meter)
                elif type_ == "dt" and parent:
                    out[meter].add(parent)
                elif type_ == "feeder":
                    out[meter].add(mrid)
        dts = sorted(dt_of)
        for i in range(0, len(dts), 20_000):
            for mrid, parent in self._rows(
                    f"SELECT mrid, parent FROM elements WHERE mrid IN ({self.values_of}) "
                    f"AND valid_from <= ? AND valid_to > ?", (json.dumps(dts[i:i + 20_000]), t_to, t_from)):
                if parent:
                    for meter in dt_of[mrid]:
                        out[meter].add(parent)
        return out

    def prefetch(self, meters: Iterable[str], t_min: float, t_max: float) -> None:
        self._refresh()
        wanted = []
        for m in set(meters):
            c = self._meters.get(m)
            if c is None or not (c[0] <= t_min and t_max < c[1]):
                wanted.append(m)
        if wanted:
            self._load_meters(wanted, t_min - self.span_s, t_max + self.span_s)
        # the DTs (and feeders) those meters hang under, in one query too
        parents = {row[4] if row[2] == "consumer" else row[3] if row[2] == "dt" else None
                   for m in set(meters) for row in self._meters.get(m, (0, 0, ()))[2]}
        parents.discard(None)
        missing = [p for p in parents if not ((c := self._elements.get(p)) and c[0] <= t_min and t_max < c[1])]
        if missing:
            self._load_elements(missing, t_min - self.span_s, t_max + self.span_s)

    def _load_elements(self, mrids: list[str], t_from: float, t_to: float) -> None:
        self._load(self._elements, "mrid", "parent, name, attributes", mrids, t_from, t_to)

    def _load_meters(self, meters: list[str], t_from: float, t_to: float) -> None:
        self._load(self._meters, "meter", "type, mrid, parent", meters, t_from, t_to)

    def _load(self, cache: dict, key: str, columns: str, keys: list[str], t_from: float, t_to: float) -> None:
        """Every row of ``keys`` (by ``key``: mrid or meter) valid at some time in [t_from, t_to),
        as (valid_from, valid_to, *columns), cached with the span they answer for."""
        self._trim()
        found: dict[str, list[tuple]] = {k: [] for k in keys}
        for i in range(0, len(keys), 20_000):
            chunk = keys[i:i + 20_000]
            for row in self._rows(f"SELECT {key}, valid_from, valid_to, {columns} FROM elements "
                                  f"WHERE {key} IN ({self.values_of}) AND valid_from <= ? AND valid_to > ?",
                                  (json.dumps(chunk), t_to, t_from)):
                found[row[0]].append(row[1:])
        for k, rows in found.items():
            cache[k] = (t_from, t_to, rows)

    def _meter_row(self, meter: str, at: float) -> tuple | None:
        c = self._meters.get(meter)
        if c is None or not (c[0] <= at < c[1]):
            self._load_meters([meter], at - self.span_s, at + self.span_s)
            c = self._meters[meter]
        for row in c[2]:
            if row[0] <= at < row[1]:
                return row
        return None

    # -- elements -------------------------------------------------------------------------------
    def _element_row(self, mrid: str, at: float) -> tuple | None:
        c = self._elements.get(mrid)
        if c is None or not (c[0] <= at < c[1]):
            self._load_elements([mrid], at - self.span_s, at + self.span_s)
            c = self._elements[mrid]
        for row in c[2]:
            if row[0] <= at < row[1]:
                return row
        return None

    def _children(self, mrid: str, at: float, column: str) -> tuple[str, ...]:
        key = (mrid + "\x00" + column, int(at // self.bucket_s))
        found = self._members.get(key)
        if found is None:
            t = key[1] * self.bucket_s
            found = tuple(sorted(r[0] for r in self._rows(
                f"SELECT {column} FROM elements WHERE parent = ? AND valid_from <= ? AND valid_to > ? "
                f"AND {column} IS NOT NULL", (mrid, t, t))))
            self._members[key] = found
        return found

    # -- the interface --------------------------------------------------------------------------
    def locate(self, meter: str, at: float) -> Place | None:
        # the answer is kept with the instants it holds for (the meter's row and its DT's row
        # both valid), so a storm's lookups are one dict access each
        found = self._places.get(meter)
        if found is not None and found[0] <= at < found[1]:
            return found[2]
        place, valid_from, valid_to = self._locate(meter, at)
        if len(self._places) > self.max_cached:
            self._places.clear()
        self._places[meter] = (valid_from, valid_to, place)
        return place

    def _locate(self, meter: str, at: float) -> tuple[Place | None, float, float]:
        row = self._meter_row(meter, at)
        c = self._meters[meter]
        if row is None:                        # unknown then: for as long as nothing covers it
            starts = [r[0] for r in c[2] if r[0] > at]
            ends = [r[1] for r in c[2] if r[1] <= at]
            return None, max([c[0], *ends]), min([c[1], *starts])
        valid_from, valid_to, type_, mrid, parent = row
        valid_from, valid_to = max(valid_from, c[0]), min(valid_to, c[1])
        if type_ == "consumer":
            dt_row = self._element_row(parent, at)
            if not dt_row or not dt_row[2]:
                return None, at, at + 1e-9
            e = self._elements[parent]
            return (Place(CONSUMER, parent, dt_row[2]), max(valid_from, dt_row[0], e[0]),
                    min(valid_to, dt_row[1], e[1]))
        if type_ == "dt":
            return (Place(DT, mrid, parent) if parent else None), valid_from, valid_to
        if type_ == "feeder":
            return Place(FEEDER, None, mrid), valid_from, valid_to
        return None, valid_from, valid_to

    def dt(self, mrid: str, at: float) -> DtInfo | None:
        row = self._element_row(mrid, at)
        if row is None or not row[2]:
            return None
        attributes = json.loads(row[4]) if row[4] else {}
        return DtInfo(mrid, row[3] or mrid, row[2], attributes.get("dt_meter"), self._children(mrid, at, "meter"))

    def feeder(self, mrid: str, at: float) -> FeederInfo | None:
        row = self._element_row(mrid, at)
        if row is None:
            return None
        attributes = json.loads(row[4]) if row[4] else {}
        return FeederInfo(mrid, row[3] or mrid, attributes.get("head_meter"), self._children(mrid, at, "mrid"))
