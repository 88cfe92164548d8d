"""CIM MeterReadings XML decoder and XML file splitter: namespaces, bad readings, XML attacks."""
from __future__ import annotations

import io
import time
import tracemalloc
from pathlib import Path

import pytest

from bus.canonical import validate_document
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.cim_xml_in import CimMeterReadingsXmlDecoder, iter_meter_reading_chunks

DATA = Path(__file__).parent / "data"
MR_NS = "http://iec.ch/TC57/2011/MeterReadings#"
MSG_NS = "http://iec.ch/TC57/2011/schema/message"
KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def _decode(xml: str) -> tuple[dict, TransformContext]:
    context = TransformContext("uc1-hes-c", "hes-c", "msg-1", "corr-1")
    return CimMeterReadingsXmlDecoder()(SourceChunk(xml, "hes-c.xml", 0, "xml"), context), context


def _reading(prefix: str = "") -> str:
    """One meter, one interval value; ``prefix`` like ``"cim:"`` or ``""`` for a default namespace."""
    p = prefix
    return (f"<{p}MeterReading><{p}IntervalBlocks><{p}IntervalReadings><{p}timeStamp>2026-10-31T18:45:00Z"
            f"</{p}timeStamp><{p}value>0.125</{p}value></{p}IntervalReadings><{p}ReadingType ref=\"{KWH_IMP}\"/>"
            f"</{p}IntervalBlocks><{p}Meter><{p}mRID>UPM1</{p}mRID></{p}Meter></{p}MeterReading>")


EXPECTED_ONE = {"noun": "MeterReadings", "source": "hes-c", "MeterReading": [
    {"meter": "UPM1", "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
        {"timeStamp": "2026-10-31T18:45:00Z", "value": 0.125}]}]}]}


@pytest.mark.parametrize("xml", [
    f'<MeterReadings xmlns="{MR_NS}">{_reading()}</MeterReadings>',
    f'<cim:MeterReadings xmlns:cim="{MR_NS}">{_reading("cim:")}</cim:MeterReadings>',
    f'<m2:MeterReadings xmlns:m2="{MR_NS}">{_reading("m2:")}</m2:MeterReadings>',
    f'<RequestMessage xmlns="{MSG_NS}"><Header><Verb>create</Verb><Noun>MeterReadings</Noun></Header>'
    f'<Payload><MeterReadings xmlns="{MR_NS}">{_reading()}</MeterReadings></Payload></RequestMessage>',
    f'<a:ResponseMessage xmlns:a="{MSG_NS}"><a:Payload><b:MeterReadings xmlns:b="{MR_NS}">'
    f'{_reading("b:")}</b:MeterReadings></a:Payload></a:ResponseMessage>',
])
def test_elements_are_found_by_namespace_uri_whatever_the_prefix(xml):
    # Given the same reading bare or in a message, with a default namespace or any prefix
    # When it is decoded
    doc, context = _decode(xml)
    # Then the result is the same canonical document
    assert doc == EXPECTED_ONE and not context.rejections


def test_a_familiar_prefix_bound_to_another_namespace_is_not_meter_readings():
    # Given the usual prefix "m" bound to some other namespace
    xml = f'<m:MeterReadings xmlns:m="http://example.com/not-cim#">{_reading("m:")}</m:MeterReadings>'
    # When decoded / Then it is refused: the prefix means nothing, the URI everything
    with pytest.raises(DecodeError, match="neither MeterReadings"):
        _decode(xml)


def test_a_message_without_meter_readings_is_a_decode_error():
    # Given an EventMessage whose payload is something else
    xml = f'<EventMessage xmlns="{MSG_NS}"><Payload><Other/></Payload></EventMessage>'
    # When / Then
    with pytest.raises(DecodeError, match="without Payload/MeterReadings"):
        _decode(xml)


