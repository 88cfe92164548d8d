"""Consumer paths → billing-2's IEC 61968-100 EventMessage of a UsagePointConfig
(docs/network-billing-formats.md, "billing-2"): one UsagePoint per consumer path."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from bus.transform import Outbound, TransformContext
from transformers.cim import utc_now

MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
UPC_NS = "http://iec.ch/TC57/2011/UsagePointConfig#"
EQUIPMENT_KINDS = (("DistributionTransformer", "dt"), ("Feeder", "feeder"), ("Substation", "substation"))


def _text(parent: ET.Element, tag: str, value) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(value)
    return el


def usage_point(config: ET.Element, p: dict) -> None:
    """One consumer path as a UsagePoint; a null field is left out."""
    up = ET.SubElement(config, "UsagePoint")
    _text(up, "mRID", p["consumer"])
    _text(up, "version", int(p["version"]))
    _text(up, "isRetired", "true" if p.get("retired") else "false")
    if p.get("category"):
        _text(up, "customerCategory", p["category"])
    if p.get("consumerNo"):
        names = ET.SubElement(up, "Names")
        _text(names, "name", p["consumerNo"])
        _text(ET.SubElement(names, "NameType"), "name", "ConsumerNumber")
    event = ET.SubElement(up, "ConfigurationEvent")
    _text(event, "mRID", p["changeId"])
    _text(event, "effectiveDateTime", p["effectiveFrom"])
    if p.get("meter"):
        _text(ET.SubElement(up, "Meter"), "mRID", p["meter"])
    location = ET.SubElement(up, "ServiceLocation")
    for name in ("circle", "division", "subdivision"):
        if p.get(name):
            _text(location, name, p[name])
    for kind, key in EQUIPMENT_KINDS:
        if p.get(key):
            _text(ET.SubElement(up, "Equipments", kind=kind), "mRID", p[key])


class BillingNetworkXml:
    """``billing_network_xml``: an EventMessage (changed UsagePointConfig), ``application/xml``."""

    name = "billing_network_xml"

    def __call__(self, paths: list[dict], context: TransformContext) -> Outbound:
        root = ET.Element("EventMessage", xmlns=MESSAGE_NS)
        header = ET.SubElement(root, "Header")
        for tag, text in (("Verb", "changed"), ("Noun", "UsagePointConfig"), ("MessageID", context.message_id),
                          ("Timestamp", utc_now()), ("Source", context.source_system)):
            _text(header, tag, text)
        config = ET.SubElement(ET.SubElement(root, "Payload"), "UsagePointConfig", xmlns=UPC_NS)
        for p in paths:
            usage_point(config, p)
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return Outbound(body=body, content_type="application/xml", noun="UsagePointConfig", empty=not paths)
