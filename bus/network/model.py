"""What a network change is, read and checked on its own (no database): the structural half of
validation.  The other half (parent exists at effectiveFrom, meter free, not stale ...) needs the
store and lives in ``apply.py``; both report with the same ``Reason`` codes.

A change that cannot be read is refused with ``Reason.INVALID`` and a sentence naming the field,
never an exception: one bad change must not cost the good ones beside it their place.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from bus.errors import DecodeError, ValidationError

# the hierarchy: each type hangs under exactly one parent type
PARENT_TYPE: dict[str, str | None] = {"substation": None, "feeder": "substation", "dt": "feeder", "consumer": "dt"}
CHILD_TYPE: dict[str, str | None] = {"substation": "feeder", "feeder": "dt", "dt": "consumer", "consumer": None}
# the attribute naming an element's own meter serial (a DT meter and a feeder-head meter are meters too)
METER_ATTRIBUTE = {"consumer": "meter", "dt": "dt_meter", "feeder": "head_meter"}
KINDS = ("create", "update", "move", "retire")

# limits: generous for any GIS, small enough that one document cannot fill memory or the store
MRID_MAX = 128
CHANGE_ID_MAX = 128
NAME_MAX = 256
ATTRIBUTES_MAX = 64
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 1024
SEQUENCE_MAX = 2**63 - 1
TIME_TEXT_MAX = 64


class Reason(str, enum.Enum):
    """Why a change was refused (or acknowledged without being applied: DUPLICATE)."""

    INVALID = "INVALID"                      # a field missing, of the wrong JSON type, too long, unknown kind/type
    DUPLICATE = "DUPLICATE"                  # this changeId was applied before: acknowledged, not applied twice
    STALE = "STALE"                          # sequence not newer than the last one applied for the element
    EXISTS = "EXISTS"                        # create of an mRID the store already knows (mRIDs are never reused)
    UNKNOWN_ELEMENT = "UNKNOWN_ELEMENT"      # update/move/retire of an element that does not exist at effectiveFrom
    WRONG_TYPE = "WRONG_TYPE"                # the change names another type than the element has
    UNKNOWN_PARENT = "UNKNOWN_PARENT"        # the parent does not exist at effectiveFrom
    WRONG_PARENT_TYPE = "WRONG_PARENT_TYPE"  # e.g. a consumer under a feeder
    CYCLE = "CYCLE"                          # the element would end up among its own ancestors
    METER_IN_USE = "METER_IN_USE"            # the meter serial belongs to another live element
    HAS_CHILDREN = "HAS_CHILDREN"            # retire of an element with live children
    BACKDATED = "BACKDATED"                  # effectiveFrom before the element's latest change: history is not rewritten


# slots, not frozen: a snapshot import makes a million of each, and a frozen dataclass's
# __init__ costs four times as much; neither is changed after it is made
@dataclass(slots=True)
class Change:
    index: int            # position in its document (for the reply's xpath)
    change_id: str
    sequence: int
    effective_from: float  # epoch seconds
    effective_text: str    # as the GIS wrote it (offset kept), echoed in consumer paths
    kind: str
    type: str
    mrid: str
    parent: str | None
    name: str | None
    attributes: dict[str, Any]
    meter: str | None = None  # the meter serial this change gives the element, if it names one


@dataclass(slots=True)
class Outcome:
    index: int
    change_id: str | None
    mrid: str | None
    status: str                # applied | duplicate | refused
    code: Reason | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        out = {"index": self.index, "changeId": self.change_id, "mrid": self.mrid, "status": self.status}
        if self.code:
            out.update(code=self.code.value, reason=self.reason)
        return out

    def as_error(self) -> dict:
        """The IEC 61968-100 Reply ``Error`` entry naming this change (for a PARTIAL reply)."""
        return {"code": self.code.value if self.code else "", "level": "ERROR" if self.status == "refused" else "INFO",
                "reason": self.reason, "details": self.change_id or "",
                "xpath": f"Payload.changes[{self.index}]"}


def applied(change: Change) -> Outcome:
    return Outcome(change.index, change.change_id, change.mrid, "applied")


def refused(change: Change, code: Reason, reason: str) -> Outcome:
    status = "duplicate" if code is Reason.DUPLICATE else "refused"
    return Outcome(change.index, change.change_id, change.mrid, status, code, reason)


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)
    updates: int = 0  # consumer-path updates written to the outbox

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "refused"]

    @property
    def result(self) -> str:
        """OK | PARTIAL | FAILED, as an IEC 61968-100 Reply says it."""
        bad = len(self.refused)
        return "OK" if bad == 0 else ("FAILED" if bad == len(self.outcomes) else "PARTIAL")

    def summary(self) -> dict:
        return {"result": self.result, "applied": self.count("applied"), "duplicate": self.count("duplicate"),
                "refused": len(self.refused), "updates": self.updates}


# -- reading ------------------------------------------------------------------------------------
class _Invalid(Exception):
    pass


def _text(raw: dict, key: str, limit: int, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"{key} must be a non-empty string" + ("" if value is None else f", not {_kind(value)}"))
    if len(value) > limit:
        raise _Invalid(f"{key} is {len(value):,} characters long (at most {limit})")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", str: "a string", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


@functools.lru_cache(maxsize=4096)  # a document's changes mostly share a few instants
def parse_time(text: str) -> float:
    """ISO 8601 with a UTC offset ('Z' or +05:30) → epoch seconds; a time without an offset is
    refused: a GIS in IST and a bus in UTC would otherwise disagree by 5.5 hours."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Invalid(f"effectiveFrom {text[:40]!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise _Invalid(f"effectiveFrom {text!r} has no UTC offset (e.g. 2026-11-03T02:00:00+05:30)")
    return moment.timestamp()


_INT64 = 2 ** 63


def _attributes(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _Invalid(f"attributes must be an object, not {_kind(raw)}")
    if len(raw) > ATTRIBUTES_MAX:
        raise _Invalid(f"attributes has {len(raw):,} keys (at most {ATTRIBUTES_MAX})")
    for key, value in raw.items():
        kind = type(value)
        if ((kind is int and -_INT64 <= value < _INT64) or (kind is str and len(value) <= ATTRIBUTE_VALUE_MAX)) \
                and type(key) is str and len(key) <= ATTRIBUTE_KEY_MAX:
            continue  # the common case, checked in one line
        if not isinstance(key, str):
            raise _Invalid(f"attribute names are strings, not {_kind(key)}")
        if len(key) > ATTRIBUTE_KEY_MAX:
            raise _Invalid(f"an attribute name is {len(key):,} characters long (at most {ATTRIBUTE_KEY_MAX})")
        if isinstance(value, (dict, list)):
            raise _Invalid(f"attribute {key!r} must be a string, number, boolean or null, not {_kind(value)}")
        if isinstance(value, str) and len(value) > ATTRIBUTE_VALUE_MAX:
            raise _Invalid(f"attribute {key!r} is {len(value):,} characters long (at most {ATTRIBUTE_VALUE_MAX})")
        if kind is int and not -_INT64 <= value < _INT64:  # the store's JSON (orjson) writes 64-bit integers only
            raise _Invalid(f"attribute {key!r} is an integer beyond 64 bits; send it as a string")
        if isinstance(value, float) and value != value:
            raise _Invalid(f"attribute {key!r} is NaN")
    return raw


_KINDS = frozenset(KINDS)


def _fast(raw: Any, index: int) -> Change | None:
    """The common well-formed change, checked with few calls (a snapshot import is a million of
    them); None sends anything unusual to the full check, which also says what is wrong."""
    if type(raw) is not dict:
        return None
    get = raw.get
    change_id, mrid, sequence, kind, type_ = get("changeId"), get("mrid"), get("sequence"), get("kind"), get("type")
    text, parent, name, attributes = get("effectiveFrom"), get("parent"), get("name"), get("attributes")
    if not (type(change_id) is str and 0 < len(change_id) <= CHANGE_ID_MAX and type(mrid) is str
            and 0 < len(mrid) <= MRID_MAX and type(sequence) is int and 0 <= sequence <= SEQUENCE_MAX
            and type(kind) is str and kind in _KINDS and type(type_) is str and type_ in PARENT_TYPE
            and type(text) is str and len(text) <= TIME_TEXT_MAX and name is None and type(attributes) is dict
            and (parent is None or (type(parent) is str and 0 < len(parent) <= MRID_MAX))
            and mrid.strip() and change_id.strip()):
        return None
    if kind in ("create", "move") and PARENT_TYPE[type_] and parent is None or kind == "move" and parent is None:
        return None
    if len(attributes) > ATTRIBUTES_MAX:
        return None
    for key, value in attributes.items():
        if not (((type(value) is int and -_INT64 <= value < _INT64)
                 or (type(value) is str and len(value) <= ATTRIBUTE_VALUE_MAX))
                and type(key) is str and len(key) <= ATTRIBUTE_KEY_MAX):
            return None
    meter_key = METER_ATTRIBUTE.get(type_)
    meter = attributes.get(meter_key) if meter_key else None
    if meter is not None and not (type(meter) is str and 0 < len(meter) <= MRID_MAX and meter.strip()):
        return None
    if type_ == "consumer" and kind == "create" and not meter:
        return None
    try:
        effective_from = parse_time(text)
    except _Invalid:
        return None
    return Change(index, change_id, sequence, effective_from, text, kind, type_, mrid, parent, None, attributes,
                  meter)


def parse_change(raw: Any, index: int) -> Change | Outcome:
    """One entry of ``Payload.changes``: a Change, or an INVALID Outcome saying what is wrong.  A
    Change is taken as it is: the bus's own snapshot diff makes them from rows it has checked."""
    if type(raw) is Change:
        return raw if raw.index == index else dataclasses.replace(raw, index=index)
    change = _fast(raw, index)
    if change is not None:
        return change
    change_id = mrid = None
    try:
        if not isinstance(raw, dict):
            raise _Invalid(f"a change must be an object, not {_kind(raw)}")
        change_id = _text(raw, "changeId", CHANGE_ID_MAX)
        mrid = _text(raw, "mrid", MRID_MAX)
        sequence = raw.get("sequence")
        if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= SEQUENCE_MAX:
            raise _Invalid("sequence must be a whole number from 0 to 2^63-1")
        kind = _text(raw, "kind", 16)
        if kind not in KINDS:
            raise _Invalid(f"kind {kind[:20]!r} is not one of {', '.join(KINDS)}")
        type_ = _text(raw, "type", 16)
        if type_ not in PARENT_TYPE:
            raise _Invalid(f"type {type_[:20]!r} is not one of {', '.join(PARENT_TYPE)}")
        effective_text = _text(raw, "effectiveFrom", TIME_TEXT_MAX)
        effective_from = parse_time(effective_text)
        parent = _text(raw, "parent", MRID_MAX, required=False)
        if kind in ("create", "move") and PARENT_TYPE[type_] and parent is None:
            raise _Invalid(f"a {kind} of a {type_} needs its parent (a {PARENT_TYPE[type_]})")
        if kind == "move" and PARENT_TYPE[type_] is None:
            raise _Invalid("a substation has no parent to move to")
        name = _text(raw, "name", NAME_MAX, required=False)
        attributes = _attributes(raw.get("attributes"))
        meter_key = METER_ATTRIBUTE.get(type_)
        meter = attributes.get(meter_key) if meter_key else None
        if meter is not None and (not isinstance(meter, str) or not meter.strip() or len(meter) > MRID_MAX):
            raise _Invalid(f"attribute {meter_key} must be a meter serial (a string of 1 to {MRID_MAX} characters)")
        if kind == "create" and type_ == "consumer" and not attributes.get("meter"):
            raise _Invalid("a consumer is created with its meter serial (attributes.meter)")
        if kind == "update" and type_ == "consumer" and "meter" in attributes and not attributes["meter"]:
            raise _Invalid("a consumer's meter is replaced, never removed (retire the consumer instead)")
    except _Invalid as exc:
        return Outcome(index, change_id, mrid, "refused", Reason.INVALID, str(exc))
    return Change(index, change_id, sequence, effective_from, effective_text, kind, type_, mrid, parent, name,
                  attributes, meter)


def read_document(data: bytes | str) -> tuple[list, dict]:
    """The ``changes`` list of a change document (an IEC 61968-100 message, or a bare
    ``{"changes": [...]}``) and its Header ({} if none), or DecodeError / ValidationError
    saying why not.  The changes are not checked here: ``parse_change`` does, one by one."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested beyond Python's stack
        raise DecodeError(f"not a JSON document: {str(exc)[:200] or 'nested too deeply'}") from exc
    if not isinstance(document, dict):
        raise ValidationError(f"a change document is an object, not {_kind(document)}")
    if "Payload" in document and "changes" in document:  # which would it be? neither is guessed
        raise ValidationError("a change document has Payload.changes or a top-level changes list, not both")
    payload = document.get("Payload", document)
    if not isinstance(payload, dict) or not isinstance(payload.get("changes"), list):
        raise ValidationError("a change document has Payload.changes, a list of changes")
    header = document.get("Header") or {}
    if not isinstance(header, dict):
        raise ValidationError(f"Header must be an object, not {_kind(header)}")
    if header.get("Noun") not in (None, "NetworkChanges"):
        raise ValidationError(f"Header.Noun is {str(header.get('Noun'))[:40]!r}, not NetworkChanges")
    return payload["changes"], header
