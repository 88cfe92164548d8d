"""Canonical schemas: what they accept, what they refuse and how fast."""
from __future__ import annotations

import copy

import marshmallow
import pytest

from bus.canonical import EndDeviceEventsSchema, MeterReadingsSchema, count_values, validate_document
from bus.errors import ValidationError

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAILY_KWH = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"

# The two examples of docs/canonical-model.md, verbatim.
READINGS = {
    "noun": "MeterReadings",
    "source": "hes-a",
    "MeterReading": [{
        "meter": "UPM00012345",
        "intervalBlocks": [{"readingType": KWH_IMP, "intervalReadings": [
            {"timeStamp": "2026-10-31T18:45:00Z", "value": 0.125},
            {"timeStamp": "2026-10-31T19:00:00Z", "value": 0.0, "qualities": ["1.4.1"]}]}],
        "readings": [{"readingType": DAILY_KWH, "timeStamp": "2026-10-31T18:30:00Z", "value": 1234.5}],
    }],
}
EVENTS = {
    "noun": "EndDeviceEvents",
    "source": "hes-a",
    "EndDeviceEvent": [{"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101,
                        "createdDateTime": "2026-10-31T18:40:12Z",
                        "receivedDateTime": "2026-10-31T18:40:15Z"}],
}


def _with(doc: dict, path: tuple, value) -> dict:
    """A deep copy of ``doc`` with the item at ``path`` replaced (or deleted if value is ...)."""
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


IR = ("MeterReading", 0, "intervalBlocks", 0, "intervalReadings", 1)
REG = ("MeterReading", 0, "readings", 0)
EV = ("EndDeviceEvent", 0)


def test_the_documented_examples_are_valid_and_come_back_unchanged():
    # Given the examples of the canonical model document
    # When they are validated
    readings, events = validate_document(READINGS), validate_document(EVENTS)
    # Then both pass and are returned as they were
    assert readings == READINGS and events == EVENTS


def test_meter_readings_may_carry_only_blocks_only_registers_or_nothing():
    # Given documents with only interval blocks, only registers, and no meters at all
    only_blocks = _with(READINGS, ("MeterReading", 0, "readings"), ...)
    only_registers = _with(READINGS, ("MeterReading", 0, "intervalBlocks"), ...)
    empty = {"noun": "MeterReadings", "source": "hes-a", "MeterReading": []}
    # When / Then each is valid (an all-rejected batch is an empty document, not an error)
    for doc in (only_blocks, only_registers, empty):
        assert validate_document(doc) == doc


def test_events_without_the_optional_fields_are_valid():
    # Given an event from a CIM source: no IS code, no HES receipt time
    doc = _with(_with(EVENTS, EV + ("isCode",), ...), EV + ("receivedDateTime",), ...)
    # When / Then it validates
    assert validate_document(doc) == doc


@pytest.mark.parametrize("path, value, expected", [
    (IR + ("timeStamp",), "2026-10-31 19:00:00", "is not YYYY-MM-DDTHH:MM:SSZ"),
    (IR + ("timeStamp",), "2026-10-31T19:00:00+05:30", "is not YYYY-MM-DDTHH:MM:SSZ"),
    (IR + ("timeStamp",), "2026-02-30T19:00:00Z", "is not YYYY-MM-DDTHH:MM:SSZ"),
    (IR + ("timeStamp",), "2026-10-31T19:00:00.5Z", "is not YYYY-MM-DDTHH:MM:SSZ"),
    (IR + ("value",), float("nan"), "is not a finite number"),
    (IR + ("value",), float("inf"), "is not a finite number"),
    (IR + ("value",), "0.5", "is not a finite number"),
    (IR + ("value",), True, "is not a finite number"),
    (IR + ("value",), ..., "is missing value"),
    (IR + ("qualities",), ["1.4"], "is not a d.d.d ReadingQuality"),
    (IR + ("qualities",), [], "non-empty list"),
    (IR + ("quality",), "1.4.1", "unexpected keys ['quality']"),
    (("MeterReading", 0, "intervalBlocks", 0, "readingType"), "0.0.2.4.1.1.12", "18-field"),
    (("MeterReading", 0, "meter"), "", "non-empty printable string"),
    (("MeterReading", 0, "meter"), "UPM\x00", "non-empty printable string"),
    (("MeterReading", 0, "meter"), ..., "non-empty printable string"),
    (("MeterReading", 0, "reading"), [], "unexpected keys ['reading']"),
    (("MeterReading", 0), "UPM00012345", "must be an object"),
    (REG + ("readingType",), 11, "18-field"),
    (REG + ("timeStamp",), None, "is not YYYY-MM-DDTHH:MM:SSZ"),
    (("source",), "", "source"),
    (("MeterReading",), {}, "must be a list"),
    (("extra",), 1, "extra"),
])
def test_meter_readings_breaking_the_schema_are_refused_with_the_place_named(path, value, expected):
    # Given the documented example broken in one place
    doc = _with(READINGS, path, value)
    # When it is validated
    with pytest.raises(ValidationError) as caught:
        validate_document(doc)
    # Then the message says what is wrong
    assert expected in str(caught.value)


