"""Every decoder either decodes or refuses with a reason, whatever it is given (issue 16).

Property-based (hypothesis): arbitrary bytes and text, arbitrary JSON values,
and near-valid documents (a valid one with a few random mutations: a field
gone, a value of another type, a huge number, NaN, digits that are not ASCII,
entities, deep nesting, a document cut short).  A decoder may return a
document (which must then be canonical, each rejection with a reason) or raise
the bus's own ``MessageError`` with a reason; anything else (KeyError,
TypeError, ValueError, RecursionError, a parser's own error) is a bug that would
reach a worker or the gateway as a crash.

The HES-A CSV decoder has its own property tests (test_hostile_csv.py).
Examples are derandomized, so CI sees the same ones every run.
"""
from __future__ import annotations

import copy
import io
import json
import re
from xml.sax.saxutils import escape, quoteattr

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.canonical import validate_document
from bus.errors import MessageError
from bus.transform import SourceChunk, TransformContext
from transformers.canonical_in import CanonicalDocument
from transformers.cim_events_xml_in import CimEndDeviceEventsXmlDecoder
from transformers.cim_xml_in import CimMeterReadingsXmlDecoder, iter_meter_reading_chunks
from transformers.hes_alarm_json import HesAlarmJsonDecoder

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
MR_NS = "http://iec.ch/TC57/2011/MeterReadings#"
EDE_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
MSG_NS = "http://iec.ch/TC57/2011/schema/message"


def outcome(decoder, payload) -> dict | None:
    """The decoded document, or None when refused with the bus's error; fails the test otherwise."""
    context = TransformContext("fuzz-route", "hes-a", "msg-1", "corr-1")
    try:
        doc = decoder(payload, context)
    except MessageError as refused:
        assert str(refused).strip(), f"{refused!r} says no reason"
        return None
    # a decoded document is canonical (the next transformer relies on it), each rejection has a reason
    validate_document(doc)
    assert all(r.reason.strip() for r in context.rejections), context.rejections
    return doc


# ------------------------------------------------------------------ values and mutations

# what a sender can put where a value belongs (all of it reachable through JSON text, where
# json.loads reads NaN, Infinity, lone surrogates and integers of up to 4,300 digits)
TRICKY = st.one_of(st.sampled_from([
    None, True, False, 0, -1, 2 ** 63, 2 ** 64, 1e308, -0.0, float("nan"), float("inf"), float("-inf"),
    "", " ", "\t", "٣", "١٢٣", "１０１", "101 ", " 101", "1_0", "0x65", "1e3", "+101",
    "\x00", "UPM\x07", "\ud800", "\u2028", "\ufeff101",
    "2026-11-01T10:15:02+05:30", "２０２６-１１-０１T10:15:02+05:30", "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:30", "2026-02-30T00:00:00Z", "2026-11-01T10:15:02+99:00", "2026-11-01",
]), st.sampled_from([400, 4000]).map(lambda digits: 10 ** digits),  # built when drawn: short reprs
    st.sampled_from([5000, 100_000]).map(lambda n: "9" * n))
