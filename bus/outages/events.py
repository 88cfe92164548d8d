"""The outage correlator's input: one meter's power-fail (IS 15959 101, last gasp) or
power-restored (102, first breath) event, normalized from the canonical EndDeviceEvents the
alarm routes already publish (docs/canonical-model.md).

A canonical event carries ``meter``, ``eventType`` (CIM ``3.26.0.85`` / ``3.26.0.216``), ``isCode``
(101 / 102), ``createdDateTime`` (when the meter logged it: the **event time**),
``receivedDateTime`` (when the HES got it) and, from the alarm decoders, ``alarmId`` (the HES's
own id).  The document's ``source`` is the HES.

The event's id (``message_id``) is what makes a redelivered event a no-op in the engine: the
HES's ``alarmId`` when there is one (prefixed by the HES, since two HES may number alike), else
``hes:meter:code:createdDateTime``, which a redelivery repeats exactly.
"""
from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["POWER_FAIL", "POWER_RESTORED", "MeterEvent", "from_canonical", "rows_of", "epoch", "iso"]

POWER_FAIL = 101        # last gasp
POWER_RESTORED = 102    # first breath
# the CIM EndDeviceEventTypes of transformers/data/is15959_events.yaml for the two codes
CIM_TYPES = {"3.26.0.85": POWER_FAIL, "3.26.0.216": POWER_RESTORED}
CODES = (POWER_FAIL, POWER_RESTORED)


@dataclass(slots=True, eq=True)
class MeterEvent:
    """One last gasp (101) or first breath (102).  Times are epoch seconds, UTC.  Never changed
    once made (not ``frozen``: a frozen dataclass's ``__init__`` costs a third of the router's
    time per event in a storm)."""

    meter: str
    code: int
    at: float                    # event time: when the meter logged it
    received: float | None = None  # when the HES received it (None: unknown)
    hes: str = ""
    message_id: str = ""

    def __post_init__(self) -> None:
        if not self.message_id:
            self.message_id = f"{self.hes}:{self.meter}:{self.code}:{self.at:.3f}"

    @property
    def is_gasp(self) -> bool:
        return self.code == POWER_FAIL

    def to_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "code": self.code, "at": self.at, "received": self.received,
                "hes": self.hes, "messageId": self.message_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MeterEvent":
        return cls(d["meter"], int(d["code"]), float(d["at"]), d.get("received"), d.get("hes", ""),
                   d.get("messageId", ""))


_INSTANTS: dict[str, float] = {}


def epoch(text: str) -> float:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the canonical instant; an ISO time with an offset is read too)
    as epoch seconds.  A burst repeats the same few seconds, so they are remembered (bounded)."""
    found = _INSTANTS.get(text)
    if found is not None:
        return found
    if len(text) == 20 and text[-1] == "Z":
        value = float(calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                                       int(text[11:13]), int(text[14:16]), int(text[17:19]), 0, 0, 0)))
    else:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(f"an instant without a UTC offset: {text!r}")
        value = moment.timestamp()
    if len(_INSTANTS) > 100_000:
        _INSTANTS.clear()
    _INSTANTS[text] = value
    return value


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, as the canonical form)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_of(event: dict[str, Any]) -> int | None:
    """101 / 102 from ``isCode``, else from the CIM ``eventType``; None for any other event."""
    code = event.get("isCode")
    if code in CODES:
        return code
    return CIM_TYPES.get(event.get("eventType")) if code is None else None


def rows_of(doc: dict[str, Any]) -> Iterator[list]:
    """The outage events of one canonical EndDeviceEvents document as rows ``[meter, code, at,
    received, hes, message_id]`` (the router's form: no object per event); others are skipped, and
    so is an event whose meter or time is unusable: the correlator never fails on one event."""
    hes = str(doc.get("source") or "")
    for ev in doc.get("EndDeviceEvent") or ():
        if type(ev) is not dict:
            continue
        code = code_of(ev)
        meter = ev.get("meter")
        if code is None or type(meter) is not str or not meter:
            continue
        try:
            at = epoch(ev["createdDateTime"])
            received = epoch(ev["receivedDateTime"]) if ev.get("receivedDateTime") else None
        except (KeyError, TypeError, ValueError):
            continue
        alarm_id = ev.get("alarmId")
        message_id = f"{hes}:{alarm_id}" if type(alarm_id) is str and alarm_id else f"{hes}:{meter}:{code}:{at:.3f}"
        yield [meter, code, at, received, hes, message_id]


def from_canonical(doc: dict[str, Any]) -> Iterator[MeterEvent]:
    """The outage events of one canonical EndDeviceEvents document (``rows_of``) as MeterEvents."""
    for row in rows_of(doc):
        yield MeterEvent(*row)


def from_documents(docs: Iterable[dict[str, Any]]) -> list[MeterEvent]:
    return [e for doc in docs for e in from_canonical(doc)]