def test_the_message_names_the_meter_block_and_index_of_a_bad_value():
    # Given a bad timestamp in the second interval reading of the first block
    doc = _with(READINGS, IR + ("timeStamp",), "31/10/2026")
    # When it is validated
    with pytest.raises(ValidationError) as caught:
        validate_document(doc)
    # Then a person can find it without a debugger
    assert ("MeterReading[0] (meter UPM00012345).intervalBlocks[0].intervalReadings[1].timeStamp "
            "'31/10/2026'") in str(caught.value)


@pytest.mark.parametrize("path, value, expected", [
    (EV + ("eventType",), "3.26.0", "t.d.s.e EndDeviceEventType"),
    (EV + ("isCode",), "101", "must be an integer"),
    (EV + ("createdDateTime",), ..., "createdDateTime None"),
    (EV + ("receivedDateTime",), "2026-10-31T18:40:15", "receivedDateTime"),
    (EV + ("meter",), "  ", "non-empty printable string"),
    (EV + ("severity",), "high", "severity 'high' is not one of"),
    (EV + ("evidence",), [], "unexpected keys ['evidence']"),
    (("noun",), "EndDeviceEvent", "unknown noun"),
])
def test_events_breaking_the_schema_are_refused(path, value, expected):
    # Given the documented event broken in one place
    doc = _with(EVENTS, path, value)
    # When / Then validation names the problem
    with pytest.raises(ValidationError) as caught:
        validate_document(doc)
    assert expected in str(caught.value)


def test_something_that_is_not_a_document_is_refused():
    # Given values that are not canonical documents
    # When / Then each is refused with a ValidationError, never a TypeError
    for doc in (None, [], "MeterReadings", {"noun": None}, {"noun": ["MeterReadings"]}):
        with pytest.raises(ValidationError):
            validate_document(doc)


def test_the_schemas_can_be_used_directly_with_marshmallow():
    # Given the schema classes themselves
    # When they load the examples
    # Then they return the same documents (the API other code may build on)
    assert MeterReadingsSchema().load(READINGS) == READINGS
    assert EndDeviceEventsSchema().load(EVENTS) == EVENTS


def test_count_values_counts_interval_and_register_values_and_events():
    # Given the documented examples
    # When their values are counted
    # Then two interval values plus one register value, and one event
    assert count_values(READINGS) == (3, 0)
    assert count_values(EVENTS) == (0, 1)


def _block_load_batch(meters: int, intervals: int) -> dict:
    types = [KWH_IMP, "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0", "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0",
             "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0", "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0",
             "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0"]
    stamps = [f"2026-10-31T{h:02d}:{m:02d}:00Z" for h in range(24) for m in (0, 15, 30, 45)][:intervals]
    return {"noun": "MeterReadings", "source": "hes-a", "MeterReading": [
        {"meter": f"UPM{i:08d}", "intervalBlocks": [
            {"readingType": rt, "intervalReadings": [{"timeStamp": t, "value": 0.125 * k}
                                                     for k, t in enumerate(stamps)]} for rt in types]}
        for i in range(meters)]}


@pytest.mark.parametrize("meters, intervals", [(1000, 1), (25, 40)])
def test_a_6000_value_batch_validates_with_a_bounded_number_of_schema_objects(meters, intervals, monkeypatch):
    # Given 6,000 values, as one interval for 1,000 meters or 40 intervals for 25
    doc = _block_load_batch(meters, intervals)
    assert count_values(doc) == (6000, 0)
    made = []
    original = marshmallow.Schema.__init__

    def counting(self, *args, **kwargs):
        made.append(type(self).__name__)
        original(self, *args, **kwargs)
    monkeypatch.setattr(marshmallow.Schema, "__init__", counting)
    # When it is validated
    validate_document(doc)
    # Then no schema object is made per value or per meter: the schemas are built once, and
    # validation walks the values (a nested schema per value was 10x slower; how fast it is
    # now is `gridbus bench ingest`'s worker CPU per 1,000 rows, not a timed unit test)
    assert len(made) < 20, made[:20]
