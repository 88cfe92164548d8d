"""Consumer paths → billing-2's IEC 61968-100 EventMessage of a UsagePointConfig
(docs/network-billing-formats.md, "billing-2"): one UsagePoint per consumer path.

Written as text, element by element, with every value escaped (``xml.sax.saxutils.escape``):
the same document ElementTree wrote, at an eighth of its CPU (building a tree of 20 elements per
consumer cost 0.14 ms of the delivery process per consumer; a DT move of 10,000 consumers, 1.4 s).
"""
from __future__ import annotations

from xml.sax.saxutils import escape

from bus.transform import Outbound, TransformContext
from transformers.cim import utc_now
from transformers.instants import NoOptions

MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
UPC_NS = "http://iec.ch/TC57/2011/UsagePointConfig#"
EQUIPMENT_KINDS = (("DistributionTransformer", "dt"), ("Feeder", "feeder"), ("Substation", "substation"))


def _el(tag: str, value) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def usage_point(p: dict) -> str:
    """One consumer path as a UsagePoint; a null field is left out."""
    parts = ["<UsagePoint>", _el("mRID", p["consumer"]), _el("version", int(p["version"])),
             _el("isRetired", "true" if p.get("retired") else "false")]
    if p.get("category"):
        parts.append(_el("customerCategory", p["category"]))
    if p.get("consumerNo"):
        parts.append(f"<Names>{_el('name', p['consumerNo'])}<NameType><name>ConsumerNumber</name></NameType></Names>")
    parts.append(f"<ConfigurationEvent>{_el('mRID', p['changeId'])}"
                 f"{_el('effectiveDateTime', p['effectiveFrom'])}</ConfigurationEvent>")
    if p.get("meter"):
        parts.append(f"<Meter>{_el('mRID', p['meter'])}</Meter>")
    location = "".join(_el(name, p[name]) for name in ("circle", "division", "subdivision") if p.get(name))
    parts.append(f"<ServiceLocation>{location}</ServiceLocation>" if location else "<ServiceLocation />")
    for kind, key in EQUIPMENT_KINDS:
        if p.get(key):
            parts.append(f'<Equipments kind="{kind}">{_el("mRID", p[key])}</Equipments>')
    parts.append("</UsagePoint>")
    return "".join(parts)


class BillingNetworkXml:
    """``billing_network_xml``: an EventMessage (changed UsagePointConfig), ``application/xml``."""

    name = "billing_network_xml"
    options_schema = NoOptions

    def __call__(self, paths: list[dict], context: TransformContext) -> Outbound:
        header = "".join(_el(tag, text) for tag, text in (
            ("Verb", "changed"), ("Noun", "UsagePointConfig"), ("MessageID", context.message_id),
            ("Timestamp", utc_now()), ("Source", context.source_system)))
        body = "".join([
            "<?xml version='1.0' encoding='utf-8'?>\n",
            f'<EventMessage xmlns="{MESSAGE_NS}"><Header>{header}</Header>',
            f'<Payload><UsagePointConfig xmlns="{UPC_NS}">',
            *(usage_point(p) for p in paths),
            "</UsagePointConfig></Payload></EventMessage>"]).encode("utf-8")
        return Outbound(body=body, content_type="application/xml", noun="UsagePointConfig", empty=not paths)
