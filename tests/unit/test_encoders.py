"""Encoders to the MDMS JSON message and to CIM XML; the entry points of setup.cfg."""
from __future__ import annotations

import configparser
import importlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bus.canonical import validate_document
from bus.errors import ValidationError
from bus.transform import Outbound, SourceChunk, TransformContext
from transformers.cim_xml_in import CimMeterReadingsXmlDecoder
from transformers.cim_xml_out import CimXmlEncoder
from transformers.mdms_json_out import MdmsJsonEncoder

ROOT = Path(__file__).parents[2]
MSG = "{http://iec.ch/TC57/2011/schema/message}"
MR = "{http://iec.ch/TC57/2011/MeterReadings#}"
EDE = "{http://iec.ch/TC57/2011/EndDeviceEvents#}"
KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"

READINGS = {"noun": "MeterReadings", "source": "hes-a", "MeterReading": [
    {"meter": "UPM00012345",
     "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
         {"timeStamp": "2026-10-31T18:45:00Z", "value": 0.125},
         {"timeStamp": "2026-10-31T19:00:00Z", "value": 0.0, "qualities": ["1.4.1"]}]}],
     "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 1234.5}]},
    {"meter": "R&D <lab> meter", "readings": [
        {"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 7, "qualities": ["2.8.0"]}]},
]}
EVENTS = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
    {"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101,
     "createdDateTime": "2026-10-31T18:40:12Z", "receivedDateTime": "2026-10-31T18:40:15Z"},
    {"meter": "UPM00067890", "eventType": "3.12.29.212", "createdDateTime": "2026-10-31T20:30:00Z"},
]}
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _context() -> TransformContext:
    return TransformContext("uc1-hes-a", "hes-a", "msg-42", "file-abc")


def test_the_encoders_inputs_are_valid_canonical_documents():
    # Given the documents these tests encode
    # Then they pass the canonical schema, so the encoders are tested on real input
    assert validate_document(READINGS) == READINGS and validate_document(EVENTS) == EVENTS


def test_meter_readings_become_the_iec_61968_100_json_message():
    # Given a MeterReadings document and a message context
    # When it is encoded for the MDMS
    out = MdmsJsonEncoder()(READINGS, _context())
    message = json.loads(out.body)
    # Then the header comes from the context, the payload is the canonical list unchanged
    header = message.pop("Header")
    assert INSTANT.fullmatch(header.pop("Timestamp"))
    assert header == {"Verb": "created", "Noun": "MeterReadings", "Source": "hes-a",
                      "MessageID": "msg-42", "CorrelationID": "file-abc"}
    assert message == {"Payload": {"MeterReadings": {"MeterReading": READINGS["MeterReading"]}}}
    # and the Outbound carries the counts the reconciliation report needs
    assert (out.content_type, out.noun, out.readings, out.events) == ("application/json", "MeterReadings", 4, 0)


def test_events_become_the_json_message_with_the_events_payload():
    # Given an EndDeviceEvents document
    # When encoded
    out = MdmsJsonEncoder()(EVENTS, _context())
    message = json.loads(out.body)
    # Then Noun and payload key are EndDeviceEvents
    assert message["Header"]["Noun"] == "EndDeviceEvents"
    assert message["Payload"] == {"EndDeviceEvents": {"EndDeviceEvent": EVENTS["EndDeviceEvent"]}}
    assert (out.noun, out.readings, out.events) == ("EndDeviceEvents", 0, 2)


def test_the_json_is_compact():
    # Given / When a document is encoded
    body = MdmsJsonEncoder()(READINGS, _context()).body
    # Then no padding after separators: thousands of values per message add up
    assert b", " not in body and b'": ' not in body


@pytest.mark.parametrize("encoder", [MdmsJsonEncoder(), CimXmlEncoder()])
@pytest.mark.parametrize("doc", [
    {"noun": "Nonsense"},
    {"MeterReading": []},
    {"noun": "MeterReadings", "source": "hes-a"},
    {"noun": "MeterReadings", "source": "hes-a", "MeterReading": [
        {"meter": "M", "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
            {"timeStamp": "2026-10-31T18:45:00Z", "value": float("nan")}]}]}]},
])
def test_documents_that_are_not_canonical_are_a_validation_error(encoder, doc):
    # Given a document without a known noun, without its list, or with a NaN value
    # When it is encoded / Then the worker gets a ValidationError (dead letter), not a crash
    with pytest.raises(ValidationError):
        encoder(doc, _context())