JSON_SCALARS = st.one_of(TRICKY, st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


DELETE = object()
# deeper than the 64 levels the gateway and the AMQP ingress let in, in case a decoder is called without them
MUTATION = st.one_of(st.just(DELETE), TRICKY, JSON_VALUES, st.integers(1, 200).map(nested))


def _paths(value, path: tuple = ()):
    yield path
    if isinstance(value, dict):
        for key, v in value.items():
            yield from _paths(v, path + (key,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _changed(doc, changes):
    out = copy.deepcopy(doc)
    for path, new in changes:
        parent = out
        try:
            for key in path[:-1]:
                parent = parent[key]
            if new is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = new
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change took that place away
    return out


def near(doc) -> st.SearchStrategy:
    """``doc`` with one to three places deleted or replaced."""
    paths = list(_paths(doc))[1:]
    return st.lists(st.tuples(st.sampled_from(paths), MUTATION), min_size=1, max_size=3).map(
        lambda changes: _changed(doc, changes))


# ------------------------------------------------------------------------ hes_alarm_json

ALARMS = {"hes": "hes-a", "sent_at": "2026-11-01T10:15:05+05:30", "alarms": [
    {"alarm_id": "hes-a-1", "meter": "UPM00012345", "code": 101, "occurred_at": "2026-11-01T10:15:02+05:30",
     "received_at": "2026-11-01T10:15:04+05:30", "details": {"voltage": 0, "phase": "R"}},
    {"alarm_id": 2, "meter": "UPM00067890", "code": "251", "occurred_at": "2026-11-01T04:40:00Z"}]}


@PROPERTY
@given(st.one_of(near(ALARMS), near(ALARMS["alarms"]), near(ALARMS["alarms"][0]), JSON_VALUES))
@example({"alarms": [{**ALARMS["alarms"][0], "code": "9" * 5000}]})  # was ValueError (int of over 4,300 digits)
def test_alarm_json_as_objects_decodes_or_is_refused_with_a_reason(payload):
    # Given alarm JSON as the gateway hands it over (parsed), near-valid or anything at all
    # When decoded  Then a canonical document, or a MessageError with the reason
    outcome(HesAlarmJsonDecoder(), payload)


@PROPERTY
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 near(ALARMS).map(lambda doc: json.dumps(doc)),
                 near(ALARMS).map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass"))))
def test_alarm_json_as_bytes_or_text_decodes_or_is_refused_with_a_reason(payload):
    # Given alarm JSON as the AMQP ingress hands it over (bytes or text), near-valid or anything at all
    # When decoded  Then a canonical document, or a MessageError with the reason
    outcome(HesAlarmJsonDecoder(), payload)


# ------------------------------------------------------------------------ canonical

READINGS = {"noun": "MeterReadings", "source": "mdms-x", "MeterReading": [{
    "meter": "UPM00012345",
    "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
        {"timeStamp": "2026-10-31T18:45:00Z", "value": 0.125},
        {"timeStamp": "2026-10-31T19:00:00Z", "value": 0.0, "qualities": ["1.4.1"]}]}],
    "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 1234.5}]}]}
EVENTS = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
    {"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101, "createdDateTime": "2026-10-31T18:40:12Z",
     "receivedDateTime": "2026-10-31T18:40:15Z", "eventClass": ["outage", "critical"], "severity": "major",
     "alarmId": "hes-a-1", "details": {"voltage": 0, "phase": "R"}},
    {"meter": "UPM00067890", "eventType": "3.12.29.212", "createdDateTime": "2026-10-31T18:41:00Z"}]}


@PROPERTY
@given(st.one_of(near(READINGS), near(EVENTS), JSON_VALUES))
def test_a_canonical_document_is_taken_as_it_is_or_refused_with_a_reason(payload):
    # Given a pushed canonical document, near-valid or anything at all
    # When checked by the canonical transformer  Then it is returned valid, or a MessageError with the reason
    outcome(CanonicalDocument(), payload)


# ------------------------------------------------------------------------ XML

# what a sender can put where XML text belongs: anything escaped, entities and references
# (known, unknown, to characters XML forbids), or text not escaped at all
XML_TEXT = st.one_of(
    st.text(max_size=30).map(escape),
    TRICKY.filter(lambda v: isinstance(v, str)).map(escape),
    st.sampled_from(["&amp;", "&lt;", "&#x41;", "&#0;", "&#x10FFFF;", "&#1114112;", "&#xD800;", "&undefined;",
                     "&e;", "<![CDATA[0.5]]>", "<!-- c -->0.5", "<?pi x?>", "0.5<", "a&b", "]]>", "\x00"]),
    st.text(max_size=10))


def field(valid: str) -> st.SearchStrategy:
    """Mostly the valid text, else something hostile."""
    return st.one_of(st.just(valid), st.just(valid), XML_TEXT)


def attribute(valid: str) -> st.SearchStrategy:
    return st.one_of(st.just(quoteattr(valid)), st.text(max_size=20).map(quoteattr),
                     st.sampled_from(['"&undefined;"', '"<"', "'", '"a" b="c"', '"&#0;"']))


@st.composite
def mutated_xml(draw, text: str, element: str) -> str:
    """Structural mutations of a whole document: cut short, a DTD, an element repeated or nested deep."""
    kind = draw(st.sampled_from(["none", "none", "cut", "dtd", "repeat", "deep", "declaration"]))
    if kind == "cut":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "dtd":
        return '<!DOCTYPE d [<!ENTITY e "x">]>' + text
    if kind == "declaration":
        encoding = draw(st.sampled_from(["UTF-8", "latin-1", "UTF-16", "nonsense"]))
        return f'<?xml version="1.0" encoding="{encoding}"?>' + text
    start, end = text.find(f"<{element}>"), text.find(f"</{element}>")
    if start < 0 or end < 0:
        return text
    end += len(f"</{element}>")
    if kind == "repeat":
        return text[:start] + text[start:end] * draw(st.integers(2, 50)) + text[end:]
    depth = draw(st.integers(10, 3000))  # inside the element, elements nested deep
    inner = text.find(">", start) + 1
    return text[:inner] + "<deep>" * depth + "</deep>" * depth + text[inner:]


@st.composite
def meter_readings_xml(draw) -> str:
    p = draw(st.sampled_from(["", "mr:"]))
    xmlns = f'xmlns="{MR_NS}"' if not p else f'xmlns:mr="{MR_NS}"'
    reading = (f"<{p}MeterReading><{p}IntervalBlocks><{p}IntervalReadings>"
               f"<{p}ReadingQualities><{p}ReadingQualityType ref={draw(attribute('1.4.1'))}/></{p}ReadingQualities>"
               f"<{p}timeStamp>{draw(field('2026-10-31T18:45:00Z'))}</{p}timeStamp>"
               f"<{p}value>{draw(field('0.125'))}</{p}value></{p}IntervalReadings>"
               f"<{p}ReadingType ref={draw(attribute(KWH_IMP))}/></{p}IntervalBlocks>"
               f"<{p}Meter><{p}mRID>{draw(field('UPM00012345'))}</{p}mRID></{p}Meter>"
               f"<{p}Readings><{p}ReadingType ref={draw(attribute(DAILY_KWH))}/>"
               f"<{p}timeStamp>{draw(field('2026-11-01T00:30:00+05:30'))}</{p}timeStamp>"
               f"<{p}value>{draw(field('1234.5'))}</{p}value></{p}Readings></{p}MeterReading>")
    doc = f"<{p}MeterReadings {xmlns}>{reading}</{p}MeterReadings>"
    if draw(st.booleans()):
        doc = (f'<m:EventMessage xmlns:m="{MSG_NS}"><m:Header><m:Verb>created</m:Verb></m:Header>'
               f"<m:Payload>{doc}</m:Payload></m:EventMessage>")
    return draw(mutated_xml(doc, f"{p}MeterReading"))


@st.composite
def end_device_events_xml(draw) -> str:
    p = draw(st.sampled_from(["", "e:"]))
    xmlns = f'xmlns="{EDE_NS}"' if not p else f'xmlns:e="{EDE_NS}"'
    detail_name = draw(st.sampled_from(["isCode", "receivedDateTime", "voltage", ""]))
    detail_value = {"isCode": "251", "receivedDateTime": "2026-11-01T10:15:04+05:30"}.get(detail_name, "0")
    event = (f"<{p}EndDeviceEvent><{p}mRID>{draw(field('hes-c-1'))}</{p}mRID>"
             f"<{p}createdDateTime>{draw(field('2026-11-01T10:15:02+05:30'))}</{p}createdDateTime>"
             f"<{p}Assets><{p}mRID>{draw(field('UPM00000901'))}</{p}mRID></{p}Assets>"
             f"<{p}EndDeviceEventDetails><{p}name>{draw(field(detail_name))}</{p}name>"
             f"<{p}value>{draw(field(detail_value))}</{p}value></{p}EndDeviceEventDetails>"
             f"<{p}EndDeviceEventType ref={draw(attribute('3.12.29.212'))}/></{p}EndDeviceEvent>")
    doc = f"<{p}EndDeviceEvents {xmlns}>{event}</{p}EndDeviceEvents>"
    if draw(st.booleans()):
        doc = (f'<m:EventMessage xmlns:m="{MSG_NS}"><m:Header><m:Verb>created</m:Verb></m:Header>'
               f"<m:Payload>{doc}</m:Payload></m:EventMessage>")
    return draw(mutated_xml(doc, f"{p}EndDeviceEvent"))


def one_value(value: str) -> str:
    return (f'<MeterReadings xmlns="{MR_NS}"><MeterReading><Meter><mRID>UPM1</mRID></Meter><Readings>'
            f'<ReadingType ref="{DAILY_KWH}"/><timeStamp>2026-10-31T18:30:00Z</timeStamp>'
            f"<value>{escape(value)}</value></Readings></MeterReading></MeterReadings>")


# xs:double as XML Schema writes one (ASCII digits), between XML blanks
XS_DOUBLE = r"[ \t\r\n]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\r\n]*"


@PROPERTY
@given(st.one_of(TRICKY.filter(lambda v: isinstance(v, str)), st.text(max_size=12),
                 st.from_regex(XS_DOUBLE, fullmatch=True),
                 st.text(st.sampled_from("0123456789.+-eE _\u00a0\u0661\uff11\u2007"), max_size=8)))
@example("\u0661\u0662\u0663")
def test_a_reading_value_is_taken_only_when_it_is_a_number_as_xml_schema_writes_one(value):
    # Given one register reading whose value is the text drawn
    doc = outcome(CimMeterReadingsXmlDecoder(), SourceChunk(one_value(value), "fuzz.xml", 0, "xml"))
    taken = [r["value"] for mr in doc["MeterReading"] for r in mr.get("readings", [])] if doc else []
    # Then it is read only if it is an xs:double in ASCII digits (float() alone also takes
    # Arabic-Indic and full-width digits, underscores and Unicode blanks), and read as it looks
    if taken:
        assert re.fullmatch(XS_DOUBLE, value), (value, taken)
        assert taken == [float(value)]


ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)  # lone surrogates too


