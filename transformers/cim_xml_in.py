"""IEC 61968-9 MeterReadings XML (bare or in an IEC 61968-100 message) → canonical.

Elements are matched by namespace URI, never by prefix.  Parsing goes through
defusedxml with DTDs forbidden: a document with a DTD, entity or external
reference is refused whole and nothing in it is expanded or fetched.
"""
from __future__ import annotations

import re
from typing import IO, Iterator
from xml.etree.ElementTree import Element, ParseError, tostring

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException

from bus.canonical import METER_READINGS
from bus.canonical.fields import QUALITY, READING_TYPE
from bus.documents import MAX_DEPTH
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.cim import MESSAGE_NS, METER_READINGS_NS, qname
from transformers.gc_pause import gc_paused
from transformers.instants import LocalTimeOptions, local_zone, utc_instant

MR = METER_READINGS_NS
METER_READINGS_TAG = qname(MR, "MeterReadings")
METER_READING_TAG = qname(MR, "MeterReading")
MESSAGE_TAGS = {qname(MESSAGE_NS, t) for t in ("RequestMessage", "EventMessage", "ResponseMessage")}
_INTERVAL_BLOCK, _INTERVAL_READING = qname(MR, "IntervalBlocks"), qname(MR, "IntervalReadings")
_READING, _READING_TYPE = qname(MR, "Readings"), qname(MR, "ReadingType")
_TIME, _VALUE = qname(MR, "timeStamp"), qname(MR, "value")
_QUALITIES, _QUALITY_TYPE = qname(MR, "ReadingQualities"), qname(MR, "ReadingQualityType")
_METER_IDS = (qname(MR, "Meter", "mRID"), qname(MR, "Meter", "Names", "name"))
_TYPE_MRID = qname(MR, "ReadingType", "mRID")
# a value as XML Schema writes an xs:double, in ASCII digits, between XML blanks: float() alone
# also reads Arabic-Indic or full-width digits (٣ as 3), underscores (1_0 as 10) and Unicode
# blanks, which no HES writes for a number (INF and NaN are refused as not finite anyway)
_XS_DOUBLE = re.compile(r"[ \t\r\n]*(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                        r"|[+-]?INF|NaN)[ \t\r\n]*").fullmatch


# what the parser raises for text that is no XML it can read: malformed (ParseError), an
# encoding it does not know (LookupError), a str it cannot encode (a lone surrogate:
# UnicodeEncodeError, a ValueError) or a multi-byte encoding declared in a str (ValueError)
_UNREADABLE = (DefusedXmlException, ParseError, ValueError, LookupError)


def _refused(exc: Exception) -> DecodeError:
    if isinstance(exc, DefusedXmlException):
        return DecodeError(f"XML refused: DTDs, entities and external references are not accepted ({exc})")
    if isinstance(exc, LookupError):
        return DecodeError(f"malformed XML: its declared encoding is unknown ({exc})")
    return DecodeError(f"malformed XML: {exc}")


def document_element(text: str | bytes, noun: str, namespace: str) -> Element:
    """The ``noun`` element of a document, bare or inside a 61968-100 message (parsed safely)."""
    tag = qname(namespace, noun)
    try:
        root = safe_et.fromstring(text, forbid_dtd=True)
    except _UNREADABLE as exc:
        raise _refused(exc) from exc
    if root.tag == tag:
        return root
    if root.tag in MESSAGE_TAGS:
        found = root.find(f"{qname(MESSAGE_NS, 'Payload')}/{tag}")
        if found is not None:
            return found
        raise DecodeError(f"IEC 61968-100 message without Payload/{noun} in {namespace}")
    raise DecodeError(f"root element {root.tag} is neither {noun} in {namespace} nor an IEC 61968-100 message")


def parse_meter_readings(text: str) -> Element:
    """The MeterReadings element of a document, bare or inside a 61968-100 message."""
    return document_element(text, "MeterReadings", MR)


def _type_ref(el: Element) -> str | None:
    ref = el.find(_READING_TYPE)
    if ref is None:
        return None
    return (ref.get("ref") or el.findtext(_TYPE_MRID) or "").strip() or None