def test_meter_readings_become_cim_xml_in_an_event_message():
    # Given a MeterReadings document
    # When it is encoded as CIM XML
    out = CimXmlEncoder()(READINGS, _context())
    root = ET.fromstring(out.body)
    # Then it is an IEC 61968-100 EventMessage with the header from the context
    assert root.tag == f"{MSG}EventMessage"
    header = {child.tag.removeprefix(MSG): child.text for child in root.find(f"{MSG}Header")}
    assert INSTANT.fullmatch(header.pop("Timestamp"))
    assert header == {"Verb": "created", "Noun": "MeterReadings", "Source": "hes-a",
                      "MessageID": "msg-42", "CorrelationID": "file-abc"}
    # and the payload is IEC 61968-9 MeterReadings with blocks, ReadingType refs and registers
    readings = root.find(f"{MSG}Payload/{MR}MeterReadings")
    first, second = readings.findall(f"{MR}MeterReading")
    assert first.findtext(f"{MR}Meter/{MR}mRID") == "UPM00012345"
    assert first.find(f"{MR}IntervalBlocks/{MR}ReadingType").get("ref") == KWH_IMP
    stamps = [(r.findtext(f"{MR}timeStamp"), r.findtext(f"{MR}value"))
              for r in first.iter(f"{MR}IntervalReadings")]
    assert stamps == [("2026-10-31T18:45:00Z", "0.125"), ("2026-10-31T19:00:00Z", "0.0")]
    assert first.find(f"{MR}IntervalBlocks/{MR}IntervalReadings/{MR}ReadingQualities/"
                      f"{MR}ReadingQualityType") is not None
    assert first.find(f"{MR}Readings/{MR}ReadingType").get("ref") == DAILY_KWH
    # and free text is escaped, not markup
    assert second.findtext(f"{MR}Meter/{MR}mRID") == "R&D <lab> meter"
    assert (out.content_type, out.noun, out.readings) == ("application/xml", "MeterReadings", 4)


def test_the_xml_decoder_reads_back_what_the_xml_encoder_wrote():
    # Given a MeterReadings document encoded as CIM XML
    body = CimXmlEncoder()(READINGS, _context()).body
    # When the CIM XML decoder reads it back
    context = _context()
    back = CimMeterReadingsXmlDecoder()(SourceChunk(body.decode("utf-8"), "mdms-2.xml", 0, "xml"), context)
    # Then the same canonical document comes out (integers come back as floats)
    expected = json.loads(json.dumps(READINGS))
    expected["MeterReading"][1]["readings"][0]["value"] = 7.0
    assert back == expected and not context.rejections


def test_events_become_cim_xml_end_device_events():
    # Given an EndDeviceEvents document
    # When encoded as CIM XML
    out = CimXmlEncoder()(EVENTS, _context())
    root = ET.fromstring(out.body)
    # Then each event has its type ref, creation time and meter asset, in the EndDeviceEvents namespace
    assert root.findtext(f"{MSG}Header/{MSG}Noun") == "EndDeviceEvents"
    first, second = root.findall(f"{MSG}Payload/{EDE}EndDeviceEvents/{EDE}EndDeviceEvent")
    assert first.find(f"{EDE}EndDeviceEventType").get("ref") == "3.26.0.85"
    assert first.findtext(f"{EDE}createdDateTime") == "2026-10-31T18:40:12Z"
    assert first.findtext(f"{EDE}Assets/{EDE}mRID") == "UPM00012345"
    # and the IS code and receipt time travel as event details, only when known
    details = {d.findtext(f"{EDE}name"): d.findtext(f"{EDE}value") for d in first.iter(f"{EDE}EndDeviceEventDetails")}
    assert details == {"isCode": "101", "receivedDateTime": "2026-10-31T18:40:15Z"}
    assert second.find(f"{EDE}EndDeviceEventDetails") is None
    assert (out.content_type, out.noun, out.events) == ("application/xml", "EndDeviceEvents", 2)


def test_every_transformer_entry_point_in_setup_cfg_resolves_to_its_named_class():
    # Given the gridbus.transformers entry points declared in setup.cfg
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["gridbus.transformers"].strip().splitlines()
    # When each is loaded the way the registry does (class instantiated with no args)
    for line in lines:
        name, target = (part.strip() for part in line.split("="))
        module, cls = target.split(":")
        transformer = getattr(importlib.import_module(module), cls)()
        # Then it is callable and carries the entry-point name
        assert transformer.name == name and callable(transformer)
    assert {line.split("=")[0].strip() for line in lines} >= {
        "hes_a_csv", "cim_meter_readings_xml", "to_mdms_json", "to_cim_xml"}


def test_outbound_is_what_the_destination_connectors_expect():
    # Given / When both encoders run
    # Then they return the Outbound of bus.transform with bytes bodies
    for encoder in (MdmsJsonEncoder(), CimXmlEncoder()):
        out = encoder(READINGS, _context())
        assert isinstance(out, Outbound) and isinstance(out.body, bytes)
