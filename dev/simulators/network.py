"""A generated distribution network for the stand-ins: substation → feeder → DT → consumer.

One deterministic model (``NetworkModel.generate(consumers, seed)``) feeds the GIS
stand-in, the HES alarm generator and the tests, so what the bus computes can be
checked against ground truth (``where(meter, at)``).

Shape (1,000,000 consumers ≈ 10,000 DTs, 500 feeders, 50 substations):
- substations 33/11 kV ``SS-001``; feeders 11 kV ``FDR-0001`` (about ``dts_per_feeder``
  DTs each, ``feeders_per_substation`` per substation), feeder-head meter ``FHM000001``;
- DTs ``DT-000001`` of 25, 63, 100, 160, 200 or 250 kVA with 20–200 consumers, roughly
  proportional to the rating; DT meter ``DTM00000001``;
- consumers ``CON-00000001``, one consumer meter each ``UPM%08d`` numbered in a row from
  ``first_meter`` (odd serials on HES-A, even on HES-B: ``hes_of``), consumer number
  ``SSSSNNNNNNNN`` (subdivision, consumer), category mostly domestic;
- admin codes by geography: a subdivision (``C01D2S1``) holds two substations and all
  their feeders, a division three subdivisions, a circle four divisions.

Changes are the GIS contract (docs/network-formats.md): ``{"changeId": "gis-000123",
"sequence": 123, "effectiveFrom": IST instant, "kind": create|update|move|retire, "type":
substation|feeder|dt|consumer, "mrid", "parent" (create and move, not for a substation),
"name" (create), "attributes"}``; an ``update`` carries only the attributes it changes.
Sequences come from one counter and only grow; the generated network is sequences
1..N at ``start`` (``creates()``, parents first), every stream after it takes the next
ones, at instants that never go back (default: an hour after the last change).

Compact: per-element arrays and a byte per consumer category; only changed elements
get history entries, so 1,000,000 consumers take about 20 MB and a few seconds.
"""
from __future__ import annotations

import array
import bisect
import copy
import datetime as dt
import math
import os
import random
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
DEFAULT_START = "2026-11-01T00:00:00+05:30"
RATINGS_KVA = (25, 63, 100, 160, 200, 250)
RATING_WEIGHTS = (0.14, 0.24, 0.30, 0.16, 0.10, 0.06)
CONSUMERS_PER_KVA = 0.95                  # a 100 kVA DT feeds about 95 consumers
MIN_CONSUMERS, MAX_CONSUMERS = 20, 200    # per DT
CATEGORIES = ("domestic", "commercial", "industrial", "agricultural")
CATEGORY_WEIGHTS = (0.82, 0.12, 0.03, 0.03)
SNAPSHOT_HEADER = ("consumer", "consumer_no", "meter", "category", "circle", "division", "subdivision",
                   "dt", "dt_rating_kva", "dt_meter", "feeder", "feeder_kv", "feeder_head_meter", "substation")
STREAMS = ("new-connections", "meter-replacements", "dt-moves", "retirements", "drift")
PLACES = ("Rampur", "Sitapur", "Bilaspur", "Karnal", "Hathras", "Deoria", "Ballia", "Unnao", "Etawah",
          "Banda", "Gonda", "Basti", "Mau", "Orai", "Auraiya", "Jhansi", "Lalitpur", "Mahoba", "Kasganj")
_PREFIX = {"SS": "substation", "FDR": "feeder", "DT": "dt", "CON": "consumer"}


def ist(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), IST).isoformat()


def epoch_of(at: str | dt.datetime | float) -> int:
    """Epoch seconds of an instant; a time without offset is IST."""
    if isinstance(at, (int, float)):
        return int(at)
    moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    return int((moment if moment.tzinfo else moment.replace(tzinfo=IST)).timestamp())


def hes_of(meter: str) -> str:
    """The HES serving a meter, as the tests' meter assignment: odd serial HES-A, even HES-B."""
    digits = "".join(ch for ch in meter if ch.isdigit())
    return "hes-a" if digits and int(digits) % 2 else "hes-b"


def change_document(changes: list[dict[str, Any]], message_id: str | None = None,
                    timestamp: str | None = None) -> dict[str, Any]:
    """The IEC 61968-100 style envelope around ``changes`` (Verb changed, Noun NetworkChanges).
    Deterministic by default: the id names the sequences, the time is the last effectiveFrom."""
    first, last = (changes[0]["sequence"], changes[-1]["sequence"]) if changes else (0, 0)
    return {"Header": {"Verb": "changed", "Noun": "NetworkChanges",
                       "MessageID": message_id or f"gis-{first:08d}-{last:08d}",
                       "Timestamp": timestamp or (changes[-1]["effectiveFrom"] if changes else ist(0))},
            "Payload": {"changes": changes}}


