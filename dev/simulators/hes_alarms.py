"""HES alarms: vendor-JSON alarm bursts from a feeder -> DT -> meter network.

The shapes are those of docs/alarm-formats.md (``alarm_id``, ``meter``, ``code``,
``occurred_at``, ``received_at``, optional ``details``), times in IST with a
``+05:30`` offset.  Everything is deterministic for a seed, so a benchmark or a
test can regenerate exactly the alarms it sent.

The network is either regular (``Network.build``: feeders "F01", DTs "F01-DT001",
meters "UPM%08d" in a row) or taken from the generated GIS network of
``simulators.network`` (``Network.from_model``, or ``Network.load`` of its snapshot
CSV), so alarms hang under the same DTs and feeders the bus's network store holds.

    feeder_trip   every meter under the tripped feeders sends a last gasp (101),
                  optionally a first breath (102) when the feeder is restored
    burst         a trip of as many feeders as needed, cut to exactly N alarms
    mixed         random alarms of the IS 15959 classes in a chosen mix

The IS 15959 codes and their classes come from the bus's data file
(transformers/data/is15959_events.yaml), read as data: ``simulators`` never
imports the bus or its transformers, so a stand-in cannot share a bug with them.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import requests
import yaml

from simulators.network import NetworkModel, shared_model

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
# found, not imported: find_spec locates the installed package without running its code
EVENTS_FILE = (Path(importlib.util.find_spec("transformers").submodule_search_locations[0])
               / "data" / "is15959_events.yaml")
CLASSES = ("critical", "health", "fraud", "outage")
NO_CLASS = "none"                       # codes that only go to the MDMS
DEFAULT_MIX = {"critical": 0.05, "health": 0.5, "fraud": 0.15, "outage": 0.3}
POWER_FAILURE, POWER_RESTORED = 101, 102
DEFAULT_AT = "2026-11-01T10:15:00+05:30"


# --- the network ----------------------------------------------------------------------

@dataclasses.dataclass
class Network:
    """Feeders -> distribution transformers (DTs) -> meters, in a fixed order.

    ``seed`` is the default seed of the alarm generators run on this network.
    """

    feeders: dict[str, dict[str, list[str]]]
    seed: int = 1
    _where: dict[str, tuple[str, str]] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, feeders: int = 10, dts_per_feeder: int = 20, meters_per_dt: int = 250,
              seed: int = 1, first_meter: int = 1) -> "Network":
        """A regular network: feeder "F03", its DTs "F03-DT017", meters "UPM%08d" in a row."""
        if min(feeders, dts_per_feeder, meters_per_dt) < 1 or first_meter < 0:
            raise ValueError("feeders, DTs per feeder and meters per DT must be >= 1")
        width = max(2, len(str(feeders)))
        tree: dict[str, dict[str, list[str]]] = {}
        n = first_meter
        for f in range(1, feeders + 1):
            feeder = f"F{f:0{width}d}"
            tree[feeder] = {}
            for d in range(1, dts_per_feeder + 1):
                tree[feeder][f"{feeder}-DT{d:03d}"] = [f"UPM{m:08d}" for m in range(n, n + meters_per_dt)]
                n += meters_per_dt
        return cls(tree, seed)

    @classmethod
    def from_model(cls, model: NetworkModel, seed: int | None = None) -> "Network":
        """The consumer meters of a generated GIS network as they hang now: feeder "FDR-0001",
        DT "DT-000001", meters "UPM%08d" (the model's ground truth, ``model.where(meter)``)."""
        return cls({f: d for f, d in model.feeder_tree().items() if d}, model.seed if seed is None else seed)

    @classmethod
    def from_snapshot(cls, path: str | os.PathLike, seed: int = 1) -> "Network":
        """From a consumer-indexing snapshot CSV (simulators.network SNAPSHOT_HEADER): its
        feeder, dt and meter columns, in file order."""
        import csv
        tree: dict[str, dict[str, list[str]]] = {}
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"feeder", "dt", "meter"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: a snapshot needs the columns feeder, dt and meter; missing {sorted(missing)}")
            for row in reader:
                tree.setdefault(row["feeder"], {}).setdefault(row["dt"], []).append(row["meter"])
        network = cls(tree, seed)
        if len(network._index()) != len(network):
            raise ValueError("a meter appears under more than one DT")
        return network

    def _index(self) -> dict[str, tuple[str, str]]:
        if self._where is None:
            self._where = {m: (f, d) for f, dts in self.feeders.items()
                           for d, meters in dts.items() for m in meters}
        return self._where

    @property
    def meters(self) -> list[str]:
        return [m for dts in self.feeders.values() for meters in dts.values() for m in meters]

    def __len__(self) -> int:
        return sum(len(meters) for dts in self.feeders.values() for meters in dts.values())

    def __contains__(self, meter: object) -> bool:
        return meter in self._index()

    def dts_of_feeder(self, feeder: str) -> list[str]:
        return list(self._feeder(feeder))

    def meters_of_dt(self, dt_id: str) -> list[str]:
        for dts in self.feeders.values():
            if dt_id in dts:
                return list(dts[dt_id])
        raise KeyError(f"no DT {dt_id!r} in the network")

    def meters_of_feeder(self, feeder: str) -> list[str]:
        return [m for meters in self._feeder(feeder).values() for m in meters]

    def dt_of(self, meter: str) -> str:
        return self._located(meter)[1]

    def feeder_of(self, meter: str) -> str:
        return self._located(meter)[0]

    def _feeder(self, feeder: str) -> dict[str, list[str]]:
        if feeder not in self.feeders:
            raise KeyError(f"no feeder {feeder!r} in the network")
        return self.feeders[feeder]

    def _located(self, meter: str) -> tuple[str, str]:
        where = self._index().get(meter)
        if where is None:
            raise KeyError(f"no meter {meter!r} in the network")
        return where

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "meters": len(self), "feeders": self.feeders}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: str | bytes | dict) -> "Network":
        """From ``to_json()`` text (or its parsed dict); checks the tree and that no meter repeats."""
        if isinstance(doc, (str, bytes)):
            doc = json.loads(doc)
        feeders = doc.get("feeders") if isinstance(doc, dict) else None
        ok = isinstance(feeders, dict) and all(
            isinstance(dts, dict) and all(isinstance(ms, list) and all(isinstance(m, str) for m in ms)
                                          for ms in dts.values())
            for dts in feeders.values())
        if not ok:
            raise ValueError('a network is {"feeders": {feeder: {dt: [meter, ...]}}, "seed": n}')
        network = cls({f: {d: list(ms) for d, ms in dts.items()} for f, dts in feeders.items()},
                      int(doc.get("seed", 1)))
        if len(network._index()) != len(network):
            raise ValueError("a meter appears under more than one DT")
        return network

    def save(self, path: str | os.PathLike) -> None:
        _write_then_rename(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Network":
        """A network file of ``save``, or a snapshot CSV of the GIS stand-in (by its .csv name)."""
        if str(path).endswith(".csv"):
            return cls.from_snapshot(path)
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# --- IS 15959 codes --------------------------------------------------------------------

@lru_cache(maxsize=None)
def codes_by_class() -> dict[str, tuple[int, ...]]:
    """Class ("critical", "health", "fraud", "outage", or "none") -> its IS 15959 codes."""
    data = yaml.safe_load(EVENTS_FILE.read_text(encoding="utf-8"))
    out: dict[str, list[int]] = {c: [] for c in (*CLASSES, NO_CLASS)}
    for code, spec in data["events"].items():
        for cls in spec.get("class") or (NO_CLASS,):
            out[cls].append(int(code))
    return {c: tuple(sorted(codes)) for c, codes in out.items()}


# --- alarms ----------------------------------------------------------------------------

def _epoch(at: dt.datetime | str) -> int:
    """Epoch seconds of ``at``; a time without offset is IST, as the HES means it."""
    moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    return int(moment.timestamp())


@lru_cache(maxsize=1 << 16)
def _ist(epoch: int) -> str:
    # a burst has a few distinct seconds among 50,000 alarms: format each once
    return dt.datetime.fromtimestamp(epoch, IST).isoformat()


def _alarm(hes: str, meter: str, code: int, occurred: int, received: int,
           details: dict[str, Any] | None = None) -> dict[str, Any]:
    # meter, code and meter time are what the bus dedups on: the id repeats exactly when they do
    alarm = {"alarm_id": f"{hes}-{meter}-{code}-{occurred}", "meter": meter, "code": code,
             "occurred_at": _ist(occurred), "received_at": _ist(received)}
    if details:
        alarm["details"] = details
    return alarm


def _in_arrival_order(timed: list[tuple[int, dict]]) -> list[dict[str, Any]]:
    timed.sort(key=lambda t: (t[0], t[1]["alarm_id"]))
    return [alarm for _, alarm in timed]


def _outage(meters: Iterable[str], at: dt.datetime | str, spread_s: float, hes: str,
            rng: random.Random, restore_after_s: float | None) -> list[dict[str, Any]]:
    start = _epoch(at)
    timed: list[tuple[int, dict]] = []

    def send(meter: str, code: int, after_s: float, details: dict) -> None:
        occurred = start + int(after_s + rng.uniform(0, spread_s))
        received = occurred + rng.randint(1, 4)          # the HES hears it a little later
        timed.append((received, _alarm(hes, meter, code, occurred, received, details)))

    for meter in meters:
        send(meter, POWER_FAILURE, 0, {"voltage": 0})
        if restore_after_s is not None:
            send(meter, POWER_RESTORED, restore_after_s, {"voltage": rng.randint(226, 242)})
    return _in_arrival_order(timed)


def feeder_trip(network: Network, feeders: str | Iterable[str], at: dt.datetime | str,
                spread_s: float = 5.0, hes: str = "hes-a", rng: random.Random | None = None,
                restore_after_s: float | None = None) -> list[dict[str, Any]]:
    """Every meter under ``feeders`` sends a last gasp (101) within ``spread_s`` after ``at``;
    with ``restore_after_s``, also a first breath (102) that long after.  In arrival order."""
    names = [feeders] if isinstance(feeders, str) else list(feeders)
    meters = [m for f in names for m in network.meters_of_feeder(f)]
    return _outage(meters, at, spread_s, hes, rng or random.Random(network.seed), restore_after_s)


def burst(network: Network, count: int, at: dt.datetime | str, spread_s: float = 5.0,
          hes: str = "hes-a", rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Exactly ``count`` last gasps: whole feeders in network order, the last one cut short."""
    if not 0 <= count <= len(network):
        raise ValueError(f"a burst of {count} last gasps needs 0..{len(network)} meters (one each)")
    meters = network.meters[:count]
    return _outage(meters, at, spread_s, hes, rng or random.Random(network.seed), None)


_DETAILS = {
    101: lambda rng: {"voltage": 0},
    102: lambda rng: {"voltage": rng.randint(226, 242)},
    205: lambda rng: {"power_factor": round(rng.uniform(0.4, 0.75), 2)},
    9: lambda rng: {"voltage": rng.randint(150, 190), "phase": rng.choice("RYB")},
    201: lambda rng: {"phase": rng.choice("RYB")},
}


def mixed(network: Network, count: int, at: dt.datetime | str, mix: dict[str, float] | None = None,
          rng: random.Random | None = None, hes: str = "hes-a",
          window_s: float = 3600.0) -> list[dict[str, Any]]:
    """``count`` random alarms over ``window_s`` after ``at`` on random meters: a class drawn by
    the ``mix`` weights (critical, health, fraud, outage, none), then one of its codes."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    codes = codes_by_class()
    if not mix or set(mix) - set(codes) or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(f"mix weights name classes among {sorted(codes)}, are >= 0 and not all 0")
    rng = rng or random.Random(network.seed)
    start, meters = _epoch(at), network.meters
    classes, weights = list(mix), list(mix.values())
    used: set[tuple[str, int, int]] = set()
    timed: list[tuple[int, dict]] = []
    for _ in range(count):
        code = rng.choice(codes[rng.choices(classes, weights)[0]])
        meter = rng.choice(meters)
        occurred = start + int(rng.uniform(0, window_s))
        while (meter, code, occurred) in used:   # the same meter, code and second is one event
            occurred += 1
        used.add((meter, code, occurred))
        received = occurred + rng.randint(1, 10)
        details = _DETAILS[code](rng) if code in _DETAILS else None
        timed.append((received, _alarm(hes, meter, code, occurred, received, details)))
    return _in_arrival_order(timed)


# --- sending ---------------------------------------------------------------------------

@dataclasses.dataclass
class SendSummary:
    alarms: int
    batches: int
    status: dict[str, int]          # HTTP status (or "connection-error") -> answers
    examples: dict[str, str]        # the first answer of each non-2xx status, cut short
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return all(s.isdigit() and 200 <= int(s) < 300 for s in self.status)


def send(alarms: list[dict[str, Any]], url: str, key: str, batch: int = 500, workers: int = 1,
         timeout_s: float = 30.0, progress: Any = None) -> SendSummary:
    """POST ``alarms`` as JSON arrays of ``batch`` with ``X-API-Key``; counts answers by status.

    ``progress(done_alarms, done_batches, status_counts)`` is called after each answer."""
    if batch < 1 or workers < 1:
        raise ValueError("batch and workers must be >= 1")
    batches = [alarms[i:i + batch] for i in range(0, len(alarms), batch)]
    local = threading.local()
    lock = threading.Lock()
    status: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    done = [0, 0]

    def post(chunk: list[dict[str, Any]]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            answer = session.post(url, json=chunk, headers={"X-API-Key": key}, timeout=timeout_s)
            code, text = str(answer.status_code), answer.text
        except requests.RequestException as exc:
            code, text = "connection-error", f"{type(exc).__name__}: {exc}"
        with lock:
            status[code] += 1
            if not (code.isdigit() and 200 <= int(code) < 300):
                examples.setdefault(code, text[:300])
            done[0] += len(chunk)
            done[1] += 1
            if progress:
                progress(done[0], done[1], dict(status))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(post, batches))
    return SendSummary(len(alarms), len(batches), dict(status), examples,
                       round(time.monotonic() - started, 3))


# --- command line ----------------------------------------------------------------------

def _write_then_rename(path: Path, text: str) -> None:
    # a reader polling for the file never sees half of it
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _parse_mix(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (pair.split("=") for pair in text.split(","))}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"mix is like critical=0.05,health=0.5, not {text!r}") from exc


def _network_of(a: argparse.Namespace) -> Network:
    if a.network:
        return Network.load(a.network)
    if a.consumers:
        return Network.from_model(NetworkModel.generate(a.consumers, seed=a.gis_seed), a.seed)
    regular = (a.feeders, a.dts, a.meters) != (None, None, None)
    # in a dev stack the alarms come from the network the GIS stand-in serves (GRIDBUS_DEV_NETWORK_*),
    # so an outage the bus correlates can be checked against that network's ground truth
    shared = None if regular else shared_model()
    if shared is not None:
        return Network.from_model(shared, a.seed)
    return Network.build(a.feeders or 10, a.dts or 20, a.meters or 250, seed=a.seed if a.seed is not None else 1)


def _emit(alarms: list[dict[str, Any]], out: str | None, network: Network) -> None:
    if not out:
        json.dump(alarms, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return
    _write_then_rename(Path(out), json.dumps(alarms, separators=(",", ":")))
    codes = collections.Counter(a["code"] for a in alarms)
    json.dump({"out": out, "alarms": len(alarms), "meters": len({a["meter"] for a in alarms}),
               "feeders": sorted({network.feeder_of(a["meter"]) for a in alarms if a["meter"] in network}),
               "codes": {str(c): n for c, n in sorted(codes.items())},
               # the classes of each code used, so that a consumer of the file (the benchmark)
               # knows which subscriber each alarm is for without a code table of its own
               "code_classes": _classes_of(codes),
               "first_received": alarms[0]["received_at"] if alarms else None,
               "last_received": alarms[-1]["received_at"] if alarms else None}, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _classes_of(codes) -> dict[str, list[str]]:
    by_class = codes_by_class()
    return {str(c): [k for k in CLASSES if c in by_class.get(k, ())] for c in sorted(codes)}


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", help="network file written by the 'network' command, or a GIS snapshot "
                                     "CSV; without it a regular network of --feeders x --dts x --meters "
                                     "is built (or a generated one with --consumers); with none of "
                                     "these, the dev stack's shared network when GRIDBUS_DEV_NETWORK_"
                                     "CONSUMERS is set (simulators.network shared_model)")
    p.add_argument("--consumers", type=int, help="without --network: the generated GIS network of "
                                                 "simulators.network with this many consumers")
    p.add_argument("--gis-seed", type=int, default=1, help="seed of the generated GIS network (default 1)")
    # None when not given, so that the shared network is used only when no regular one was asked for
    p.add_argument("--feeders", type=int, help="without --network (default 10)")
    p.add_argument("--dts", type=int, help="DTs per feeder without --network (default 20)")
    p.add_argument("--meters", type=int, help="meters per DT without --network (default 250)")
    p.add_argument("--at", default=DEFAULT_AT, help=f"ISO 8601 start; no offset = IST (default {DEFAULT_AT})")
    p.add_argument("--hes", default="hes-a", help="HES name, the prefix of every alarm_id")
    p.add_argument("--seed", type=int, help="random seed (default: the network's seed)")
    p.add_argument("--out", help="write the JSON array here and print a summary; default: stdout")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.hes_alarms",
                                description="Generate vendor-JSON HES alarms (docs/alarm-formats.md) "
                                            "from a feeder/DT/meter network, and send them to the gateway.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    net = sub.add_parser("network", help="write a network file (feeders -> DTs -> meters)",
                         description="Write a regular network: meters UPM%%08d numbered in a row, "
                                     "feeders F01.., DTs F01-DT001.. ; or, with --consumers, the "
                                     "generated GIS network's feeders, DTs and consumer meters")
    net.add_argument("--feeders", type=int, default=10)
    net.add_argument("--dts", type=int, default=20, help="DTs per feeder")
    net.add_argument("--meters", type=int, default=250, help="meters per DT")
    net.add_argument("--first-meter", type=int, default=1, help="number of the first meter serial")
    net.add_argument("--seed", type=int, default=1, help="default seed of alarms generated on it")
    net.add_argument("--consumers", type=int, help="instead of the regular network: the generated GIS "
                                                   "network (simulators.network) with this many consumers")
    net.add_argument("--gis-seed", type=int, default=1, help="seed of the generated GIS network (default 1)")
    net.add_argument("--out", required=True, help="network JSON file to write")

    b = sub.add_parser("burst", help="exactly --count last gasps (101): a trip of whole feeders, "
                                     "the last one cut short",
                       description="A feeder trip on as many feeders as needed, cut to exactly --count "
                                   "alarms, in arrival order.")
    b.add_argument("--count", type=int, required=True, help="alarms to write, e.g. 50000 for the benchmark")
    b.add_argument("--spread-s", type=float, default=5.0, help="last gasps spread over this many seconds")
    _generation_options(b)

    t = sub.add_parser("trip", help="last gasps (and first breaths) of every meter of some feeders")
    t.add_argument("--feeder", action="append", required=True, help="feeder id, e.g. F03; repeatable")
    t.add_argument("--spread-s", type=float, default=5.0)
    t.add_argument("--restore-after-s", type=float, help="also a 102 restore alarm this long after the trip")
    _generation_options(t)

    m = sub.add_parser("mixed", help="random alarms of the IS 15959 classes in a chosen mix")
    m.add_argument("--count", type=int, required=True, help="alarms to write")
    m.add_argument("--mix", type=_parse_mix, help="class weights, e.g. critical=0.05,health=0.5,"
                                                  "fraud=0.15,outage=0.3,none=0 (default as shown, none=0)")
    m.add_argument("--window-s", type=float, default=3600.0, help="alarms spread over this many seconds")
    _generation_options(m)

    s = sub.add_parser("send", help="POST an alarm file to the gateway in arrays of --batch",
                       description="POST the alarms of FILE (a JSON array, or an object with 'alarms') "
                                   "to --url with header X-API-Key, print progress, then a JSON summary "
                                   "with the number of answers per HTTP status. Exit 1 if any answer "
                                   "was not 2xx.")
    s.add_argument("file", help="alarm file written by burst, trip or mixed")
    s.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080/v1/push/hes-a/alarms")
    s.add_argument("--key", required=True, help="the HES's gateway API key (X-API-Key)")
    s.add_argument("--batch", type=int, default=500, help="alarms per POST (default 500)")
    s.add_argument("--workers", type=int, default=1, help="concurrent POSTs (default 1)")
    s.add_argument("--timeout-s", type=float, default=30.0)
    a = p.parse_args(argv)

    try:
        if a.command == "network":
            if a.consumers:
                network = Network.from_model(NetworkModel.generate(a.consumers, seed=a.gis_seed,
                                                                   first_meter=a.first_meter), a.seed)
            else:
                network = Network.build(a.feeders, a.dts, a.meters, a.seed, a.first_meter)
            network.save(a.out)
            meters = network.meters
            json.dump({"out": a.out, "feeders": len(network.feeders),
                       "dts": sum(len(dts) for dts in network.feeders.values()),
                       "meters": len(meters), "first_meter": meters[0], "last_meter": meters[-1]},
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif a.command in ("burst", "trip", "mixed"):
            network = _network_of(a)
            rng = random.Random(a.seed if a.seed is not None else network.seed)
            if a.command == "burst":
                alarms = burst(network, a.count, a.at, a.spread_s, a.hes, rng)
            elif a.command == "trip":
                alarms = feeder_trip(network, a.feeder, a.at, a.spread_s, a.hes, rng, a.restore_after_s)
            else:
                alarms = mixed(network, a.count, a.at, a.mix, rng, a.hes, a.window_s)
            _emit(alarms, a.out, network)
        else:
            doc = json.loads(Path(a.file).read_text(encoding="utf-8"))
            alarms = doc["alarms"] if isinstance(doc, dict) else doc
            every = max(1, -(-len(alarms) // a.batch) // 10)

            def progress(n: int, k: int, status: dict[str, int]) -> None:
                if k % every == 0 or n == len(alarms):
                    print(f"sent {n}/{len(alarms)} alarms in {k} POSTs; answers {status}",
                          file=sys.stderr, flush=True)

            summary = send(alarms, a.url, a.key, a.batch, a.workers, a.timeout_s, progress)
            d = dataclasses.asdict(summary)
            d["alarms_per_s"] = round(summary.alarms / summary.elapsed_s) if summary.elapsed_s else None
            json.dump(d, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0 if summary.ok else 1
    except (KeyError, ValueError, OSError) as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
