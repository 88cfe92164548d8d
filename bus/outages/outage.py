"""One outage's state, and the IEC 61968 ``Outage`` document the engine sends for it.

Kinds: ``feeder`` (equipment a Feeder), ``dt`` (a PowerTransformer), ``single`` (one consumer
meter: a single-customer outage, equipment the meter's UsagePoint by its serial) and ``nested``
(meters still out when their parent outage was restored: equipment their DT, ``parentOutage``
the parent, start backdated to the parent's start as OMS do).

States: ``held`` (decided, not yet announced: a DT outage waiting ``feeder_hold_s`` for its
feeder), ``open`` (announced), ``restoring`` (restoration seen, waiting ``restore_wait_s`` for
stragglers), then closed and forgotten (the ``closed`` message is its last word).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bus.outages.events import iso

__all__ = ["Outage", "EQUIPMENT_KIND", "message"]

EQUIPMENT_KIND = {"feeder": "Feeder", "dt": "PowerTransformer", "nested": "PowerTransformer",
                  "single": "UsagePoint"}


@dataclass
class Outage:
    mrid: str
    kind: str                       # feeder | dt | single | nested
    feeder: str
    equipment: str                  # feeder / DT mRID, or the meter serial of a single
    equipment_name: str
    equipment_meter: str | None     # head meter / DT meter (its gasp/breath decides)
    start: float                    # actualPeriod.start (event time)
    reported: float                 # reportedStartTime: the first report's receipt
    decided: float                  # event time the rule fired
    meters: list[str]               # affected meters (estimated: the whole equipment)
    original: int                   # originalMetersAffected
    dts: list[str] = field(default_factory=list)          # feeder: its DTs; dt/nested/single: [its DT]
    gasped: dict[str, float] = field(default_factory=dict)    # meters that reported out, when
    breathed: dict[str, float] = field(default_factory=dict)  # meters that reported back, when
    state: str = "held"
    announced: bool = False
    restored_at: float | None = None
    verification: str = "estimated"     # estimated | verified
    verify_request: str | None = None
    verify_meters: list[str] = field(default_factory=list)
    verify_answers: dict[str, bool] = field(default_factory=dict)
    parent: str | None = None
    seq: int = 0                        # messages sent for it so far

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Outage":
        return cls(**d)

    def duration_kind(self, now: float | None, momentary_s: float) -> str | None:
        """momentary / sustained (IEEE 1366), None while an open outage is younger than the line."""
        end = self.restored_at
        if end is not None:
            return "momentary" if end - self.start < momentary_s else "sustained"
        if now is not None and now - self.start >= momentary_s:
            return "sustained"
        return None

    def document(self, now: float | None, momentary_s: float, end: float | None = None,
                 restored: int | None = None, reason: str | None = None, absorbed_into: str | None = None,
                 nested: str | None = None) -> dict[str, Any]:
        """The CIM Outage (IEC 61968 ``Outage`` with the bus's few extensions).  ``restored``:
        customersRestored (default: the meters that reported back); ``metersAffected`` is what
        is still out of ``meters``."""
        if restored is None:
            restored = sum(1 for m in self.breathed if m in self.gasped and m != self.equipment_meter)
        doc: dict[str, Any] = {
            "mRID": self.mrid,
            "kind": self.kind,
            "Equipment": {"mRID": self.equipment, "name": self.equipment_name, "kind": EQUIPMENT_KIND[self.kind]},
            "feeder": self.feeder,
            "reportedStartTime": iso(self.reported),
            "actualPeriod": {"start": iso(self.start), "end": iso(end)},
            "metersAffected": max(0, len(self.meters) - restored),
            "originalMetersAffected": self.original,
            "customersRestored": restored,
            "metersReported": len(self.gasped),
            "outageKind": self.verification,
            "durationKind": self.duration_kind(now, momentary_s) if reason in (None, "restored") else None,
            "meters": sorted(self.meters),
        }
        if self.parent:
            doc["parentOutage"] = self.parent
        if self.verify_meters:
            doc["verification"] = {"asked": list(self.verify_meters),
                                   "alive": sorted(m for m, a in self.verify_answers.items() if a),
                                   "dead": sorted(m for m, a in self.verify_answers.items() if not a)}
        if reason:
            doc["closedReason"] = reason
        if absorbed_into:
            doc["absorbedInto"] = absorbed_into
        if nested:
            doc["nestedOutage"] = nested
        return doc


def message(outage: Outage, verb: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One output message: verb created / changed / closed, a message id stable across a
    restart (the outage's mRID and its message number), the Outage document."""
    outage.seq += 1
    return {"type": "outage", "verb": verb, "noun": "Outage", "messageId": f"{outage.mrid}/{outage.seq}",
            "Outage": doc}