class _Reader:
    """Turns reading elements into canonical items, remembering converted timestamps."""

    def __init__(self, context: TransformContext):
        self.zone = local_zone(context.options)
        self.utc_of: dict[str, str | None] = {}

    def item(self, el: Element) -> tuple[dict | None, str]:
        raw = raw_value = None
        codes: list[str] = []
        for child in el:  # one pass over the children: find() per field costs three
            tag = child.tag
            if tag == _TIME:
                raw = child.text
            elif tag == _VALUE:
                raw_value = child.text
            elif tag == _QUALITIES:
                codes.extend((q.get("ref") or "").strip() for q in child if q.tag == _QUALITY_TYPE)
        if raw is None:
            return None, "no timeStamp"
        utc = self.utc_of.get(raw, "")
        if utc == "":
            try:
                utc = self.utc_of[raw] = utc_instant(raw, self.zone)
            except ValueError:
                utc = self.utc_of[raw] = None
        if utc is None:
            return None, f"timeStamp {raw.strip()!r} is not an ISO 8601 time"
        if raw_value is None or _XS_DOUBLE(raw_value) is None:
            return None, f"value {raw_value!r} is not a number"
        value = float(raw_value)
        if value - value != 0:
            return None, f"value {raw_value!r} is not finite"
        if not codes:
            return {"timeStamp": utc, "value": value}, ""
        for code in codes:
            if QUALITY.fullmatch(code) is None:
                return None, f"ReadingQualityType {code!r} is not system.category.index"
        # category 0 means valid, and the canonical model leaves valid values unmarked
        codes = [c for c in codes if c.split(".")[1] != "0"]
        if codes:
            return {"timeStamp": utc, "value": value, "qualities": codes}, ""
        return {"timeStamp": utc, "value": value}, ""


def _kept(store: dict, key, item: dict) -> bool:
    """Store ``item`` under ``key``; False if a different item is there already (first wins)."""
    old = store.setdefault(key, item)
    return old is item or old == item


_DIFFERS = "a second value for {} differs from the first; dropped"


class CimMeterReadingsXmlDecoder:
    """``cim_meter_readings_xml``: an XML ``SourceChunk`` → canonical MeterReadings."""

    name = "cim_meter_readings_xml"
    options_schema = LocalTimeOptions

    def split(self, fileobj: IO, max_readings: int) -> Iterator[tuple[str, int]]:
        """What the file-drop connector calls to cut a large XML file into batches."""
        return iter_meter_reading_chunks(fileobj, max_readings)

    def __call__(self, payload: SourceChunk, context: TransformContext) -> dict:
        if not isinstance(payload, SourceChunk) or payload.format != "xml":
            raise DecodeError(f"{self.name} reads XML SourceChunks, got {type(payload).__name__}")
        with gc_paused():
            return self._decode(parse_meter_readings(payload.text), context)

    def _decode(self, root: Element, context: TransformContext) -> dict:
        reader = _Reader(context)
        blocks: dict[str, dict[str, dict]] = {}  # meter → readingType → timeStamp → item
        registers: dict[str, dict[tuple[str, str], dict]] = {}  # meter → (type, time) → item
        count = 0
        for k, mr in enumerate(root.iterfind(METER_READING_TAG)):
            meter = next((t.strip() for t in map(mr.findtext, _METER_IDS) if t and t.strip()), None)
            n = sum(1 for _ in mr.iter(_INTERVAL_READING)) + sum(1 for _ in mr.iter(_READING))
            count += n
            if meter is None:
                context.reject(None, f"MeterReading[{k}]: no Meter/mRID or Meter/Names/name; {n} readings dropped")
                continue
            if not meter.isprintable():  # the canonical model takes printable meters only
                context.reject(None, f"MeterReading[{k}]: meter {meter!r} is not printable; {n} readings dropped")
                continue
            context.meters.add(meter)
            for b, block in enumerate(mr.iterfind(_INTERVAL_BLOCK)):
                rt = _type_ref(block)
                readings = block.findall(_INTERVAL_READING)
                if rt is None or READING_TYPE.fullmatch(rt) is None:
                    context.reject(None, f"meter {meter} IntervalBlocks[{b}]: ReadingType {rt!r} is not an "
                                         f"18-field mRID; {len(readings)} readings dropped")
                    continue
                per_type = blocks.setdefault(meter, {}).setdefault(rt, {})
                for i, el in enumerate(readings):
                    item, why = reader.item(el)
                    if item is not None and _kept(per_type, item["timeStamp"], item):
                        continue
                    why = why or _DIFFERS.format(item["timeStamp"])  # type: ignore[index]
                    context.reject(None, f"meter {meter} IntervalBlocks[{b}]/IntervalReadings[{i}]: {why}")
            for i, el in enumerate(mr.iterfind(_READING)):
                rt = _type_ref(el)
                item, why = reader.item(el)
                if rt is None or READING_TYPE.fullmatch(rt) is None:
                    item, why = None, f"ReadingType {rt!r} is not an 18-field mRID"
                if item is not None:
                    item = {"readingType": rt, **item}
                    if _kept(registers.setdefault(meter, {}), (rt, item["timeStamp"]), item):
                        continue
                    why = _DIFFERS.format(item["timeStamp"])
                context.reject(None, f"meter {meter} Readings[{i}]: {why}")
        context.rows_in = count
        return {"noun": METER_READINGS, "source": context.source_system,
                "MeterReading": _group(blocks, registers)}


