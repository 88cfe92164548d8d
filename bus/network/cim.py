"""IEC 61968-9 MasterDataLinkageConfig → network changes (the meter ↔ usage point ↔ equipment part).

A linkage message creates or closes links, at ``ConfigurationEvent.effectiveDateTime``; links are
never edited in place.  What we take (docs/network-formats.md says the same):

- a UsagePoint is a consumer (its mRID is the consumer's mRID); its Meter (mRID, or the serial in
  ``Names/name``) is the consumer's meter; the Equipment it links to (``UsagePoint/Equipments/mRID``
  or a top-level ``Equipment/mRID``) is its DT;
- ``create`` of a link for a consumer the batch does not close → a ``create`` of the consumer;
- ``close`` + ``create`` of the same usage point at the same instant in one batch → a ``move``
  (other DT) and/or an ``update`` of ``meter`` (other meter: a meter replacement);
- ``close`` alone → a ``retire`` of the consumer.
What we leave: CustomerAccount, Customer, ServiceLocation, ServiceSupplier, PricingStructure, and
every link that names no usage point.  61968-9 carries no GIS sequence: the changes take the
ConfigurationEvent's createdDateTime (else effectiveDateTime) in microseconds, which only grows.
"""
from __future__ import annotations

import datetime as dt

from defusedxml import ElementTree

from bus.errors import DecodeError, ValidationError


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(node, *path: str):
    """The first descendant along ``path`` by local names (namespaces ignored)."""
    for name in path:
        node = next((child for child in node if _local(child.tag) == name), None)
        if node is None:
            return None
    return node


def _text(node, *path: str) -> str | None:
    found = _find(node, *path)
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def read_linkages(xml: bytes) -> list[dict]:
    """Each MasterDataLinkageConfig of a message (or a bare one) as {verb, effective, created,
    consumer, meter, dt, message_id}, in document order."""
    try:
        root = ElementTree.fromstring(xml)
    except Exception as exc:  # defusedxml's and expat's errors alike: not a document we read
        raise DecodeError(f"not an XML document: {str(exc)[:200]}") from exc
    verb = _text(root, "Header", "Verb")
    message_id = _text(root, "Header", "MessageID")
    payload = _find(root, "Payload") if _local(root.tag) != "MasterDataLinkageConfig" else None
    configs = [root] if payload is None else [c for c in payload if _local(c.tag) == "MasterDataLinkageConfig"]
    out = []
    for config in configs:
        effective = _text(config, "ConfigurationEvent", "effectiveDateTime")
        consumer = _text(config, "UsagePoint", "mRID")
        if verb not in ("create", "close") or not effective or not consumer:
            raise ValidationError("a MasterDataLinkageConfig needs Header/Verb create or close, "
                                  "ConfigurationEvent/effectiveDateTime and UsagePoint/mRID")
        out.append({"verb": verb, "effective": effective, "message_id": message_id, "consumer": consumer,
                    "created": _text(config, "ConfigurationEvent", "createdDateTime") or effective,
                    "meter": _text(config, "Meter", "Names", "name") or _text(config, "Meter", "mRID"),
                    "dt": _text(config, "UsagePoint", "Equipments", "mRID") or _text(config, "Equipment", "mRID"),
                    "attributes": {}})
    return out


def _sequence(text: str) -> int:
    try:
        return int(dt.datetime.fromisoformat(text).timestamp() * 1_000_000)
    except ValueError as exc:
        raise ValidationError(f"createdDateTime {text[:40]!r} is not an ISO 8601 time") from exc


def linkage_changes(linkages: list[dict]) -> list[dict]:
    """Network changes (docs/network-formats.md) from a batch of linkages, a close and a create of
    the same usage point at the same instant paired into one move or meter update."""
    closes = {(l["consumer"], l["effective"]): l for l in linkages if l["verb"] == "close"}
    creates = {(l["consumer"], l["effective"]) for l in linkages if l["verb"] == "create"}
    changes = []
    for n, link in enumerate(linkages):
        key = (link["consumer"], link["effective"])
        base = {"changeId": f"{link['message_id'] or 'mdlc'}-{n}", "sequence": _sequence(link["created"]) + n,
                "effectiveFrom": link["effective"], "type": "consumer", "mrid": link["consumer"]}
        if link["verb"] == "close":
            if key not in creates:
                changes.append({**base, "kind": "retire"})
            continue
        closed = closes.get(key)
        if closed is None:
            changes.append({**base, "kind": "create", "parent": link["dt"], "attributes": {"meter": link["meter"]}})
            continue
        if link["dt"] and link["dt"] != closed["dt"]:
            changes.append({**base, "kind": "move", "parent": link["dt"]})
        if link["meter"] and link["meter"] != closed["meter"]:
            changes.append({**base, "changeId": base["changeId"] + "-meter", "sequence": base["sequence"] + 1,
                            "kind": "update", "attributes": {"meter": link["meter"]}})
    return changes
