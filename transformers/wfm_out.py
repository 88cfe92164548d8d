"""Meter health alarms → workforce-management work items (``to_wfm_work_items``).

One work item per ``(meter, problem)``: the occurrence and the restoration of
one IS 15959 condition share a problem (``voltage-unbalance`` for codes 11 and
12), so a restoration updates the item the occurrence opened instead of opening
a new one.  The bus keeps no state: an item is computed from the events of one
message only, and the WFM, which keeps one open item per key, merges what it
receives.  A redelivery therefore sends the same items in the same bytes (only
the header ``Timestamp`` differs).  Format and rules: docs/wfm-fms-formats.md.

The helpers here (event checks, severity order, event order, JSON writing) are
shared with ``transformers.fms_out``.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable

import orjson

from bus.canonical import END_DEVICE_EVENTS
from bus.canonical.fields import is_instant
from bus.errors import ValidationError
from bus.transform import Outbound, TransformContext
from transformers import catalogue
from transformers.cim import ITEMS_KEY, message_header, noun_of
from transformers.instants import NoOptions

WORK_ITEMS = "WorkItems"
NO_SEVERITY = "info"  # what an event without ``severity`` counts as

# "voltage unbalance - occurrence", "R-phase current reverse - occurrence (reverse energy)"
_PHASE = re.compile(r"\s+-\s+(occurrence|restoration)\b.*$", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")

_strict = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_json(message: dict, noun: str) -> bytes:
    """Compact JSON; ``ValidationError`` for what JSON cannot hold (NaN, sets, datetimes).

    orjson writes NaN as null, so a body with a null (canonical documents hold
    none) goes through the strict stdlib encoder, which refuses it.
    """
    try:
        body = orjson.dumps(message)
        return _strict(message).encode("utf-8") if b"null" in body else body
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{noun} cannot be written as JSON: {exc}") from exc


def events_of(doc: Any) -> list[dict]:
    """The events of a canonical EndDeviceEvents document, each with a meter and a created instant.

    ``ValidationError`` (dead letter) for another noun or an event an encoder
    cannot group; the events are otherwise passed on unchanged.
    """
    noun = noun_of(doc)
    if noun != END_DEVICE_EVENTS:
        raise ValidationError(f"expected an {END_DEVICE_EVENTS} document, got {noun}")
    events = doc[ITEMS_KEY[noun]]
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise ValidationError(f"EndDeviceEvent[{i}] is not an object")
        if type(ev.get("meter")) is not str or not ev["meter"]:
            raise ValidationError(f"EndDeviceEvent[{i}].meter {ev.get('meter')!r} must be a non-empty string")
        if type(ev.get("eventType")) is not str or not ev["eventType"]:
            raise ValidationError(f"EndDeviceEvent[{i}].eventType {ev.get('eventType')!r} "
                                  "must be a non-empty string")
        if not is_instant(ev.get("createdDateTime")):
            raise ValidationError(f"EndDeviceEvent[{i}].createdDateTime {ev.get('createdDateTime')!r} "
                                  "is not a UTC instant YYYY-MM-DDTHH:MM:SSZ")
    return events


@lru_cache(maxsize=None)
def severity_levels() -> tuple[str, ...]:
    """Severity levels, most severe first, as ``is15959_events.yaml`` lists them."""
    return catalogue._severity_rule(catalogue._load("is15959_events.yaml"))[0]


def most_severe(events: Iterable[dict]) -> str:
    """The most severe ``severity`` of ``events`` (absent = info); unknown levels rank last."""
    levels = severity_levels()
    found = {ev.get("severity", NO_SEVERITY) for ev in events}
    return min(found, key=lambda s: (levels.index(s) if s in levels else len(levels), str(s)))


def _code_name(ev: dict) -> str | None:
    code = ev.get("isCode")
    if type(code) is not int:
        return None
    known = catalogue.is15959_events().get(code)
    return known.name if known else None


def is_restoration(ev: dict) -> bool:
    """True for an event whose IS 15959 name is a ``... - restoration``."""
    name = _code_name(ev)
    match = _PHASE.search(name) if name else None
    return bool(match) and match.group(1).lower() == "restoration"


def problem_of(ev: dict) -> str:
    """Slug of the IS 15959 name without occurrence/restoration; the eventType if there is no known code."""
    name = _code_name(ev)
    if name is None:
        return ev["eventType"]
    return _NOT_SLUG.sub("-", _PHASE.sub("", name).lower()).strip("-") or ev["eventType"]


def event_order(ev: dict) -> tuple:
    """Order of events: by createdDateTime; in the same second an occurrence before its
    restoration, then by the other identifying fields, so the order never depends on input order."""
    return (ev["createdDateTime"], is_restoration(ev), str(ev.get("receivedDateTime", "")),
            ev["eventType"], str(ev.get("alarmId", "")), str(ev.get("isCode", "")))


def work_items(events: list[dict]) -> list[dict]:
    """Work items of ``events`` grouped by ``(meter, problem)``, ordered by key."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for ev in events:
        groups.setdefault((ev["meter"], problem_of(ev)), []).append(ev)
    items = []
    for (meter, problem), group in groups.items():
        group = sorted(group, key=event_order)
        items.append({
            "key": f"{meter}:{problem}", "meter": meter, "problem": problem,
            "severity": most_severe(group),
            "firstSeen": group[0]["createdDateTime"], "lastSeen": group[-1]["createdDateTime"],
            "restored": is_restoration(group[-1]),
            "events": group,
        })
    return sorted(items, key=lambda item: (item["key"], item["meter"]))


class WfmWorkItemsEncoder:
    """``to_wfm_work_items``: EndDeviceEvents → ``{"Header", "WorkItems": [...]}`` JSON Outbound.

    Every event given is used (the subscription normally selects the health
    class).  A document with no events gives an ``empty`` Outbound: the worker
    does not call the WFM for it.
    """

    name = "to_wfm_work_items"
    options_schema = NoOptions

    def __call__(self, doc: dict, context: TransformContext) -> Outbound:
        events = events_of(doc)
        message = {"Header": message_header(WORK_ITEMS, context), WORK_ITEMS: work_items(events)}
        return Outbound(body=encode_json(message, WORK_ITEMS), content_type="application/json",
                        noun=WORK_ITEMS, events=len(events), empty=not events)
