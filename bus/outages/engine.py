"""The outage correlator's engine: last gasps and first breaths in, CIM Outage messages and
verification requests out.  Pure and deterministic: no wall clock, no I/O but the topology's
lookups.  Time is the events' own time and the watermark the caller moves with ``advance``.

    engine = OutageEngine(topology, Options())
    out = engine.process(events, now)   # MeterEvent list -> decisions
    out += engine.advance(watermark)    # timers due by then: holds, announcements, closings
    out += engine.answer(request_id, {"UPM00000012": False, ...})   # verification answers
    state = engine.snapshot()           # plain JSON-able data; OutageEngine.restore(state, topology)

A decision is a dict: ``{"type": "outage", "verb": created|changed|closed, "messageId",
"Outage": {...}}`` or ``{"type": "verify", "requestId", "outage", "meters": [...]}``.
An event whose ``message_id`` was seen before is a no-op, so a redelivery after a crash (state
restored from a snapshot older than the events) repeats no decision.  docs/outages.md has the
rules.
"""
from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from bus.outages.events import POWER_FAIL, MeterEvent
from bus.outages.outage import Outage, message
from bus.outages.rules import Options, feeder_out, max_in_window, needed, partition_of, sample
from bus.outages.topology import CONSUMER, DT, FEEDER, Place, Topology

__all__ = ["OutageEngine"]

SNAPSHOT_VERSION = 1
# out[meter] = [gasp time, outage mRID or None (pending), DT or None, feeder, received, kind]
T, OID, ODT, OFDR, ORCV, OKIND = range(6)


