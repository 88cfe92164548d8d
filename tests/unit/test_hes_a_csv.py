"""HES-A CSV decoder: profiles, UTC conversion, row rejections with file line numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from bus.canonical import validate_document
from bus.canonical.schemas import count_values
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.catalogue import event_classes, is15959_events, reading_profiles
from transformers.hes_a_csv import HesACsvDecoder

DATA = Path(__file__).parent / "data"
BLOCK_HEADER = "meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg"
KWH_IMP, KWH_EXP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
KVAH_IMP, KVAH_EXP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0", "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0"
V_AVG, I_AVG = "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0", "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0"


def _context(**options) -> TransformContext:
    return TransformContext("uc1-hes-a", "hes-a", "msg-1", "corr-1", options=options)


def _decode(text: str, first_line: int = 2, **options) -> tuple[dict, TransformContext]:
    context = _context(**options)
    return HesACsvDecoder()(SourceChunk(text, "hes-a.csv", first_line), context), context


def _fixture(name: str) -> str:
    # newline="" keeps the CRLFs: the decoder, not Python, must cope with them
    with open(DATA / name, encoding="utf-8", newline="") as f:
        return f.read()


def _values(doc: dict) -> dict[tuple[str, str, str], float]:
    out = {}
    for mr in doc["MeterReading"]:
        for block in mr.get("intervalBlocks", []):
            for r in block["intervalReadings"]:
                out[(mr["meter"], block["readingType"], r["timeStamp"])] = r["value"]
        for r in mr.get("readings", []):
            out[(mr["meter"], r["readingType"], r["timeStamp"])] = r["value"]
    return out


def test_block_load_with_bom_crlf_reordered_and_extra_columns_decodes_to_utc():
    # Given the HES-A block-load fixture: BOM, CRLF, columns reordered, an extra
    # signal_dbm column, trailing whitespace, and one bad row of each kind
    text = _fixture("block_load_hes_a.csv")
    assert text.startswith("\ufeff") and "\r\n" in text
    # When it is decoded
    doc, context = _decode(text)
    # Then the good rows become readings per meter and ReadingType, at UTC interval ends
    values = _values(doc)
    assert values[("UPM00012345", KWH_IMP, "2026-10-31T18:45:00Z")] == 0.125
    assert values[("UPM00012345", KVAH_IMP, "2026-10-31T18:45:00Z")] == 0.131
    assert values[("UPM00012345", V_AVG, "2026-10-31T19:00:00Z")] == 230.9
    assert values[("UPM00012345", I_AVG, "2026-10-31T19:00:00Z")] == 2.02
    assert values[("UPM00067890", KVAH_EXP, "2026-10-31T18:45:00Z")] == 0.011
    # and an empty value drops that value only: line 5 has no kwh_imp but keeps its other five
    assert ("UPM00067890", KWH_IMP, "2026-10-31T19:00:00Z") not in values
    assert values[("UPM00067890", KVAH_IMP, "2026-10-31T19:00:00Z")] == 0.049
    assert len(values) == 6 + 6 + 6 + 5
    assert [mr["meter"] for mr in doc["MeterReading"]] == ["UPM00012345", "UPM00067890"]
    assert [b["readingType"] for b in doc["MeterReading"][0]["intervalBlocks"]] == \
        [KWH_IMP, KWH_EXP, KVAH_IMP, KVAH_EXP, V_AVG, I_AVG]
    assert validate_document(doc) == doc


def test_each_kind_of_bad_row_is_rejected_with_its_line_in_the_file():
    # Given the block-load fixture, whose lines 6 to 10 are bad and line 11 repeats line 2
    doc, context = _decode(_fixture("block_load_hes_a.csv"))
    # When its rejections are read
    reasons = {r.line: r.reason for r in context.rejections}
    # Then each bad row is named by its line in the HES file, with the reason
    assert sorted(reasons) == [6, 7, 8, 9, 10]
    assert reasons[6] == "expected 9 fields, found 4"
    assert reasons[7] == "empty meter_serial"
    assert reasons[8] == "meter UPM00012345: kvah_imp '0.1x' is not a number"
    assert reasons[9] == "meter UPM00012345: interval_end '2026-11-01 25:00' is not an ISO 8601 time"
    assert reasons[10] == "meter UPM00012345: kwh_imp '-0.045' is negative"
    # and the exact duplicate on line 11 collapsed silently into line 2
    assert context.rows_in == 10
    assert context.meters == {"UPM00012345", "UPM00067890"}


def test_line_numbers_count_from_the_chunks_first_line():
    # Given a chunk cut from the middle of a file: its first data row is line 1001
    text = (f"{BLOCK_HEADER}\nM1,2026-11-01T00:15:00+05:30,0.1,0,0.1,0,230,1\n"
            "\nM1,2026-11-01T00:30:00+05:30,x,0,0,0,0,0\n")
    # When it is decoded
    _, context = _decode(text, first_line=1001)
    # Then the bad row is line 1003 of the file (the blank line 1002 still counts as a line)
    assert [(r.line, r.reason) for r in context.rejections] == [(1003, "meter M1: kwh_imp 'x' is not a number")]
    assert context.rows_in == 2


@pytest.mark.parametrize("value, reason", [
    ("nan", "kwh_imp 'nan' is not a finite number"),
    ("inf", "kwh_imp 'inf' is not a finite number"),
    ("1e999", "kwh_imp '1e999' is not a finite number"),
    ("-0.001", "kwh_imp '-0.001' is negative"),
])
def test_values_that_are_not_finite_or_are_negative_reject_the_row(value, reason):
    # Given a row with one impossible energy value
    text = f"{BLOCK_HEADER}\nM1,2026-11-01T00:15:00+05:30,{value},0,0,0,230,1\n"
    # When it is decoded
    doc, context = _decode(text)
    # Then the whole row is rejected and the batch is empty, not an error
    assert [r.reason for r in context.rejections] == [f"meter M1: {reason}"]
    assert doc == {"noun": "MeterReadings", "source": "hes-a", "MeterReading": []}


def test_a_second_row_for_the_same_meter_and_interval_with_other_values_is_rejected():
    # Given two rows for M1 at 00:15 that disagree, and an exact repeat of the first
    row = "M1,2026-11-01T00:15:00+05:30,0.1,0,0.1,0,230,1"
    text = f"{BLOCK_HEADER}\n{row}\nM1,2026-11-01T00:15:00+05:30,0.2,0,0.2,0,230,1\n{row}\n"
    # When decoded
    doc, context = _decode(text)
    # Then the first wins, the repeat collapses, and the conflicting row is rejected naming the first
    assert _values(doc)[("M1", KWH_IMP, "2026-10-31T18:45:00Z")] == 0.1
    assert [(r.line, r.reason) for r in context.rejections] == [
        (3, "meter M1: second row for 2026-10-31T18:45:00Z with other values (first at line 2)")]


def test_times_without_an_offset_are_read_in_ist_unless_the_route_says_otherwise():
    # Given a block-load row whose interval_end carries no UTC offset
    text = f"{BLOCK_HEADER}\nM1,2026-11-01T00:15:00,0.1,0,0.1,0,230,1\n"
    # When it is decoded with the default zone and with utc_offset +00:00
    ist, _ = _decode(text)
    utc, _ = _decode(text, utc_offset="+00:00")
    # Then IST is the default, and the option overrides it
    assert ("M1", KWH_IMP, "2026-10-31T18:45:00Z") in _values(ist)
    assert ("M1", KWH_IMP, "2026-11-01T00:15:00Z") in _values(utc)


def test_daily_snapshots_are_local_midnight_registers():
    # Given the daily fixture: a bare date, a date with an offset, a full UTC time, a bad date
    doc, context = _decode(_fixture("daily_hes_a.csv"))
    # When its registers are read
    values = _values(doc)
    # Then a bare date is midnight IST, i.e. 18:30 UTC the day before
    assert values[("UPM00012345", "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "2026-10-31T18:30:00Z")] == 1234.5
    assert values[("UPM00012345", "11.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.71.0", "2026-10-31T18:30:00Z")] == 12.5
    assert values[("UPM00067890", "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.71.0", "2026-10-31T18:30:00Z")] == 880.0
    assert values[("UPM00067890", "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "2026-11-02T00:00:00Z")] == 846.75
    assert all("intervalBlocks" not in mr for mr in doc["MeterReading"])
    # and the unparsable date rejects its row
    assert [(r.line, r.reason) for r in context.rejections] == [
        (5, "meter UPM00099999: read_date '01/11/2026' is not an ISO 8601 time")]
    assert validate_document(doc) == doc


def test_event_log_rows_become_end_device_events_with_cim_codes():
    # Given the event-log fixture: power fail/restore, a cover open, an unknown code, a bad time
    doc, context = _decode(_fixture("events_hes_a.csv"))
    # Then known codes map to CIM EndDeviceEventTypes, times to UTC
    assert doc["noun"] == "EndDeviceEvents"
    # with the routing class and severity of their IS code, as the alarm decoders give them
    assert doc["EndDeviceEvent"] == [
        {"meter": "UPM00012345", "eventType": "3.26.0.85", "isCode": 101,
         "createdDateTime": "2026-10-31T18:40:12Z", "receivedDateTime": "2026-10-31T18:40:15Z",
         "eventClass": ["outage", "critical"], "severity": "critical"},
        {"meter": "UPM00012345", "eventType": "3.26.0.216", "isCode": 102,
         "createdDateTime": "2026-10-31T19:12:03Z", "receivedDateTime": "2026-10-31T19:12:09Z",
         "eventClass": ["outage", "critical"], "severity": "critical"},
        {"meter": "UPM00067890", "eventType": "3.12.29.212", "isCode": 251,
         "createdDateTime": "2026-10-31T20:30:00Z", "eventClass": ["fraud", "critical"], "severity": "critical"},
    ]
    # and the unknown code and the bad time are rejected at their lines
    assert [(r.line, r.reason) for r in context.rejections] == [
        (5, "meter UPM00067890: unknown IS 15959 event code '999'"),
        (6, "meter UPM00067890: event_time or hes_received is not an ISO 8601 time")]
    assert context.rows_in == 5
    assert validate_document(doc) == doc


@pytest.mark.parametrize("header, noun", [
    (BLOCK_HEADER + "\r\n", "MeterReadings"),
    ("\ufeffkwh_exp_cum,READ_DATE,meter_serial,kvah_imp_cum,kwh_imp_cum,kvah_exp_cum,extra", "MeterReadings"),
    ("hes_received,event_time,event_code,meter_serial", "EndDeviceEvents"),
])
def test_check_header_accepts_each_profile_and_tells_the_noun(header, noun):
    # Given a header of each profile, in any column order and case
    # When the file-drop connector probes it
    # Then it is accepted and the noun the file will become is returned
    assert HesACsvDecoder().check_header(header) == noun


def test_check_header_names_the_missing_columns_of_the_closest_profile():
    # Given a block-load header without kvah_exp and i_avg
    header = "meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,v_avg"
    # When probed
    with pytest.raises(DecodeError) as caught:
        HesACsvDecoder().check_header(header)
    # Then the reason names the profile and exactly what is missing
    assert "closest is block-load, missing columns: kvah_exp, i_avg" in str(caught.value)


def test_a_chunk_whose_header_matches_no_profile_is_a_decode_error():
    # Given a chunk of another CSV format
    # When decoded / Then the whole message is unusable, and the file is named
    with pytest.raises(DecodeError, match="unknown.csv: CSV header matches no HES-A profile.*meter_serial"):
        HesACsvDecoder()(SourceChunk("serial,when,what\nUPM1,2026-11-01,3\n", "unknown.csv"), _context())


def test_the_yaml_holds_18_field_reading_types_for_every_column():
    # Given the profiles loaded from transformers/data/reading_types.yaml
    profiles = {p.name: p for p in reading_profiles()}
    # Then block-load and daily carry their six and four ReadingTypes, each of 18 fields
    assert dict(profiles["block-load"].columns) == {
        "kwh_imp": KWH_IMP, "kwh_exp": KWH_EXP, "kvah_imp": KVAH_IMP, "kvah_exp": KVAH_EXP,
        "v_avg": V_AVG, "i_avg": I_AVG}
    assert [rt.split(".")[0] for _, rt in profiles["daily"].columns] == ["11"] * 4
    assert all(len(rt.split(".")) == 18 for p in profiles.values() for _, rt in p.columns)


DOMAIN_CODES = [*range(1, 13), *range(51, 71), 83, 84, 101, 102, 151, 152, 154, 155, 157, 158, 159,
                160, 166, *range(201, 217), 251, 252, 253, 301, 302]


def test_every_is15959_code_of_the_domain_has_its_own_cim_event_type():
    # Given the IS 15959 table loaded from transformers/data/is15959_events.yaml
    codes = is15959_events()
    # Then every code DOMAIN.md lists is there, each with a distinct 4-field CIM code
    assert sorted(codes) == sorted(DOMAIN_CODES)
    types = [c.event_type for c in codes.values()]
    assert len(set(types)) == len(types)
    assert all(t.startswith("3.") and len(t.split(".")) == 4 for t in types)
    # and the standard codes of DOMAIN.md are used where they exist
    assert {k: codes[k].event_type for k in (101, 102, 251, 201, 202, 301, 302)} == {
        101: "3.26.0.85", 102: "3.26.0.216", 251: "3.12.29.212", 201: "3.12.66.242",
        202: "3.12.66.243", 301: "3.31.0.68", 302: "3.31.0.42"}


def test_event_classes_follow_the_routing_design():
    # Given the routing classes of DOMAIN.md
    # Then outage events are also critical, tamper is fraud, weld is health and critical
    assert event_classes("3.26.0.85") == ("outage", "critical")
    assert set(event_classes("3.12.29.212")) == {"fraud", "critical"}
    assert set(is15959_events()[252].classes) == {"health", "critical"}
    assert is15959_events()[205].classes == ("health",)
    assert is15959_events()[65].classes == ("fraud",)
    assert event_classes("9.9.9.9") == ()


def test_a_20000_row_block_load_decodes_whole_in_chunks():
    # Given 20,000 block-load rows in 1,000-row chunks, 200 meters, sorted by time
    stamps = [f"2026-11-01T{h:02d}:{m:02d}:00+05:30" for h in range(24) for m in (0, 15, 30, 45)]
    rows = [f"UPM{m:08d},{t},0.{m % 997:03d},0.000,0.{m % 991:03d},0.000,231.{m % 10},1.{m % 99:02d}"
            for t in stamps[:100] for m in range(200)]
    chunks = [SourceChunk(BLOCK_HEADER + "\n" + "\n".join(rows[i:i + 1000]), "f.csv", i + 2)
              for i in range(0, len(rows), 1000)]
    decoder = HesACsvDecoder()
    # When they are decoded, chunk by chunk
    readings = _decode_all(decoder, chunks)
    # Then every row becomes its readings and none is rejected.  (How fast: `gridbus bench
    # ingest` reports the worker's CPU per 1,000 rows; a timed unit test would only flake.)
    assert readings == len(rows) * 6


def _decode_all(decoder, chunks) -> int:
    readings = 0
    for chunk in chunks:
        context = _context()
        readings += count_values(decoder(chunk, context))[0]
        assert not context.rejections
    return readings