@PROPERTY
@given(st.one_of(meter_readings_xml(), ANY_TEXT))
@example(one_value("0.5").replace("UPM1", "UPM\ud800"))  # was UnicodeEncodeError (a lone surrogate)
@example('<?xml version="1.0" encoding="nonsense"?>' + one_value("0.5"))  # was LookupError
@example(one_value("0.5").replace("UPM1", "\x7f"))  # was a document the canonical schema refuses
def test_meter_readings_xml_decodes_or_is_refused_with_a_reason(text):
    # Given a MeterReadings XML chunk, near-valid or any text at all
    # When decoded  Then a canonical document, or a MessageError with the reason
    outcome(CimMeterReadingsXmlDecoder(), SourceChunk(text, "fuzz.xml", 0, "xml"))


@PROPERTY
@given(st.one_of(meter_readings_xml().map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=300)),
       st.integers(1, 3))
@example(one_value("0.5").replace("<Readings>", "<x>" * 3000 + "</x>" * 3000 + "<Readings>").encode(), 1)
def test_a_meter_readings_xml_file_is_cut_into_chunks_that_decode_or_is_refused_with_a_reason(data, max_readings):
    # Given the bytes of an XML file in the inbox, near-valid or anything at all
    try:
        # When the file-drop splitter cuts it into chunks
        chunks = list(iter_meter_reading_chunks(io.BytesIO(data), max_readings))
    except MessageError as refused:
        assert str(refused).strip()
        return
    # Then each chunk decodes or is refused with a reason, as any chunk
    for text, _ in chunks:
        outcome(CimMeterReadingsXmlDecoder(), SourceChunk(text, "fuzz.xml", 0, "xml"))


@PROPERTY
@given(st.one_of(end_device_events_xml(), end_device_events_xml().map(lambda t: t.encode("utf-8", "surrogatepass")),
                 ANY_TEXT, st.binary(max_size=300), JSON_VALUES))
@example(f'<EndDeviceEvents xmlns="{EDE_NS}"><EndDeviceEvent><mRID>\ud800</mRID></EndDeviceEvent></EndDeviceEvents>')
def test_end_device_events_xml_decodes_or_is_refused_with_a_reason(payload):
    # Given EndDeviceEvents XML (text or bytes), near-valid or anything at all
    # When decoded  Then a canonical document, or a MessageError with the reason
    outcome(CimEndDeviceEventsXmlDecoder(), payload)