class OutageEngine:
    def __init__(self, topology: Topology, options: Options | None = None,
                 partition: tuple[int, int] | None = None):
        self.topology = topology
        self.o = options or Options()
        self.o.check()
        if partition is not None and not (partition[1] >= 1 and 0 <= partition[0] < partition[1]):
            raise ValueError(f"partition {partition!r} is not (k, n) with 0 <= k < n")
        self.partition = partition
        self.watermark: float | None = None
        # in about time order, oldest first (OrderedDict: popping the front stays O(1))
        self.seen: OrderedDict[str, float] = OrderedDict()         # message id -> event time
        self.last_breath: OrderedDict[str, float] = OrderedDict()  # meter -> latest first breath
        self.out: dict[str, list] = {}                     # meters out now (see T, OID, ...)
        self.pending: dict[str, dict[str, float]] = {}     # DT -> meters out in no DT/feeder outage
        self.outages: dict[str, Outage] = {}               # held, open or restoring
        self.dt_outage: dict[str, str] = {}                # DT -> its DT outage
        self.feeder_outage: dict[str, str] = {}            # feeder -> its feeder outage
        self.feeder_dts: dict[str, dict[str, str]] = {}    # feeder -> DT -> DT outage
        self.closed_recent: dict[str, list[float]] = {}    # equipment -> [start, end] of its last outage
        self.requests: dict[str, str] = {}                 # verification request -> outage
        self.timers: list[list] = []                       # heap of [due, seq, kind, key, token]
        self.timer_seq = 0
        self.numbers: dict[str, int] = {}                  # feeder -> outages numbered so far
        self.stats: dict[str, int] = {}
        self.last_prune = 0.0
        self._out: list[dict] = []
        self._sets: dict[str, set[str]] = {}               # outage -> set(meters), derived, not saved

    # -- input ------------------------------------------------------------------------------------
    def process(self, events: Iterable[MeterEvent], now: float | None = None) -> list[dict]:
        """Correlate a batch of events.  ``now``: the caller's clock as it took the batch (the
        process's wall clock; the arrival of the batch's last event in a replay), which the
        refusal of events from the future counts from when it is ahead of the watermark."""
        events = list(events)
        times = [e.at for e in events if 0 <= e.at < 1e11]
        if times:
            self.topology.prefetch({e.meter for e in events}, min(times), max(times))
        seen, o, stats = self.seen, self.o, self.stats
        locate = self.topology.locate
        wm = self.watermark
        ref = wm if now is None or now != now else now if wm is None else max(wm, now)
        future = None if ref is None else ref + o.max_future_s
        late_before = None if wm is None else wm - o.allowed_lateness_s
        for e in events:
            mid = e.message_id
            if mid in seen:
                stats["duplicate"] = stats.get("duplicate", 0) + 1
                continue
            t = e.at
            if not (0 <= t < 1e11):             # NaN, infinite, negative, past the year 5000
                stats["bad_time"] = stats.get("bad_time", 0) + 1
                continue
            if future is not None and t > future:
                stats["future"] = stats.get("future", 0) + 1
                continue
            seen[mid] = t
            if len(seen) > o.max_seen_ids:
                seen.popitem(last=False)
                stats["seen_evicted"] = stats.get("seen_evicted", 0) + 1
            place = locate(e.meter, t)
            if place is None or (self.partition is not None and
                                 partition_of(place.feeder, self.partition[1]) != self.partition[0]):
                rec = self.out.get(e.meter) if e.code != POWER_FAIL else None
                if rec is None:
                    what = "unknown_meter" if place is None else "other_partition"
                    stats[what] = stats.get(what, 0) + 1
                    continue
                # the first breath of a meter that is out here, from where the network has it now
                # (its DT switched onto another feeder to restore it): it restores where it gasped
                place = Place(rec[OKIND], rec[ODT], rec[OFDR])
                stats["breath_moved"] = stats.get("breath_moved", 0) + 1
            late = late_before is not None and t < late_before
            if e.code == POWER_FAIL:
                self._gasp(e, place, late)
            else:
                self._breath(e, place, late)
        out, self._out = self._out, []
        return out

    def advance(self, watermark: float) -> list[dict]:
        """Move event time to ``watermark`` (it never goes back) and fire what is due by then."""
        if watermark != watermark:
            return []
        if self.watermark is None or watermark > self.watermark:
            self.watermark = float(watermark)
        w = self.watermark
        timers = self.timers
        while timers and timers[0][0] <= w:
            due, _, kind, key, token = heapq.heappop(timers)
            if kind == "single":
                self._fire_single(key, token)
            elif kind == "announce":
                found = self.outages.get(key)
                if found is not None and not found.announced:
                    self._announce(found)
            elif kind == "close":
                found = self.outages.get(key)
                if found is not None and found.state == "restoring" and token == found.restored_at:
                    self._close_restored(found)
        self._prune(w)
        out, self._out = self._out, []
        return out

    def answer(self, request_id: str, answers: dict[str, bool]) -> list[dict]:
        """The answers to a verification request: meter -> True (alive, it answered) / False
        (dead: no answer).  Meters not asked are ignored; a request answered twice, or whose
        outage has closed meanwhile, changes nothing."""
        if not isinstance(answers, dict):
            answers = {}
        mrid = self.requests.get(request_id) if isinstance(request_id, str) else None
        found = self.outages.get(mrid) if mrid else None
        valid = {m: bool(a) for m, a in answers.items() if found is not None and m in found.verify_meters}
        if found is None or not valid:
            self._count("verify_ignored")
            return []
        del self.requests[request_id]
        found.verify_answers = valid
        total, alive = len(valid), sum(valid.values())
        if alive / total >= self.o.verify_alive_share:
            self._count("false_alarms")
            self._close_false_alarm(found, f"false alarm: {alive} of {total} meters asked answered")
        else:
            found.verification = "verified"
            self._send(found, "changed")
            if found.kind == "dt":
                self._check_feeder(found.feeder, self.watermark if self.watermark is not None else found.decided)
        out, self._out = self._out, []
        return out

    # -- gasps ------------------------------------------------------------------------------------
    def _gasp(self, e: MeterEvent, place, late: bool) -> None:
        m, t = e.meter, e.at
        rec = self.out.get(m)
        if rec is not None:
            self._count("repeat" if abs(t - rec[T]) <= self.o.repeat_s else "already_out")
            if t < rec[T] and rec[OID] is None and not late:
                # an earlier copy of a pending gasp, delivered after it: the earlier time counts
                rec[T] = t
                self.pending[rec[ODT]][m] = t
                self._timer(t + self.o.single_hold_s, "single", m, t)
                self._check_dt(rec[ODT], t)
            return
        back = self.last_breath.get(m)
        if back is not None and t <= back:
            self._count("gasp_before_breath")
            return
        feeder, dt = place.feeder, place.dt
        for equipment in (dt, feeder):
            closed = self.closed_recent.get(equipment) if equipment else None
            if closed is not None and closed[0] - self.o.window_s <= t <= closed[1]:
                self._count("gasp_of_closed_outage")
                return
        received = e.received if e.received is not None else t
        fo = self.feeder_outage.get(feeder)
        if fo is not None and self._joinable(self.outages[fo], t):
            self._join(self.outages[fo], m, t, dt, feeder, received, place.kind)
            return
        if dt is not None:
            do = self.dt_outage.get(dt)
            if do is not None and self._joinable(self.outages[do], t):
                self._join(self.outages[do], m, t, dt, feeder, received, place.kind)
                return
        if late:
            self._count("too_late")
            return
        if len(self.out) >= self.o.max_out_meters:
            self._count("out_meters_full")
            return
        if place.kind == FEEDER:
            info = self.topology.feeder(feeder, t)
            if info is not None:
                self._declare_feeder(info, t, t, (m, t, received))
            return
        if place.kind == DT:
            info = self.topology.dt(dt, t)
            if info is not None:
                self._declare_dt(info, t, t, (m, t, received))
            return
        if dt is None:                         # a consumer meter the network puts under no DT
            self._count("no_dt")
            return
        self.out[m] = [t, None, dt, feeder, received, CONSUMER]
        self.pending.setdefault(dt, {})[m] = t
        self._timer(t + self.o.single_hold_s, "single", m, t)
        self._check_dt(dt, t)

    def _joinable(self, found: Outage, t: float) -> bool:
        return found.state != "restoring" or found.restored_at is None or t < found.restored_at

    def _join(self, found: Outage, m: str, t: float, dt: str | None, feeder: str, received: float,
              kind: str) -> None:
        found.gasped[m] = t
        self.out[m] = [t, found.mrid, dt, feeder, received, kind]
        if kind == CONSUMER:
            members = self._sets.get(found.mrid)
            if members is None:
                members = self._sets[found.mrid] = set(found.meters)
            if m not in members:
                members.add(m)
                found.meters.append(m)
            # the first consumer meter to join a DT outage its DT meter alone reported: it now
            # counts towards the feeder rule
            if found.kind == "dt" and len(found.gasped) == 2 and found.equipment_meter in found.gasped:
                self._check_feeder(feeder, t)
        self._count("joined")

    def _check_dt(self, dt: str, t: float) -> None:
        pend = self.pending.get(dt)
        if not pend:
            return
        info = self.topology.dt(dt, t)
        if info is None or not info.meters:
            return
        need = needed(self.o.dt_share, len(info.meters))
        if len(pend) < need:
            return
        count, start = max_in_window(pend.values(), self.o.window_s)
        if count >= need:
            self._declare_dt(info, start, t, None)

    # -- declarations -----------------------------------------------------------------------------
    def _new_id(self, feeder: str) -> str:
        n = self.numbers.get(feeder, 0) + 1
        self.numbers[feeder] = n
        return f"OUT-{feeder}-{n:06d}"

    def _declare_dt(self, info, start: float, decided: float, by_meter: tuple | None) -> None:
        feeder = info.feeder
        self._end_restoring(self.dt_outage.get(info.mrid))
        found = Outage(self._new_id(feeder), "dt", feeder, info.mrid, info.name, info.dt_meter, start, start,
                       max(decided, start), list(info.meters), len(info.meters), dts=[info.mrid])
        reported = []
        if by_meter is not None:
            m, t, received = by_meter
            found.gasped[m] = t
            self.out[m] = [t, found.mrid, info.mrid, feeder, received, DT]
            reported.append(received)
        self._absorb_pending(found, info.mrid, reported)
        found.reported = min(reported) if reported else start
        self.outages[found.mrid] = found
        self.dt_outage[info.mrid] = found.mrid
        self.feeder_dts.setdefault(feeder, {})[info.mrid] = found.mrid
        self._count("dt_outages")
        # the hold runs from the decision or from the clock, whichever is later: a decision on
        # gasps that came 30 s late still gives the feeder's other late gasps their time
        held_from = found.decided if self.watermark is None else max(found.decided, self.watermark)
        self._timer(held_from + self.o.feeder_hold_s, "announce", found.mrid, 0)
        self._check_feeder(feeder, decided)

    def _counts_for_feeder(self, found: Outage) -> bool:
        """A DT outage counts towards its feeder's once a consumer meter of it reported out, or a
        verification confirmed it: a DT meter that fails and gasps alone never trips a feeder."""
        return found.verification == "verified" or \
            len(found.gasped) > (1 if found.equipment_meter in found.gasped else 0)

    def _check_feeder(self, feeder: str, decided: float) -> None:
        """The feeder rule, on the DT outages of this feeder."""
        dts = self.feeder_dts.get(feeder)
        if not dts or len(dts) < 2 or feeder in self.feeder_outage:
            return
        starts = [o.start for o in map(self.outages.__getitem__, dts.values()) if self._counts_for_feeder(o)]
        if len(starts) >= 2:
            finfo = self.topology.feeder(feeder, decided)
            if finfo is not None:
                out, fstart = feeder_out(starts, len(finfo.dts), self.o)
                if out:
                    self._declare_feeder(finfo, fstart, decided, None)

    def _end_restoring(self, mrid: str | None) -> None:
        """A new failure of equipment whose restoration was still being waited on: that outage
        closes now (its stragglers nested), and the new one starts afresh."""
        found = self.outages.get(mrid) if mrid else None
        if found is not None and found.state == "restoring":
            self._close_restored(found)

    def _absorb_pending(self, found: Outage, dt: str, reported: list) -> None:
        """The meters of ``dt`` out in no bigger outage join ``found``; their single-customer
        outages (announced) close as absorbed."""
        pend = self.pending.pop(dt, None)
        if not pend:
            return
        for m, t in pend.items():
            rec = self.out.get(m)
            if rec is None:
                continue
            if rec[OID] is not None:
                single = self.outages.pop(rec[OID], None)
                if single is not None:
                    self._send(single, "closed", reason="absorbed", absorbed_into=found.mrid)
            rec[OID] = found.mrid
            found.gasped[m] = t
            reported.append(rec[ORCV])

    def _declare_feeder(self, info, start: float, decided: float, by_meter: tuple | None) -> None:
        feeder = info.mrid
        self._end_restoring(self.feeder_outage.get(feeder))
        for mrid in list(self.feeder_dts.get(feeder, {}).values()):
            self._end_restoring(mrid)
        meters: list[str] = []
        for dt in info.dts:
            d = self.topology.dt(dt, decided)
            if d is not None:
                meters.extend(d.meters)
        found = Outage(self._new_id(feeder), "feeder", feeder, feeder, info.name, info.head_meter, start, start,
                       max(decided, start), meters, len(meters), dts=list(info.dts))
        reported = []
        if by_meter is not None:
            m, t, received = by_meter
            found.gasped[m] = t
            self.out[m] = [t, found.mrid, None, feeder, received, FEEDER]
            reported.append(received)
        for dt, mrid in sorted(self.feeder_dts.pop(feeder, {}).items()):
            d = self.outages.pop(mrid)
            self.dt_outage.pop(dt, None)
            self._sets.pop(mrid, None)
            if d.announced:
                self._send(d, "closed", reason="absorbed", absorbed_into=found.mrid)
            for req in [r for r, o in self.requests.items() if o == mrid]:
                del self.requests[req]
            for m, t in d.gasped.items():
                found.gasped[m] = t
                rec = self.out.get(m)
                if rec is not None:
                    rec[OID] = found.mrid
                    reported.append(rec[ORCV])
            found.breathed.update(d.breathed)
            found.start = min(found.start, d.start)
            if dt not in info.dts:          # a DT the feeder no longer lists: keep its meters
                found.meters.extend(d.meters)
        for dt in info.dts:
            self._absorb_pending(found, dt, reported)
        found.reported = min(reported) if reported else found.start
        self.outages[found.mrid] = found
        self.feeder_outage[feeder] = found.mrid
        self._count("feeder_outages")
        self._announce(found)

    def _fire_single(self, m: str, t: float) -> None:
        rec = self.out.get(m)
        if rec is None or rec[OID] is not None or rec[T] != t:
            return
        dt, feeder = rec[ODT], rec[OFDR]
        found = Outage(self._new_id(feeder), "single", feeder, m, m, m, t, rec[ORCV], t + self.o.single_hold_s,
                       [m], 1, dts=[dt] if dt else [])
        found.gasped[m] = t
        rec[OID] = found.mrid
        self.outages[found.mrid] = found
        self._count("single_outages")
        self._announce(found)

    def _announce(self, found: Outage) -> None:
        found.announced = True
        if found.state == "held":
            found.state = "open"
        self._send(found, "created")
        if found.kind in ("dt", "feeder") and self.o.verify_meters:
            self._ask(found)

    def _ask(self, found: Outage) -> None:
        """Verification: which meters to ping.  The meters that reported out first (they confirm
        it), then, for a feeder, its DT meters, then the rest of the equipment's meters."""
        gasped_consumers = [m for m in found.gasped if m != found.equipment_meter
                            and self.out.get(m, [0, 0, 0, 0, 0, CONSUMER])[OKIND] == CONSUMER]
        chosen = sample(gasped_consumers, found.mrid, self.o.verify_meters)
        if len(chosen) < self.o.verify_meters:
            others: list[str] = []
            if found.kind == "feeder":
                for dt in found.dts:
                    d = self.topology.dt(dt, found.decided)
                    if d is not None and d.dt_meter and d.dt_meter not in found.gasped:
                        others.append(d.dt_meter)
            if len(others) < self.o.verify_meters - len(chosen):
                gasped = found.gasped
                others.extend(m for m in found.meters if m not in gasped)
            chosen += sample(others, found.mrid, self.o.verify_meters - len(chosen))
        if not chosen:
            return
        found.verify_meters = chosen
        found.verify_request = f"{found.mrid}/verify"
        self.requests[found.verify_request] = found.mrid
        self._out.append({"type": "verify", "requestId": found.verify_request, "outage": found.mrid,
                          "equipment": found.equipment, "meters": list(chosen)})

    # -- breaths ----------------------------------------------------------------------------------
    def _breath(self, e: MeterEvent, place, late: bool) -> None:
        m, t = e.meter, e.at
        back = self.last_breath.get(m)
        if back is not None and abs(t - back) <= self.o.repeat_s:
            self._count("repeat")
            return
        if back is None or t > back:
            self.last_breath[m] = t
            self.last_breath.move_to_end(m)    # the dict stays in about time order
        rec = self.out.get(m)
        if rec is None:
            # a meter that never reported out: still evidence that its equipment is back
            found = None
            fo = self.feeder_outage.get(place.feeder)
            if fo is not None:
                found = self.outages[fo]
            elif place.dt is not None and place.dt in self.dt_outage:
                found = self.outages[self.dt_outage[place.dt]]
            if found is None or t < found.start:
                self._count("breath_not_out")
                return
            found.breathed[m] = t
            self._check_restored(found, m, t)
            return
        if t < rec[T]:
            self._count("breath_before_gasp")
            return
        mrid = rec[OID]
        if mrid is None:                       # back before it became any outage: a blip
            del self.out[m]
            pend = self.pending.get(rec[ODT])
            if pend is not None:
                pend.pop(m, None)
                if not pend:
                    del self.pending[rec[ODT]]
            self._count("blips")
            return
        found = self.outages[mrid]
        found.breathed[m] = t
        del self.out[m]
        if found.kind == "single":
            pend = self.pending.get(rec[ODT])
            if pend is not None:
                pend.pop(m, None)
                if not pend:
                    del self.pending[rec[ODT]]
            found.restored_at = t
            self._finish(found, "closed", end=t, restored=1, reason="restored")
        elif found.kind == "nested":
            if all(g in found.breathed for g in found.gasped):
                found.restored_at = max(found.breathed[g] for g in found.gasped)
                self._finish(found, "closed", end=found.restored_at, restored=len(found.meters), reason="restored")
            else:
                self._send(found, "changed")
        else:
            self._check_restored(found, m, t)

    def _check_restored(self, found: Outage, m: str, t: float) -> None:
        if found.state == "restoring":
            return
        # the share counts against at least 3 meters: one consumer's breath does not restore a DT
        # outage that only its DT meter reported
        if m == found.equipment_meter or \
                len(found.breathed) >= needed(self.o.restore_share, max(len(found.gasped), 3)):
            if m == found.equipment_meter:
                at = t
            else:                              # the first breath of the cluster that made the share
                at = min(b for b in found.breathed.values() if b >= t - self.o.window_s)
            found.state = "restoring"
            found.restored_at = max(at, found.start)
            self._timer(t + self.o.restore_wait_s, "close", found.mrid, found.restored_at)

    def _close_restored(self, found: Outage) -> None:
        """Close a restored DT or feeder outage; the meters still out become nested outages,
        one per DT, backdated to this outage's start."""
        if not found.announced:
            self._announce(found)
        left: dict[str, list[str]] = {}
        for m in found.gasped:
            rec = self.out.get(m)
            if m in found.breathed or rec is None:
                continue
            if rec[OKIND] != CONSUMER:         # a DT or head meter still dead: not a customer
                del self.out[m]
                continue
            left.setdefault(rec[ODT] or "", []).append(m)
        nested = []
        for dt, meters in sorted(left.items()):
            d = self.topology.dt(dt, found.restored_at) if dt else None
            n = Outage(self._new_id(found.feeder), "nested", found.feeder, dt or found.equipment,
                       d.name if d else dt or found.equipment_name, None, found.start, found.reported,
                       found.restored_at, sorted(meters), len(meters), dts=[dt] if dt else [], parent=found.mrid)
            for m in meters:
                n.gasped[m] = found.gasped[m]
                self.out[m][OID] = n.mrid
            n.verification = found.verification
            nested.append(n)
        left_count = sum(len(v) for v in left.values())
        self._finish(found, "closed", end=found.restored_at, restored=len(found.meters) - left_count,
                     reason="restored", nested=nested[0].mrid if len(nested) == 1 else None,
                     nested_all=[n.mrid for n in nested])
        for n in nested:
            self.outages[n.mrid] = n
            self._count("nested_outages")
            self._announce(n)

    def _close_false_alarm(self, found: Outage, reason: str) -> None:
        last = found.start
        for m, t in found.gasped.items():
            self.out.pop(m, None)
            last = max(last, t)
            if t > self.last_breath.get(m, -1.0):
                self.last_breath[m] = t
                self.last_breath.move_to_end(m)         # its earlier gasps, redelivered or late, stay ignored
        self._finish(found, "closed", end=None, restored=0, reason=reason)

    def _finish(self, found: Outage, verb: str, end: float | None, restored: int, reason: str,
                nested: str | None = None, nested_all: list[str] | None = None) -> None:
        self.outages.pop(found.mrid, None)
        self._sets.pop(found.mrid, None)
        if found.verify_request:
            self.requests.pop(found.verify_request, None)
        if found.kind == "dt":
            if self.dt_outage.get(found.equipment) == found.mrid:
                del self.dt_outage[found.equipment]
            fd = self.feeder_dts.get(found.feeder)
            if fd is not None and fd.get(found.equipment) == found.mrid:
                del fd[found.equipment]
                if not fd:
                    del self.feeder_dts[found.feeder]
        elif found.kind == "feeder" and self.feeder_outage.get(found.feeder) == found.mrid:
            del self.feeder_outage[found.feeder]
        if found.kind in ("dt", "feeder"):
            self.closed_recent[found.equipment] = [found.start, end if end is not None else
                                                   max([found.start, *found.gasped.values()])]
        self._send(found, verb, end=end, restored=restored, reason=reason, nested=nested, nested_all=nested_all)

    # -- output, timers, bounds -------------------------------------------------------------------
    def _send(self, found: Outage, verb: str, end: float | None = None, restored: int | None = None,
              reason: str | None = None, absorbed_into: str | None = None, nested: str | None = None,
              nested_all: list[str] | None = None) -> None:
        now = self.watermark if self.watermark is not None else found.decided
        doc = found.document(now, self.o.momentary_s, end=end, restored=restored, reason=reason,
                             absorbed_into=absorbed_into, nested=nested)
        if nested_all:
            doc["nestedOutages"] = nested_all
        self._out.append(message(found, verb, doc))
        self._count(f"messages_{verb}")

    def _timer(self, due: float, kind: str, key: str, token: Any) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, [due, self.timer_seq, kind, key, token])

    def _count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    def _prune(self, w: float) -> None:
        """Forget what no event inside the allowed lateness can need any more.  Ids and breaths
        are kept in about the order of their time, so the old ones are popped from the front at
        each tick; a full sweep every ``allowed_lateness_s`` catches the ones that came late."""
        horizon = w - self.o.allowed_lateness_s - self.o.repeat_s
        for kept in (self.seen, self.last_breath):
            while kept:
                key = next(iter(kept))
                if kept[key] >= horizon:
                    break
                kept.popitem(last=False)
        if w - self.last_prune >= self.o.allowed_lateness_s:
            self.seen = OrderedDict((k, v) for k, v in self.seen.items() if v >= horizon)
            self.last_breath = OrderedDict((k, v) for k, v in self.last_breath.items() if v >= horizon)
            self.closed_recent = {k: v for k, v in self.closed_recent.items() if v[1] >= horizon}
            self.last_prune = w

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data (restore with ``OutageEngine.restore``)."""
        return {"version": SNAPSHOT_VERSION, "options": self.o.to_dict(),
                "partition": list(self.partition) if self.partition else None,
                "watermark": self.watermark, "seen": dict(self.seen), "lastBreath": dict(self.last_breath),
                "out": {m: list(r) for m, r in self.out.items()},
                "pending": {d: dict(p) for d, p in self.pending.items()},
                "outages": {k: _copy(v.to_dict()) for k, v in self.outages.items()},
                "dtOutage": dict(self.dt_outage), "feederOutage": dict(self.feeder_outage),
                "feederDts": {f: dict(d) for f, d in self.feeder_dts.items()},
                "closedRecent": {k: list(v) for k, v in self.closed_recent.items()},
                "requests": dict(self.requests), "timers": [list(t) for t in self.timers],
                "timerSeq": self.timer_seq, "numbers": dict(self.numbers), "stats": dict(self.stats),
                "lastPrune": self.last_prune}

    @classmethod
    def restore(cls, state: dict[str, Any], topology: Topology, options: Options | None = None) -> "OutageEngine":
        """The engine of ``snapshot()``.  ``options``: the route's options now, if they changed
        since (they apply from here on; open outages keep what was decided under the old ones)."""
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"an outage engine snapshot of version {state.get('version')!r}, "
                             f"not {SNAPSHOT_VERSION}")
        e = cls(topology, options or Options(**state["options"]),
                tuple(state["partition"]) if state.get("partition") else None)
        e.watermark = state["watermark"]
        e.seen = OrderedDict(state["seen"])
        e.last_breath = OrderedDict(state["lastBreath"])
        e.out = {m: list(r) for m, r in state["out"].items()}
        e.pending = {d: dict(p) for d, p in state["pending"].items()}
        e.outages = {k: Outage.from_dict(_copy(v)) for k, v in state["outages"].items()}
        e.dt_outage, e.feeder_outage = dict(state["dtOutage"]), dict(state["feederOutage"])
        e.feeder_dts = {f: dict(d) for f, d in state["feederDts"].items()}
        e.closed_recent = {k: list(v) for k, v in state["closedRecent"].items()}
        e.requests = dict(state["requests"])
        e.timers = [list(t) for t in state["timers"]]
        heapq.heapify(e.timers)
        e.timer_seq, e.numbers = state["timerSeq"], dict(state["numbers"])
        e.stats, e.last_prune = dict(state["stats"]), state["lastPrune"]
        return e

    # -- looking --------------------------------------------------------------------------------
    def open_outages(self) -> list[dict]:
        """The announced outages still open, as their current documents."""
        now = self.watermark
        return [o.document(now, self.o.momentary_s) for o in self.outages.values() if o.announced]

    def size(self) -> dict[str, int]:
        """How much state is held (for bounds and metrics)."""
        return {"seen": len(self.seen), "lastBreath": len(self.last_breath), "out": len(self.out),
                "pendingDts": len(self.pending), "outages": len(self.outages), "timers": len(self.timers),
                "closedRecent": len(self.closed_recent), "requests": len(self.requests)}


def _copy(d: dict) -> dict:
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in d.items()}