def _group(blocks: dict, registers: dict) -> list[dict]:
    out = []
    for meter in dict.fromkeys([*blocks, *registers]):
        entry: dict = {"meter": meter}
        per_type = blocks.get(meter, {})
        interval = [{"readingType": rt, "intervalReadings": list(items.values())}
                    for rt, items in per_type.items() if items]
        if interval:
            entry["intervalBlocks"] = interval
        if registers.get(meter):
            entry["readings"] = list(registers[meter].values())
        if len(entry) > 1:
            out.append(entry)
    return out


def _document(batch: list[Element]) -> str:
    root = Element(METER_READINGS_TAG)
    root.extend(batch)
    try:
        return tostring(root, encoding="unicode", default_namespace=MR)
    except ValueError:  # a child element without a namespace cannot sit under a default one
        return tostring(root, encoding="unicode")


def iter_meter_reading_chunks(fileobj: IO, max_readings: int) -> Iterator[tuple[str, int]]:
    """Cut a large MeterReadings XML file into small MeterReadings documents.

    Streams with constant memory: each finished ``MeterReading`` is detached from
    the tree, whole elements are grouped until they hold about ``max_readings``
    readings.  Yields ``(xml_text, n_readings)``; raises ``DecodeError`` on
    malformed XML or any DTD.
    """
    if max_readings < 1:
        raise ValueError("max_readings must be at least 1")
    batch: list[Element] = []
    count = 0
    open_elements: list[Element] = []
    try:
        for event, el in safe_et.iterparse(fileobj, events=("start", "end"), forbid_dtd=True):
            if event == "start":
                if not open_elements and el.tag != METER_READINGS_TAG and el.tag not in MESSAGE_TAGS:
                    raise DecodeError(f"root element {el.tag} is neither MeterReadings in {MR} "
                                      "nor an IEC 61968-100 message")
                open_elements.append(el)
                if len(open_elements) > MAX_DEPTH:
                    # writing a chunk (tostring) recurses once per level: 1,000 failed with RecursionError
                    raise DecodeError(f"XML nested more than {MAX_DEPTH} elements deep; at most {MAX_DEPTH} "
                                      "are taken")
                continue
            open_elements.pop()
            parent = open_elements[-1] if open_elements else None
            if parent is None or parent.tag != METER_READINGS_TAG:
                continue
            parent.remove(el)  # detached, so the tree never holds more than one batch
            if el.tag == METER_READING_TAG:
                batch.append(el)
                count += sum(1 for _ in el.iter(_INTERVAL_READING)) + sum(1 for _ in el.iter(_READING))
                if count >= max_readings:
                    yield _document(batch), count
                    batch, count = [], 0
    except _UNREADABLE as exc:
        raise _refused(exc) from exc
    if batch:
        yield _document(batch), count