def documents(changes: Iterable[dict[str, Any]], batch: int = 5000) -> Iterator[dict[str, Any]]:
    """``changes`` cut into change documents of at most ``batch`` changes, in order."""
    chunk: list[dict[str, Any]] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) >= batch:
            yield change_document(chunk)
            chunk = []
    if chunk:
        yield change_document(chunk)


def write_then_rename(path: str | os.PathLike, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``path.part`` then rename: a poller never sees half a file. Bytes written."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    size = 0
    with open(part, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            size += len(chunk)
    os.replace(part, path)
    return size


def write_document(path: str | os.PathLike, changes: Iterable[dict[str, Any]]) -> int:
    """Stream one change document (e.g. the whole network's creates) to ``path``; changes written."""
    count = [0]
    header = orjson.dumps({"Verb": "changed", "Noun": "NetworkChanges",
                           "MessageID": f"gis-full-{Path(path).stem}", "Timestamp": ist(0)})

    def chunks() -> Iterator[bytes]:
        yield b'{"Header":' + header + b',"Payload":{"changes":['
        for i, change in enumerate(changes):
            yield (b"," if i else b"") + orjson.dumps(change)
            count[0] += 1
        yield b"]}}\n"
    write_then_rename(path, chunks())
    return count[0]


def _first(entry: tuple) -> Any:
    return entry[0]


class NetworkModel:
    """The generated network, its change history and its ground truth.  Build with ``generate``."""

    def __init__(self) -> None:          # filled by generate()
        self.seed = 1
        self.first_meter = 1
        self.start = 0
        self.clock = 0                   # the latest effectiveFrom so far
        self.sequence = 0                # the last sequence used
        self.rng = random.Random()
        self.sd_codes: list[tuple[str, str, str]] = []          # per subdivision: circle, division, subdivision
        self.substation_sd = array.array("i")
        self.feeder_substation = array.array("i")
        self.feeder_first_dt = array.array("i")
        self.dt_rating = array.array("i")
        self.dt_feeder = array.array("i")                        # now
        self.dt_feeder0 = array.array("i")                       # as generated
        self.dt_first = array.array("i")                         # first consumer as generated
        self.base_consumers = 0
        self.consumer_dt = array.array("i")                      # now
        self.consumer_sd = array.array("i")
        self.category = bytearray()                              # now
        self.category0 = b""                                     # as generated
        self.meter_now: dict[int, str] = {}                      # consumers not on their generated meter
        self.next_serial = 0
        self.joined: dict[int, dict[int, None]] = {}             # DT -> consumers that came later
        self.retired_dt: dict[int, int] = {}                     # DT -> retired at
        self.born: dict[int, int] = {}                           # consumers created after start
        self.died: dict[int, int] = {}                           # consumer -> retired at
        self.hist: dict[str, dict[int, list[tuple[int, Any]]]] = {"dt_feeder": {}, "consumer_dt": {},
                                                                  "meter": {}, "category": {}}
        self.meter_owner: dict[str, list[tuple[int, int]]] = {}  # later serials -> (from, consumer)

    # -- generation ------------------------------------------------------------------------
    @classmethod
    def generate(cls, consumers: int = 10_000, seed: int = 1, dts_per_feeder: int = 20,
                 feeders_per_substation: int = 10, first_meter: int = 1,
                 start: str | dt.datetime = DEFAULT_START) -> "NetworkModel":
        """About ``consumers / 100`` DTs, ``dts_per_feeder`` DTs per feeder and
        ``feeders_per_substation`` feeders per substation; exactly ``consumers`` consumers."""
        if consumers < MIN_CONSUMERS or min(dts_per_feeder, feeders_per_substation) < 1 or first_meter < 0:
            raise ValueError(f"a network needs >= {MIN_CONSUMERS} consumers, >= 1 DT per feeder and "
                             f"feeder per substation, first_meter >= 0")
        m = cls()
        m.seed, m.first_meter = seed, first_meter
        m.start = m.clock = epoch_of(start)
        rng = random.Random(seed)
        n_dts = min(max(round(consumers / 100), math.ceil(consumers / MAX_CONSUMERS)), consumers // MIN_CONSUMERS)
        ratings = rng.choices(RATINGS_KVA, RATING_WEIGHTS, k=n_dts)
        counts = [min(MAX_CONSUMERS, max(MIN_CONSUMERS, round(r * CONSUMERS_PER_KVA * rng.uniform(0.75, 1.25))))
                  for r in ratings]
        _fit(counts, consumers)
        # a DT whose count was pushed far from its rating gets the rating that fits it
        m.dt_rating = array.array("i", [r if 0.5 <= c / (r * CONSUMERS_PER_KVA) <= 2 else _rating_for(c)
                                        for r, c in zip(ratings, counts)])
        n_feeders = math.ceil(n_dts / dts_per_feeder)
        n_substations = math.ceil(n_feeders / feeders_per_substation)
        m.dt_feeder0 = array.array("i", (d * n_feeders // n_dts for d in range(n_dts)))
        m.dt_feeder = array.array("i", m.dt_feeder0)
        m.feeder_first_dt = array.array("i", (bisect.bisect_left(m.dt_feeder0, f) for f in range(n_feeders)))
        m.feeder_substation = array.array("i", (f * n_substations // n_feeders for f in range(n_feeders)))
        m.substation_sd = array.array("i", (s // 2 for s in range(n_substations)))
        for sd in range(m.substation_sd[-1] + 1):
            circle, division = sd // 12, sd // 3
            code = f"C{circle + 1:02d}"
            m.sd_codes.append((code, f"{code}D{division % 4 + 1}", f"{code}D{division % 4 + 1}S{sd % 3 + 1}"))
        m.dt_first = array.array("i", [0]) * n_dts
        consumer_dt, consumer_sd = array.array("i"), array.array("i")
        total = 0
        for d, count in enumerate(counts):
            m.dt_first[d] = total
            total += count
            consumer_dt.extend(array.array("i", [d]) * count)
            consumer_sd.extend(array.array("i", [m.substation_sd[m.feeder_substation[m.dt_feeder0[d]]]]) * count)
        m.consumer_dt, m.consumer_sd = consumer_dt, consumer_sd
        m.category = bytearray(rng.choices(range(len(CATEGORIES)), CATEGORY_WEIGHTS, k=consumers))
        m.category0 = bytes(m.category)
        m.base_consumers = consumers
        m.next_serial = first_meter + consumers
        m.sequence = n_substations + n_feeders + n_dts + consumers
        m.rng = random.Random(seed * 1_000_003 + 17)     # the change streams' own generator
        return m

    def copy(self) -> "NetworkModel":
        """An independent copy (e.g. to derive a changed snapshot without touching this one)."""
        return copy.deepcopy(self)

    # -- names -----------------------------------------------------------------------------
    @property
    def substations(self) -> int:
        return len(self.substation_sd)

    @property
    def feeders(self) -> int:
        return len(self.feeder_substation)

    @property
    def dts(self) -> int:
        return len(self.dt_rating)

    def __len__(self) -> int:
        """Consumers in service now."""
        return len(self.consumer_dt) - len(self.died)

    @staticmethod
    def substation_id(s: int) -> str:
        return f"SS-{s + 1:03d}"

    @staticmethod
    def feeder_id(f: int) -> str:
        return f"FDR-{f + 1:04d}"

    @staticmethod
    def dt_id(d: int) -> str:
        return f"DT-{d + 1:06d}"

    @staticmethod
    def consumer_id(c: int) -> str:
        return f"CON-{c + 1:08d}"

    @staticmethod
    def index_of(mrid: str) -> tuple[str, int]:
        """("dt", 4) for "DT-000005"; KeyError for an mRID this generator never makes."""
        prefix, _, number = mrid.partition("-")
        if prefix not in _PREFIX or not number.isdigit() or int(number) < 1:
            raise KeyError(f"not an mRID of the generated network: {mrid!r}")
        return _PREFIX[prefix], int(number) - 1

    def substation_name(self, s: int) -> str:
        lap = s // len(PLACES)
        return PLACES[s % len(PLACES)] + (f"-{lap + 1}" if lap else "") + " 33/11 kV"

    def feeder_name(self, f: int) -> str:
        s = self.feeder_substation[f]
        first = bisect.bisect_left(self.feeder_substation, s)
        return f"{self.substation_name(s).split(' ')[0]} 11 kV F{f - first + 1}"

    def dt_name(self, d: int) -> str:
        f = self.dt_feeder0[d]
        return f"{self.feeder_name(f)}/DT{d - self.feeder_first_dt[f] + 1:02d}"

    def feeder_head_meter(self, f: int) -> str:
        return f"FHM{f + 1:06d}"

    def dt_meter(self, d: int) -> str:
        return f"DTM{d + 1:08d}"

    def consumer_no(self, c: int) -> str:
        return f"{self.consumer_sd[c] + 1:04d}{c + 1:08d}"

    def meter_of(self, c: int) -> str:
        return self.meter_now.get(c) or f"UPM{self.first_meter + c:08d}"

    def admin_codes(self, c: int) -> tuple[str, str, str]:
        return self.sd_codes[self.consumer_sd[c]]

    # -- the current state -------------------------------------------------------------------
    def in_service(self, c: int) -> bool:
        return c not in self.died

    def consumers_of_dt(self, d: int) -> list[int]:
        """Consumers under DT ``d`` now, generated ones first, then those that came later."""
        first = self.dt_first[d]
        end = self.dt_first[d + 1] if d + 1 < self.dts else self.base_consumers
        cdt, died = self.consumer_dt, self.died
        out = [c for c in range(first, end) if cdt[c] == d and c not in died]
        out += [c for c in self.joined.get(d, ()) if cdt[c] == d and c not in died]
        return out

    def dts_of_feeder(self, f: int) -> list[int]:
        return [d for d, fd in enumerate(self.dt_feeder) if fd == f and d not in self.retired_dt]

    def feeder_tree(self) -> dict[str, dict[str, list[str]]]:
        """{feeder mRID: {DT mRID: [consumer meters]}} now: the alarm generator's network."""
        tree: dict[str, dict[str, list[str]]] = {self.feeder_id(f): {} for f in range(self.feeders)}
        for d in range(self.dts):
            if d not in self.retired_dt:
                tree[self.feeder_id(self.dt_feeder[d])][self.dt_id(d)] = [
                    self.meter_of(c) for c in self.consumers_of_dt(d)]
        return tree

    def stats(self) -> dict[str, int]:
        return {"substations": self.substations, "feeders": self.feeders,
                "dts": self.dts - len(self.retired_dt), "consumers": len(self), "sequence": self.sequence}

    # -- the network as generated, as creates ----------------------------------------------
    def creates(self) -> Iterator[dict[str, Any]]:
        """Every element as generated, parents first, sequences 1..N, effective at ``start``."""
        at, seq = ist(self.start), 0
        for s in range(self.substations):
            seq += 1
            yield {"changeId": f"gis-{seq:06d}", "sequence": seq, "effectiveFrom": at, "kind": "create",
                   "type": "substation", "mrid": self.substation_id(s), "name": self.substation_name(s),
                   "attributes": {"voltage_kv": "33/11"}}
        for f in range(self.feeders):
            seq += 1
            yield {"changeId": f"gis-{seq:06d}", "sequence": seq, "effectiveFrom": at, "kind": "create",
                   "type": "feeder", "mrid": self.feeder_id(f), "parent": self.substation_id(self.feeder_substation[f]),
                   "name": self.feeder_name(f), "attributes": {"voltage_kv": 11, "head_meter": self.feeder_head_meter(f)}}
        for d in range(self.dts):
            seq += 1
            yield {"changeId": f"gis-{seq:06d}", "sequence": seq, "effectiveFrom": at, "kind": "create",
                   "type": "dt", "mrid": self.dt_id(d), "parent": self.feeder_id(self.dt_feeder0[d]),
                   "name": self.dt_name(d), "attributes": {"rating_kva": self.dt_rating[d], "dt_meter": self.dt_meter(d)}}
        for d in range(self.dts):
            parent = self.dt_id(d)
            end = self.dt_first[d + 1] if d + 1 < self.dts else self.base_consumers
            for c in range(self.dt_first[d], end):
                seq += 1
                yield self._consumer_create(c, parent, seq, at, self._generated_meter(c),
                                            CATEGORIES[self.category0[c]])

    def _generated_meter(self, c: int) -> str:
        return f"UPM{self.first_meter + c:08d}"

    def _consumer_create(self, c: int, parent: str, seq: int, at: str, meter: str, category: str) -> dict[str, Any]:
        circle, division, subdivision = self.admin_codes(c)
        no = self.consumer_no(c)
        return {"changeId": f"gis-{seq:06d}", "sequence": seq, "effectiveFrom": at, "kind": "create",
                "type": "consumer", "mrid": self.consumer_id(c), "parent": parent, "name": no,
                "attributes": {"consumer_no": no, "meter": meter, "category": category, "circle": circle,
                               "division": division, "subdivision": subdivision}}

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot_lines(self, fraction: float = 1.0) -> Iterator[str]:
        """One CSV line (no newline) per consumer in service now, in SNAPSHOT_HEADER order, DT by
        DT; ``fraction`` < 1 keeps only that share of the rows (a truncated export)."""
        keep = math.floor(len(self) * fraction)
        admin = [",".join(codes) for codes in self.sd_codes]
        category, consumer_sd, meter_now, first = self.category, self.consumer_sd, self.meter_now, self.first_meter
        names = [f",{cat}," for cat in CATEGORIES]
        for d in range(self.dts):
            if d in self.retired_dt:
                continue
            f = self.dt_feeder[d]
            tail = (f",{self.dt_id(d)},{self.dt_rating[d]},{self.dt_meter(d)},{self.feeder_id(f)},11,"
                    f"{self.feeder_head_meter(f)},{self.substation_id(self.feeder_substation[f])}")
            for c in self.consumers_of_dt(d):
                if keep <= 0:
                    return
                keep -= 1
                sd = consumer_sd[c]
                meter = meter_now.get(c) or f"UPM{first + c:08d}"
                yield f"CON-{c + 1:08d},{sd + 1:04d}{c + 1:08d},{meter}{names[category[c]]}{admin[sd]}{tail}"

    def snapshot_rows(self, fraction: float = 1.0) -> Iterator[dict[str, str]]:
        """The snapshot's rows as dicts of text, as a CSV reader gives them."""
        for line in self.snapshot_lines(fraction):
            yield dict(zip(SNAPSHOT_HEADER, line.split(",")))

    def write_snapshot(self, path: str | os.PathLike, fraction: float = 1.0) -> int:
        """The nightly consumer-indexing CSV, streamed, written then renamed; rows written."""
        rows = [0]

        def chunks() -> Iterator[bytes]:
            yield (",".join(SNAPSHOT_HEADER) + "\n").encode()
            lines: list[str] = []
            for line in self.snapshot_lines(fraction):
                lines.append(line)
                if len(lines) == 20_000:
                    rows[0] += len(lines)
                    lines.append("")
                    yield "\n".join(lines).encode()
                    lines = []
            rows[0] += len(lines)
            if lines:
                lines.append("")
                yield "\n".join(lines).encode()
        write_then_rename(path, chunks())
        return rows[0]

    def write_meter_assignment(self, path: str | os.PathLike) -> int:
        """``meter,hes`` for every consumer, DT and feeder-head meter now (odd HES-A, even HES-B)."""
        meters = [self.meter_of(c) for d in range(self.dts) if d not in self.retired_dt
                  for c in self.consumers_of_dt(d)]
        meters += [self.dt_meter(d) for d in range(self.dts)] + [self.feeder_head_meter(f) for f in range(self.feeders)]
        write_then_rename(path, [b"meter,hes\n", "".join(f"{m},{hes_of(m)}\n" for m in meters).encode()])
        return len(meters)

    # -- ground truth ---------------------------------------------------------------------------
    def _value_at(self, what: str, i: int, at: int, base: Any) -> Any:
        entries = self.hist[what].get(i)
        if not entries:
            return base
        # by time alone: a (time, value) tuple would compare a value with the probe at an equal time
        k = bisect.bisect_right(entries, at, key=_first) - 1
        return entries[k][1] if k >= 0 else base

    def _generated_dt(self, c: int) -> int:
        return bisect.bisect_right(self.dt_first, c) - 1

    def _alive(self, c: int, at: int) -> bool:
        return self.born.get(c, self.start) <= at < self.died.get(c, 1 << 62)

    def where(self, meter: str, at: str | dt.datetime | float | None = None) -> dict[str, str] | None:
        """Ground truth: the consumer, DT, feeder and substation of ``meter`` at ``at`` (default
        now, i.e. after every change); None when no consumer had that meter then."""
        t = self.clock if at is None else epoch_of(at)
        candidates = [c for _, c in self.meter_owner.get(meter, ())]
        if meter.startswith("UPM") and meter[3:].isdigit() and 0 <= int(meter[3:]) - self.first_meter < self.base_consumers:
            candidates.append(int(meter[3:]) - self.first_meter)
        for c in candidates:
            if self._alive(c, t) and self._meter_at(c, t) == meter:
                d = self._value_at("consumer_dt", c, t, self._generated_dt(c) if c < self.base_consumers else -1)
                f = self._value_at("dt_feeder", d, t, self.dt_feeder0[d])
                return {"consumer": self.consumer_id(c), "dt": self.dt_id(d), "feeder": self.feeder_id(f),
                        "substation": self.substation_id(self.feeder_substation[f])}
        return None

    def _category0(self, c: int) -> int:
        return self.category0[c] if c < self.base_consumers else 0

    def _meter_at(self, c: int, t: int) -> str | None:
        return self._value_at("meter", c, t, self._generated_meter(c) if c < self.base_consumers else None)

    def consumer_path(self, consumer: str, at: str | dt.datetime | float | None = None) -> dict[str, Any] | None:
        """What a billing system should hold for ``consumer`` at ``at`` (default now), without
        the bus's ``version`` and ``changeId``: None if it did not exist then."""
        kind, c = self.index_of(consumer)
        t = self.clock if at is None else epoch_of(at)
        if kind != "consumer" or c >= len(self.consumer_dt) or self.born.get(c, self.start) > t:
            return None
        retired = t >= self.died.get(c, 1 << 62)
        t_path = self.died[c] - 1 if retired else t          # a retired consumer keeps its last path
        d = self._value_at("consumer_dt", c, t_path, self._generated_dt(c) if c < self.base_consumers else -1)
        f = self._value_at("dt_feeder", d, t_path, self.dt_feeder0[d])
        circle, division, subdivision = self.admin_codes(c)
        return {"consumer": consumer, "consumerNo": self.consumer_no(c), "meter": self._meter_at(c, t_path),
                "category": CATEGORIES[self._value_at("category", c, t_path, self._category0(c))],
                "circle": circle, "division": division, "subdivision": subdivision, "dt": self.dt_id(d),
                "feeder": self.feeder_id(f), "substation": self.substation_id(self.feeder_substation[f]),
                "retired": retired}

    # -- change streams -------------------------------------------------------------------------
    def stream(self, name: str, **options: Any) -> list[dict[str, Any]]:
        """Run the stream called ``name`` (one of STREAMS) with its options."""
        streams = {"new-connections": self.new_connections, "meter-replacements": self.meter_replacements,
                   "dt-moves": self.dt_moves, "retirements": self.retirements, "drift": self.drift}
        if name not in streams:
            raise ValueError(f"unknown stream {name!r}; streams are {', '.join(STREAMS)}")
        return streams[name](**options)

    def _at(self, at: str | dt.datetime | float | None) -> int:
        t = self.clock + 3600 if at is None else epoch_of(at)
        if t < self.clock:
            raise ValueError(f"changes go forward in time: {ist(t)} is before the last change at {ist(self.clock)}")
        self.clock = t
        return t

    def _change(self, t: int, kind: str, type_: str, mrid: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"changeId": f"gis-{self.sequence:06d}", "sequence": self.sequence, "effectiveFrom": ist(t),
                "kind": kind, "type": type_, "mrid": mrid, **fields}

    def _record(self, what: str, i: int, t: int, value: Any) -> None:
        self.hist[what].setdefault(i, []).append((t, value))

    def _new_serial(self) -> str:
        serial = f"UPM{self.next_serial:08d}"
        self.next_serial += 1
        return serial

    def _set_meter(self, c: int, meter: str, t: int) -> None:
        self.meter_now[c] = meter
        self.meter_owner.setdefault(meter, []).append((t, c))
        self._record("meter", c, t, meter)

    def _pick_consumers(self, count: int) -> list[int]:
        alive = len(self.consumer_dt)
        chosen: dict[int, None] = {}
        if count > len(self):
            raise ValueError(f"only {len(self)} consumers are in service, not {count}")
        while len(chosen) < count:
            c = self.rng.randrange(alive)
            if c not in self.died and self.consumer_dt[c] not in self.retired_dt:
                chosen[c] = None
        return list(chosen)

    def _live_dts(self) -> list[int]:
        return [d for d in range(self.dts) if d not in self.retired_dt]

    def new_connections(self, count: int = 10, at: Any = None, dt: str | None = None) -> list[dict[str, Any]]:
        """``count`` new consumers, each with a new meter, under random DTs (or under ``dt``)."""
        t, changes = self._at(at), []
        dts = [self.index_of(dt)[1]] if dt else self._live_dts()
        for _ in range(count):
            d = self.rng.choice(dts)
            c = len(self.consumer_dt)
            self.consumer_dt.append(d)
            self.consumer_sd.append(self.substation_sd[self.feeder_substation[self.dt_feeder[d]]])
            self.category.append(self.rng.choices(range(len(CATEGORIES)), CATEGORY_WEIGHTS)[0])
            self.born[c] = t
            self._record("category", c, t, self.category[c])
            self.joined.setdefault(d, {})[c] = None
            self._record("consumer_dt", c, t, d)
            meter = self._new_serial()
            self._set_meter(c, meter, t)
            self.sequence += 1
            changes.append(self._consumer_create(c, self.dt_id(d), self.sequence, ist(t), meter,
                                                 CATEGORIES[self.category[c]]))
        return changes

    def meter_replacements(self, count: int = 10, at: Any = None,
                           consumers: list[str] | None = None) -> list[dict[str, Any]]:
        """A new meter for ``count`` random consumers (or the ones named): updates of ``meter``."""
        t, changes = self._at(at), []
        chosen = [self.index_of(c)[1] for c in consumers] if consumers else self._pick_consumers(count)
        for c in chosen:
            meter = self._new_serial()
            self._set_meter(c, meter, t)
            changes.append(self._change(t, "update", "consumer", self.consumer_id(c), attributes={"meter": meter}))
        return changes

    def dt_moves(self, count: int = 100, at: Any = None, from_feeder: str | None = None,
                 to_feeder: str | None = None) -> list[dict[str, Any]]:
        """A reconfiguration: ``count`` DTs move to another feeder.  With ``from_feeder`` they are
        its DTs (at most all of them); with ``to_feeder`` they all go there; otherwise each goes
        to another feeder of its own substation (so the admin codes stay right)."""
        t, changes = self._at(at), []
        if from_feeder:
            pool = self.dts_of_feeder(self.index_of(from_feeder)[1])[:count]
        else:
            movable = [d for d in self._live_dts() if self._siblings(self.dt_feeder[d])]
            if count > len(movable):
                raise ValueError(f"only {len(movable)} DTs can move to another feeder, not {count}")
            pool = sorted(self.rng.sample(movable, count))
        target = self.index_of(to_feeder)[1] if to_feeder else None
        for d in pool:
            f = target if target is not None else self.rng.choice(self._siblings(self.dt_feeder[d]))
            if f == self.dt_feeder[d]:
                continue
            self.dt_feeder[d] = f
            self._record("dt_feeder", d, t, f)
            changes.append(self._change(t, "move", "dt", self.dt_id(d), parent=self.feeder_id(f)))
        return changes

    def _siblings(self, f: int) -> list[int]:
        # another feeder of the same substation; where it has none, any other feeder
        s = self.feeder_substation[f]
        same = [g for g in range(bisect.bisect_left(self.feeder_substation, s),
                                 bisect.bisect_right(self.feeder_substation, s)) if g != f]
        return same or [g for g in range(self.feeders) if g != f]

    def retirements(self, dts: int = 1, at: Any = None, dt: str | None = None) -> list[dict[str, Any]]:
        """``dts`` random DTs (or the one named) taken out: first each of its consumers, then the DT."""
        t, changes = self._at(at), []
        chosen = [self.index_of(dt)[1]] if dt else self.rng.sample(self._live_dts(), dts)
        for d in chosen:
            for c in self.consumers_of_dt(d):
                self.died[c] = t
                changes.append(self._change(t, "retire", "consumer", self.consumer_id(c)))
            self.retired_dt[d] = t
            changes.append(self._change(t, "retire", "dt", self.dt_id(d)))
        return changes

    def drift(self, share: float = 0.01, at: Any = None) -> list[dict[str, Any]]:
        """``share`` of the consumers changed as a GIS team would between two nightly exports:
        half get a new meter, three in ten another category, two in ten move to another DT of
        the same feeder.  The changes a snapshot diff should find, one per consumer."""
        t, changes = self._at(at), []
        by_feeder: dict[int, list[int]] = {}
        for e in self._live_dts():
            by_feeder.setdefault(self.dt_feeder[e], []).append(e)
        for i, c in enumerate(self._pick_consumers(round(len(self) * share))):
            kind = i % 10
            d = self.consumer_dt[c]
            others = [e for e in by_feeder[self.dt_feeder[d]] if e != d] if kind >= 8 else []
            if kind < 5 or (kind >= 8 and not others):
                meter = self._new_serial()
                self._set_meter(c, meter, t)
                changes.append(self._change(t, "update", "consumer", self.consumer_id(c), attributes={"meter": meter}))
            elif kind < 8:
                new = (self.category[c] + 1 + self.rng.randrange(len(CATEGORIES) - 1)) % len(CATEGORIES)
                self.category[c] = new
                self._record("category", c, t, new)
                changes.append(self._change(t, "update", "consumer", self.consumer_id(c),
                                            attributes={"category": CATEGORIES[new]}))
            else:
                e = self.rng.choice(others)
                self.consumer_dt[c] = e
                self.joined.setdefault(e, {})[c] = None
                self._record("consumer_dt", c, t, e)
                changes.append(self._change(t, "move", "consumer", self.consumer_id(c), parent=self.dt_id(e)))
        return changes


def _fit(counts: list[int], total: int) -> None:
    """Nudge ``counts`` (each within MIN..MAX) until they sum to ``total``, spreading the change."""
    diff = total - sum(counts)
    while diff:
        per = -(-abs(diff) // len(counts))
        for d, count in enumerate(counts):
            room = MAX_CONSUMERS - count if diff > 0 else count - MIN_CONSUMERS
            step = min(room, per, abs(diff))
            counts[d] += step if diff > 0 else -step
            diff -= step if diff > 0 else -step
            if not diff:
                return


def _rating_for(consumers: int) -> int:
    return min(RATINGS_KVA, key=lambda r: abs(r * CONSUMERS_PER_KVA - consumers))


# --- command line ---------------------------------------------------------------------------

def _measure(consumers: int, seed: int, work: Path) -> dict[str, Any]:
    """Seconds and peak memory of generating the network, its snapshot, its creates and streams."""
    import resource
    import time

    def timed(what: str, fn: Any) -> Any:
        started = time.perf_counter()
        value = fn()
        out[what + "_s"] = round(time.perf_counter() - started, 2)
        return value
    out: dict[str, Any] = {"consumers": consumers}
    model = timed("generate", lambda: NetworkModel.generate(consumers, seed))
    out.update(model.stats())
    out["rss_after_generate_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out["snapshot_rows"] = timed("snapshot", lambda: model.write_snapshot(work / "snapshot.csv"))
    out["snapshot_mb"] = round((work / "snapshot.csv").stat().st_size / 1e6, 1)
    out["creates"] = timed("full_document", lambda: write_document(work / "full.json", model.creates()))
    out["full_document_mb"] = round((work / "full.json").stat().st_size / 1e6, 1)
    out["dt_moves_100_consumers"] = timed("dt_moves_100", lambda: sum(
        len(model.consumers_of_dt(model.index_of(c["mrid"])[1])) for c in model.dt_moves(100)))
    drifted = timed("copy", model.copy)
    out["drift_changes"] = len(timed("drift_1pct", lambda: drifted.drift(0.01)))
    timed("where_1000", lambda: [model.where(f"UPM{model.first_meter + i * 997:08d}") for i in range(1000)])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


# -- the shared network of a dev stack ------------------------------------------------------------
# `gridbus dev up` puts these in every stand-in's environment (and in dev.env), so the GIS
# stand-in, the HES stand-ins, the alarm generator and the demo all generate the same network:
# what the bus's analytics compute can then be checked against ``where(meter, at)``.  The bus
# itself never reads them.
SHARED_NETWORK_ENV = {"GRIDBUS_DEV_NETWORK_CONSUMERS": "consumers", "GRIDBUS_DEV_NETWORK_SEED": "seed",
                      "GRIDBUS_DEV_NETWORK_DTS_PER_FEEDER": "dts_per_feeder",
                      "GRIDBUS_DEV_NETWORK_FEEDERS_PER_SUBSTATION": "feeders_per_substation",
                      "GRIDBUS_DEV_NETWORK_FIRST_METER": "first_meter"}


def shared_recipe(env: dict[str, str] | None = None) -> dict[str, int] | None:
    """``generate`` arguments of the shared network from ``GRIDBUS_DEV_NETWORK_*`` (``env``,
    default os.environ); None when GRIDBUS_DEV_NETWORK_CONSUMERS is not set (no shared network)."""
    env = os.environ if env is None else env
    if not env.get("GRIDBUS_DEV_NETWORK_CONSUMERS"):
        return None
    recipe = {}
    for var, arg in SHARED_NETWORK_ENV.items():
        if env.get(var):
            try:
                recipe[arg] = int(env[var])
            except ValueError:
                raise ValueError(f"{var} must be an integer, not {env[var]!r}") from None
    return recipe


def shared_model(env: dict[str, str] | None = None) -> NetworkModel | None:
    """The shared network as generated (``shared_recipe``), or None when there is none."""
    recipe = shared_recipe(env)
    return NetworkModel.generate(**recipe) if recipe is not None else None


def shared_env(recipe: dict[str, int]) -> dict[str, str]:
    """The ``GRIDBUS_DEV_NETWORK_*`` variables that make ``shared_recipe`` give ``recipe``."""
    return {var: str(recipe[arg]) for var, arg in SHARED_NETWORK_ENV.items() if arg in recipe}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys
    import tempfile
    p = argparse.ArgumentParser(prog="python -m simulators.network",
                                description="Write the generated network's snapshot CSV or change documents, "
                                            "or measure generation at scale.")
    p.add_argument("command", choices=("snapshot", "document", "stream", "measure"))
    p.add_argument("--consumers", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="file to write (snapshot, document, stream)")
    p.add_argument("--fraction", type=float, default=1.0, help="snapshot: keep this share of the rows")
    p.add_argument("--drift", type=float, help="snapshot: first change this share of the consumers")
    p.add_argument("--stream", choices=STREAMS, help="stream: which change stream")
    p.add_argument("--count", type=int, help="stream: how many (DTs for retirements)")
    a = p.parse_args(argv)
    model = NetworkModel.generate(a.consumers, a.seed)
    if a.command == "measure":
        with tempfile.TemporaryDirectory() as work:
            result = _measure(a.consumers, a.seed, Path(work))
    elif not a.out:
        p.error("--out is needed")
    elif a.command == "snapshot":
        drift = len(model.drift(a.drift)) if a.drift else 0
        result = {"out": a.out, "rows": model.write_snapshot(a.out, a.fraction), "drift_changes": drift}
    elif a.command == "document":
        result = {"out": a.out, "changes": write_document(a.out, model.creates())}
    else:
        if not a.stream:
            p.error("stream needs --stream")
        options = {} if a.count is None else {"dts" if a.stream == "retirements" else "share" if a.stream == "drift"
                                              else "count": a.count}
        changes = model.stream(a.stream, **options)
        write_then_rename(a.out, [orjson.dumps(change_document(changes))])
        result = {"out": a.out, "changes": len(changes)}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