def test_the_message_fixture_decodes_and_bad_readings_are_rejected_by_meter_and_element():
    # Given an EventMessage with intervals, qualities, registers, a meter known only by name,
    # a non-numeric value, a bad timestamp and a MeterReading without a meter
    doc, context = _decode((DATA / "meter_readings_message.xml").read_text(encoding="utf-8"))
    # Then the good readings are canonical, offsets turned to UTC, a suspect quality kept,
    # and the "valid" quality 1.0.0 dropped (the canonical model leaves valid values unmarked)
    assert doc["MeterReading"] == [
        {"meter": "UPM00012345",
         "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
             {"timeStamp": "2026-10-31T18:45:00Z", "value": 0.125},
             {"timeStamp": "2026-10-31T19:00:00Z", "value": 0.0, "qualities": ["1.4.1"]}]}],
         "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 1234.5}]},
        {"meter": "UPM00067890",
         "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 845.25}]},
    ]
    # and each bad reading is rejected naming its meter and element (XML has no useful line)
    assert [(r.line, r.reason) for r in context.rejections] == [
        (None, "meter UPM00012345 IntervalBlocks[0]/IntervalReadings[2]: value 'abc' is not a number"),
        (None, "meter UPM00067890 Readings[0]: timeStamp 'yesterday' is not an ISO 8601 time"),
        (None, "MeterReading[2]: no Meter/mRID or Meter/Names/name; 1 readings dropped"),
    ]
    assert context.rows_in == 7
    assert context.meters == {"UPM00012345", "UPM00067890"}
    assert validate_document(doc) == doc


def test_a_block_with_a_malformed_reading_type_is_rejected_whole():
    # Given a block whose ReadingType ref has 3 fields
    xml = f'<MeterReadings xmlns="{MR_NS}">{_reading()}</MeterReadings>'.replace(KWH_IMP, "0.0.2")
    # When decoded
    doc, context = _decode(xml)
    # Then its readings are rejected together, with the reason, and the batch is empty
    assert doc["MeterReading"] == []
    assert [r.reason for r in context.rejections] == [
        "meter UPM1 IntervalBlocks[0]: ReadingType '0.0.2' is not an 18-field mRID; 1 readings dropped"]


def test_malformed_xml_is_a_decode_error():
    # Given XML cut off in the middle
    # When / Then
    with pytest.raises(DecodeError, match="malformed XML"):
        _decode(f'<MeterReadings xmlns="{MR_NS}"><MeterReading>')


def test_a_billion_laughs_bomb_is_refused_unexpanded():
    # Given the billion-laughs document (10^9 "lol"s if expanded)
    xml = (DATA / "billion_laughs.xml").read_text(encoding="utf-8")
    tracemalloc.start()
    started = time.perf_counter()
    # When it is decoded
    with pytest.raises(DecodeError) as caught:
        _decode(xml)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then it is refused at once, the reason says why, and nothing was expanded
    assert "DTD" in str(caught.value) and "lollol" not in str(caught.value)
    assert time.perf_counter() - started < 1 and peak < 5_000_000


def test_an_external_system_entity_is_refused_and_never_read(tmp_path):
    # Given a secret file and an XML document whose entity would pull it in
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-KEY")
    xml = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY s SYSTEM "{secret.as_uri()}">]>'
           f'<MeterReadings xmlns="{MR_NS}"><MeterReading><Meter><mRID>&s;</mRID></Meter>'
           f'</MeterReading></MeterReadings>')
    # When it is decoded or split
    for attempt in (lambda: _decode(xml),
                    lambda: list(iter_meter_reading_chunks(io.BytesIO(xml.encode()), 10))):
        with pytest.raises(DecodeError) as caught:
            attempt()
        # Then it is refused and the secret appears nowhere
        assert "TOP-SECRET-KEY" not in str(caught.value)


def test_an_external_dtd_reference_is_refused():
    # Given a document pointing at a DTD on the network
    xml = f'<!DOCTYPE MeterReadings SYSTEM "http://127.0.0.1:9/x.dtd"><MeterReadings xmlns="{MR_NS}"/>'
    # When / Then nothing is fetched: any DTD is refused
    with pytest.raises(DecodeError, match="DTD"):
        _decode(xml)


def _big_file(meters: int, per_meter: int, envelope: bool = False) -> bytes:
    stamps = [f"2026-10-31T{h:02d}:{m:02d}:00Z" for h in range(24) for m in (0, 15, 30, 45)]
    body = "".join(
        "<MeterReading><IntervalBlocks>"
        + "".join(f"<IntervalReadings><timeStamp>{stamps[k]}</timeStamp><value>{k}.5</value></IntervalReadings>"
                  for k in range(per_meter))
        + f'<ReadingType ref="{KWH_IMP}"/></IntervalBlocks><Meter><mRID>UPM{i:08d}</mRID></Meter>'
          f"</MeterReading>\n" for i in range(meters))
    doc = f'<?xml version="1.0" encoding="UTF-8"?>\n<MeterReadings xmlns="{MR_NS}">\n{body}</MeterReadings>\n'
    if envelope:
        doc = (f'<EventMessage xmlns="{MSG_NS}"><Header><Verb>created</Verb><Noun>MeterReadings</Noun>'
               f"</Header><Payload>{doc.split(chr(10), 1)[1]}</Payload></EventMessage>")
    return doc.encode("utf-8")


