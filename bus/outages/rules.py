"""The correlator's rules: every threshold an option (validated), and the pure helpers the
engine decides with.  docs/outages.md explains each rule.
"""
from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Options", "OptionsError", "partition_of", "max_in_window", "needed", "sample", "feeder_out"]


class OptionsError(ValueError):
    """An outage option is unknown or out of range (raised when a route is loaded)."""


@dataclass(frozen=True)
class Options:
    # repeats of one meter's event within this many seconds are one event
    repeat_s: float = 10.0
    # DT outage: at least this share of the DT's consumer meters gasp within window_s of the first
    dt_share: float = 0.6
    window_s: float = 60.0
    # feeder outage: the head meter gasps, or this many DT outages start within feeder_window_s,
    # or (with at least 2) this share of the feeder's DTs
    feeder_min_dts: int = 3
    feeder_dt_share: float = 0.5
    feeder_window_s: float = 60.0
    # a DT outage waits this long (event time, after its share was reached) for its feeder's
    # other DTs before it is announced, so that a feeder trip is one outage, not one per DT
    feeder_hold_s: float = 15.0
    # gasps below a DT share become single-customer outages after this hold
    single_hold_s: float = 120.0
    # events older than the watermark by more than this make no new outage (they still join or
    # restore an open one); state kept for late events is forgotten after it
    allowed_lateness_s: float = 600.0
    # events further than this ahead of the watermark are refused (clock gone wrong)
    max_future_s: float = 300.0
    # restoration: the equipment meter breathes, or this share of the meters that gasped
    restore_share: float = 0.6
    # after restoration is seen, wait this long for the stragglers' first breaths before closing
    # the outage and opening a nested one for the meters still out
    restore_wait_s: float = 60.0
    # IEEE 1366: shorter than this is momentary (MAIFI), otherwise sustained (SAIFI/SAIDI)
    momentary_s: float = 300.0
    # verification (AMI ping) of each DT and feeder outage: meters asked; share of the answers
    # that must be "alive" to call it a false alarm
    verify_meters: int = 3
    verify_alive_share: float = 0.5
    # bounds against hostile input
    max_seen_ids: int = 2_000_000
    max_out_meters: int = 5_000_000

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> "Options":
        """Options from a route's ``options`` (unknown names and bad values refused by name)."""
        options = dict(options or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise OptionsError(f"unknown outage option(s) {unknown}; known: {sorted(known)}")
        values = {}
        for name, value in options.items():
            want = known[name].type
            if type(value) is bool or not isinstance(value, (int, float)):
                raise OptionsError(f"outage option {name} must be a number, not {value!r}")
            if want == "int" and value != int(value):
                raise OptionsError(f"outage option {name} must be a whole number, not {value!r}")
            values[name] = int(value) if want == "int" else float(value)
        o = cls(**values)
        o.check()
        return o

    def check(self) -> None:
        for name in ("dt_share", "feeder_dt_share", "restore_share", "verify_alive_share"):
            v = getattr(self, name)
            if not (0 < v <= 1) or math.isnan(v):
                raise OptionsError(f"outage option {name} must be a share in (0, 1], not {v!r}")
        for name in ("repeat_s", "window_s", "feeder_window_s", "feeder_hold_s", "single_hold_s",
                     "allowed_lateness_s", "max_future_s", "restore_wait_s", "momentary_s"):
            v = getattr(self, name)
            if not (0 <= v <= 7 * 86400) or math.isnan(v):
                raise OptionsError(f"outage option {name} must be 0 .. 604800 seconds, not {v!r}")
        if self.allowed_lateness_s < 300:
            raise OptionsError("outage option allowed_lateness_s must be at least 300 s: gasps arrive minutes late")
        if self.feeder_min_dts < 2:
            raise OptionsError("outage option feeder_min_dts must be at least 2")
        if not 0 <= self.verify_meters <= 50:
            raise OptionsError("outage option verify_meters must be 0 .. 50")
        if self.max_seen_ids < 1000 or self.max_out_meters < 1000:
            raise OptionsError("outage options max_seen_ids and max_out_meters must be at least 1000")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def partition_of(feeder: str, partitions: int) -> int:
    """The partition owning ``feeder``: everything of one feeder goes to one engine.  CRC-32 of
    the mRID, so every process (and a consistent-hash exchange keyed by the feeder) agrees."""
    if partitions <= 1:
        return 0
    return zlib.crc32(feeder.encode()) % partitions


def needed(share: float, total: int) -> int:
    """How many of ``total`` make ``share`` (at least one)."""
    return max(1, math.ceil(share * total - 1e-9))


def max_in_window(times: Iterable[float], window: float) -> tuple[int, float]:
    """The most ``times`` inside one window of ``window`` seconds, and where that window starts
    (the earliest such)."""
    ts = sorted(times)
    best, start, j = 0, ts[0] if ts else 0.0, 0
    for i, t in enumerate(ts):
        while t - ts[j] > window:
            j += 1
        if i - j + 1 > best:
            best, start = i - j + 1, ts[j]
    return best, start


def feeder_out(dt_starts: Iterable[float], dts_on_feeder: int, o: Options) -> tuple[bool, float]:
    """Feeder rule on the DT outages of one feeder: enough of them start within one window."""
    count, start = max_in_window(dt_starts, o.feeder_window_s)
    if count >= o.feeder_min_dts or (count >= 2 and count >= needed(o.feeder_dt_share, max(dts_on_feeder, 1))):
        return True, start
    return False, start


def sample(candidates: Iterable[str], salt: str, count: int) -> list[str]:
    """``count`` of ``candidates`` chosen deterministically (by a hash salted with the outage),
    so a restarted engine asks the same meters."""
    def key(m: str) -> bytes:
        return hashlib.blake2b((salt + "\x00" + m).encode(), digest_size=8).digest()
    return sorted(candidates, key=key)[:count]