@pytest.mark.parametrize("envelope", [False, True])
def test_a_large_file_is_cut_into_whole_meter_readings_of_about_max_readings(envelope):
    # Given 50 meters of 24 readings each, bare or in a message
    data = _big_file(50, 24, envelope)
    # When it is split with max_readings 100
    chunks = list(iter_meter_reading_chunks(io.BytesIO(data), 100))
    # Then each chunk holds whole MeterReadings totalling about 100 readings (5 x 24 = 120)
    assert [n for _, n in chunks] == [120] * 10
    # and each is a complete MeterReadings document the decoder reads on its own
    meters = set()
    for text, n in chunks:
        doc, context = _decode(text)
        assert not context.rejections and context.rows_in == n
        meters.update(mr["meter"] for mr in doc["MeterReading"])
    assert len(meters) == 50


def test_text_files_split_as_well_as_binary_ones():
    # Given the same document as a text stream
    text = _big_file(3, 2).decode("utf-8")
    # When split / Then all 6 readings come out in one chunk
    assert [n for _, n in iter_meter_reading_chunks(io.StringIO(text), 1000)] == [6]


def _split_peak(data: bytes) -> tuple[int, int]:
    """(readings seen, peak bytes allocated while splitting) with each chunk dropped once used."""
    tracemalloc.start()
    total = sum(n for _, n in iter_meter_reading_chunks(io.BytesIO(data), 200))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return total, peak


def test_splitting_keeps_memory_flat_however_large_the_file():
    # Given two files, the second five times the size of the first
    small, large = _big_file(500, 4), _big_file(2500, 4)
    # When each is split
    small_total, small_peak = _split_peak(small)
    large_total, large_peak = _split_peak(large)
    # Then every reading is seen, and the peak memory does not grow with the file
    assert (small_total, large_total) == (2_000, 10_000)
    assert large_peak < 1.5 * small_peak, f"{small_peak:,} -> {large_peak:,} bytes"
    assert large_peak < len(large) / 2


@pytest.mark.parametrize("data, reason", [
    (b"<MeterReadings xmlns='" + MR_NS.encode() + b"'><MeterReading>", "malformed XML"),
    ((DATA / "billion_laughs.xml").read_bytes(), "DTD"),
    (b"<Other xmlns='urn:x'/>", "neither MeterReadings"),
])
def test_splitting_bad_xml_is_a_decode_error(data, reason):
    # Given a truncated file, a DTD bomb and a document of another kind
    # When / Then splitting fails with a reason for rejected/
    with pytest.raises(DecodeError, match=reason):
        list(iter_meter_reading_chunks(io.BytesIO(data), 100))


def test_the_decoder_offers_the_splitter_to_the_file_drop_connector():
    # Given the decoder as the registry builds it
    # When the connector asks it to split a file / Then it gets the chunks
    chunks = list(CimMeterReadingsXmlDecoder().split(io.BytesIO(_big_file(2, 3)), 100))
    assert [n for _, n in chunks] == [6]


def test_a_repeated_reading_collapses_and_a_conflicting_one_is_rejected():
    # Given one interval sent three times: 0.125, then 0.5, then 0.125 again
    one = ("<IntervalReadings><timeStamp>2026-10-31T18:45:00Z</timeStamp><value>0.125</value>"
           "</IntervalReadings>")
    other = one.replace("0.125", "0.5")
    xml = f'<MeterReadings xmlns="{MR_NS}">{_reading()}</MeterReadings>'.replace(
        "<IntervalBlocks>", f"<IntervalBlocks>{one}{other}")
    # When decoded
    doc, context = _decode(xml)
    # Then the first value wins, the repeat collapses and the conflict is rejected by name
    assert doc == EXPECTED_ONE
    assert [r.reason for r in context.rejections] == [
        "meter UPM1 IntervalBlocks[0]/IntervalReadings[1]: a second value for 2026-10-31T18:45:00Z "
        "differs from the first; dropped"]
