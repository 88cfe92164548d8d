"""csv_readings: each option of the declarative HES CSV decoder, on a small file in the dialect it serves.

Every file goes the way the ingress takes it: the route is loaded from YAML (so its mapping is
checked as at start-up), the bytes are transcoded as the file-drop ingress does (encoding,
preamble), surveyed and cut into chunks, and the chunks decoded.
"""
from __future__ import annotations

import codecs
import textwrap
from pathlib import Path

import pytest

from bus.errors import DecodeError, RouteValidationError
from bus.routes.loader import load_routes
from bus.transform import TransformContext
from connectors.file_drop import split, transcode
from connectors.file_drop.survey import survey_csv

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
V_AVG = "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0"
DAILY = "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def route(tmp_path: Path, mapping: str, route_id: str = "hes-x-csv"):
    """A file-drop route to MDMS-1 whose csv_readings mapping is ``mapping`` (YAML, indented freely)."""
    body = textwrap.indent(textwrap.dedent(mapping).strip(), " " * 8)
    path = tmp_path / "hes-x.yaml"
    path.write_text(textwrap.dedent(f"""\
        use_case: 1
        routes:
          - id: {route_id}
            source: {{system: hes-x, connector: file-drop, path: {tmp_path}/inbox, pattern: "*.csv"}}
            method: file-batch
            transform: [csv_readings, to_mdms_json]
            destinations:
              - {{system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}}
            queue: {{batch_size: 3}}
            options:
              csv_readings:
        """) + body + "\n", encoding="utf-8")
    return load_routes([path], env={}).routes[0]


def decode(tmp_path: Path, r, data: bytes):
    """What the worker hands on for a file of ``data`` dropped in route ``r``'s inbox:
    (documents, rejections as (line, reason), rows read)."""
    decoder = transcode.bound_decoder(r)
    raw = tmp_path / "drop.csv"
    raw.write_bytes(data)
    read = raw
    if transcode.needed(decoder):
        read = tmp_path / "drop.utf8"
        transcode.transcode_file(raw, read, decoder, 1 << 20)
    survey = survey_csv(read, 1 << 20, decoder)
    docs, rejections, rows = [], [], 0
    for chunk in split.csv_chunks(read, r.queue.batch_size, survey, decoder, r.options, "drop.csv"):
        rejections += [(x["line"], x["reason"]) for x in chunk.rejections]
        context = TransformContext(r.id, "hes-x", "m", "c", options=dict(r.options))
        docs.append(__import__("bus.registry", fromlist=["x"]).transformer("csv_readings")(chunk.source, context))
        rejections += [(x.line, x.reason) for x in context.rejections]
        rows += context.rows_in
    return docs, sorted(rejections), rows


def readings(docs) -> set[tuple]:
    """(meter, readingType, timeStamp, value) of every reading in the documents."""
    out = set()
    for doc in docs:
        for mr in doc["MeterReading"]:
            for block in mr.get("intervalBlocks", []):
                out |= {(mr["meter"], block["readingType"], iv["timeStamp"], iv["value"])
                        for iv in block["intervalReadings"]}
            out |= {(mr["meter"], r["readingType"], r["timeStamp"], r["value"]) for r in mr.get("readings", [])}
    return out


WIDE = """
time_zone: Asia/Kolkata
profiles:
  block:
    kind: interval
    meter: meter
    time: end
    quantities:
      kwh: {reading_type: %s}
""" % KWH_IMP


# ------------------------------------------------------------------ encodings

@pytest.mark.parametrize("encoding", ["latin-1", "windows-1252"])
def test_a_single_byte_encoding_is_read_with_its_own_characters(tmp_path, encoding):
    # Given a vendor whose header names the meter column in German, in a single-byte encoding
    r = route(tmp_path, f"""
        encoding: {encoding}
        time_zone: Asia/Kolkata
        profiles:
          block: {{kind: interval, meter: Zählernummer, time: end, quantities: {{kwh: {{reading_type: {KWH_IMP}}}}}}}
    """)
    data = "Zählernummer,end,kwh\nM1,2026-11-01T00:15:00,1.5\n".encode(encoding)
    # When the file is read
    docs, rejections, rows = decode(tmp_path, r, data)
    # Then the column is found and the reading is in UTC
    assert readings(docs) == {("M1", KWH_IMP, "2026-10-31T18:45:00Z", 1.5)}
    assert rejections == [] and rows == 1


def test_utf16_with_a_bom_is_read_and_without_one_the_file_is_refused(tmp_path):
    # Given a UTF-16 vendor
    r = route(tmp_path, "encoding: utf-16\n" + WIDE)
    text = "meter,end,kwh\r\nM1,2026-11-01T00:15:00+05:30,2\r\n"
    # When its file comes with a byte order mark (big-endian here), it is read
    docs, _, _ = decode(tmp_path, r, codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert readings(docs) == {("M1", KWH_IMP, "2026-10-31T18:45:00Z", 2.0)}
    # And without one it is refused whole, saying why
    with pytest.raises(DecodeError, match="byte order mark"):
        decode(tmp_path, r, text.encode("utf-16-le"))


def test_utf8_with_a_bom_and_a_byte_outside_the_encoding_named_by_line(tmp_path):
    # Given a UTF-8 file with a BOM, and a Windows-1252 file with a byte that encoding lacks (0x81) on line 3
    docs, _, _ = decode(tmp_path, route(tmp_path, WIDE),
                        codecs.BOM_UTF8 + b"meter,end,kwh\nM1,2026-11-01T00:15:00,1\n")
    assert readings(docs) == {("M1", KWH_IMP, "2026-10-31T18:45:00Z", 1.0)}
    r = route(tmp_path, "encoding: windows-1252\n" + WIDE)
    # Then the first is read, and the second refused naming the line
    with pytest.raises(DecodeError, match="line 3"):
        decode(tmp_path, r, b"meter,end,kwh\nM1,2026-11-01T00:15:00,1\nM\x81,2026-11-01T00:15:00,1\n")


# ------------------------------------------------------------------ dialect

def test_semicolons_quotes_and_a_decimal_comma(tmp_path):
    # Given a European export: semicolons, single quotes, decimal commas
    r = route(tmp_path, "delimiter: ';'\nquote: \"'\"\ndecimal: ','\n" + WIDE)
    data = b"meter;end;kwh\n'M;1';2026-11-01T00:15:00;1,25\nM2;2026-11-01T00:15:00;1.234,5\n"
    # When it is read
    docs, rejections, _ = decode(tmp_path, r, data)
    # Then the quoted meter keeps its semicolon, 1,25 is 1.25, and a thousands mark is refused
    assert readings(docs) == {("M;1", KWH_IMP, "2026-10-31T18:45:00Z", 1.25)}
    assert [line for line, _ in rejections] == [3]
    assert "not a plain decimal number" in rejections[0][1] and "','" in rejections[0][1]


def test_lines_before_the_header_are_skipped_and_rows_keep_their_line_numbers(tmp_path):
    # Given a vendor banner of two lines before the header
    r = route(tmp_path, "skip_lines: 2\n" + WIDE)
    data = b"HES-X export v2\ncreated 2026-11-01\nmeter,end,kwh\nM1,2026-11-01T00:15:00,1\nM2,bad,1\n"
    # When it is read
    docs, rejections, rows = decode(tmp_path, r, data)
    # Then the bad row is named by its line in the file the vendor sent (5), and the good one is read
    assert readings(docs) == {("M1", KWH_IMP, "2026-10-31T18:45:00Z", 1.0)}
    assert [line for line, _ in rejections] == [5] and rows == 2


def test_column_aliases_find_the_column_under_another_name(tmp_path):
    # Given a mapping that knows two names for each column
    r = route(tmp_path, f"""
        profiles:
          block:
            kind: interval
            meter: [meter_serial, MeterNo]
            time: [interval_end, EndTime]
            quantities:
              kwh: {{reading_type: {KWH_IMP}, aliases: [kWh_Import]}}
    """)
    # When a file uses the second names
    docs, _, _ = decode(tmp_path, r, b"MeterNo,EndTime,kWh_Import\nM1,2026-11-01T00:15:00Z,3\n")
    # Then it is read
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-01T00:15:00Z", 3.0)}


# ------------------------------------------------------------------ times

def test_date_and_time_in_two_columns_with_a_pattern_and_a_zone_with_daylight_saving(tmp_path):
    # Given a German vendor: date and time apart, day first, local time in Europe/Berlin
    r = route(tmp_path, f"""
        delimiter: ";"
        time_zone: Europe/Berlin
        profiles:
          block:
            kind: interval
            meter: meter
            date: Datum
            time: Zeit
            time_format: "%d.%m.%Y %H:%M"
            quantities:
              kwh: {{reading_type: {KWH_IMP}}}
    """)
    data = b"meter;Datum;Zeit;kwh\nM1;01.07.2026;12:15;1\nM1;01.12.2026;12:15;2\nM1;2026-12-01;12:15;3\n"
    # When it is read
    docs, rejections, _ = decode(tmp_path, r, data)
    # Then summer time is UTC+2 and winter time UTC+1, and a date in another form is refused naming the pattern
    assert readings(docs) == {("M1", KWH_IMP, "2026-07-01T10:15:00Z", 1.0),
                              ("M1", KWH_IMP, "2026-12-01T11:15:00Z", 2.0)}
    assert [line for line, _ in rejections] == [4] and "%d.%m.%Y %H:%M" in rejections[0][1]


def test_a_time_that_marks_the_start_of_its_interval_becomes_the_end(tmp_path):
    # Given a vendor whose 30-minute intervals are stamped with their start
    r = route(tmp_path, f"""
        profiles:
          block: {{kind: interval, meter: meter, time: start, time_marks: start, interval_s: 1800,
                   quantities: {{kwh: {{reading_type: {KWH_IMP}}}}}}}
    """)
    # When it is read
    docs, _, _ = decode(tmp_path, r, b"meter,start,kwh\nM1,2026-11-01T23:30:00Z,1\n")
    # Then the canonical time is the end of the interval, across midnight
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-02T00:00:00Z", 1.0)}


def test_a_register_profile_reads_a_bare_date_as_local_midnight(tmp_path):
    # Given daily registers with bare dates, in India
    r = route(tmp_path, f"""
        time_zone: Asia/Kolkata
        profiles:
          daily: {{kind: register, meter: meter, time: day, quantities: {{kwh_cum: {{reading_type: {DAILY}}}}}}}
    """)
    docs, _, _ = decode(tmp_path, r, b"meter,day,kwh_cum\nM1,2026-11-02,12345.5\n")
    # Then the reading is a register at local midnight
    assert readings(docs) == {("M1", DAILY, "2026-11-01T18:30:00Z", 12345.5)}
    assert "readings" in docs[0]["MeterReading"][0]


# ------------------------------------------------------------------ values

def test_watt_hours_scaled_to_kilowatt_hours_exactly(tmp_path):
    # Given a vendor writing Wh, mapped to a kWh ReadingType with scale 0.001
    r = route(tmp_path, f"""
        profiles:
          block: {{kind: interval, meter: meter, time: end, quantities: {{wh: {{reading_type: {KWH_IMP}, scale: 0.001, max: 50}}}}}}
    """)
    # When it is read
    docs, rejections, _ = decode(tmp_path, r, b"meter,end,wh\nM1,2026-11-01T00:15:00Z,1234\nM2,2026-11-01T00:15:00Z,90000\n")
    # Then 1234 Wh is 1.234 kWh as written, and the maximum applies after scaling (90 kWh > 50)
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-01T00:15:00Z", 1.234)}
    assert [line for line, _ in rejections] == [3] and "plausible maximum 50" in rejections[0][1]


def test_values_that_mean_missing_are_skipped_not_rejected(tmp_path):
    # Given a vendor writing NA and - for values it has not
    r = route(tmp_path, f"""
        missing: ["", NA, "-"]
        profiles:
          block: {{kind: interval, meter: meter, time: end,
                   quantities: {{kwh: {{reading_type: {KWH_IMP}}}, kwh_exp: {{reading_type: {KWH_EXP}}}}}}}
    """)
    data = b"meter,end,kwh,kwh_exp\nM1,2026-11-01T00:15:00Z,NA,2\nM2,2026-11-01T00:15:00Z,-,\nM3,2026-11-01T00:15:00Z,x,1\n"
    # When it is read
    docs, rejections, rows = decode(tmp_path, r, data)
    # Then only the values present are readings, and only the row with a non-number is rejected
    assert readings(docs) == {("M1", KWH_EXP, "2026-11-01T00:15:00Z", 2.0)}
    assert [line for line, _ in rejections] == [4] and rows == 3


def test_a_signed_quantity_takes_negative_values_and_others_refuse_them(tmp_path):
    # Given a net-energy column that may be negative, beside one that may not
    r = route(tmp_path, f"""
        profiles:
          block: {{kind: interval, meter: meter, time: end,
                   quantities: {{net: {{reading_type: {KWH_IMP}, signed: true}}, v: {{reading_type: {V_AVG}}}}}}}
    """)
    docs, rejections, _ = decode(tmp_path, r, b"meter,end,net,v\nM1,2026-11-01T00:15:00Z,-1.5,230\nM2,2026-11-01T00:15:00Z,1,-230\n")
    # Then the negative net value is a reading, and the negative voltage rejects its row
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-01T00:15:00Z", -1.5), ("M1", V_AVG, "2026-11-01T00:15:00Z", 230.0)}
    assert [line for line, _ in rejections] == [3] and "negative" in rejections[0][1]


# ------------------------------------------------------------------ layouts

LONG = f"""
delimiter: ";"
decimal: ","
profiles:
  obis:
    kind: interval
    layout: long
    meter: device
    time: timestamp
    code: obis
    value: value
    quantities:
      "1.8.0": {{reading_type: {KWH_IMP}, scale: 0.001}}
      "2.8.0": {{reading_type: {KWH_EXP}, scale: 0.001}}
"""


def test_a_long_layout_maps_obis_codes_to_reading_types(tmp_path):
    # Given one row per meter, time and OBIS code, in Wh with decimal commas
    r = route(tmp_path, LONG)
    data = (b"device;timestamp;obis;value\n"
            b"M1;2026-11-01T00:15:00Z;1.8.0;1500\nM1;2026-11-01T00:15:00Z;2.8.0;250,5\n"
            b"M1;2026-11-01T00:30:00Z;1.8.0;1600\nM1;2026-11-01T00:30:00Z;9.9.9;1\n")
    # When it is read (in chunks of three rows, as the route's batch_size says)
    docs, rejections, rows = decode(tmp_path, r, data)
    # Then each code becomes its ReadingType in kWh, and an unknown code rejects its row, named
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-01T00:15:00Z", 1.5), ("M1", KWH_EXP, "2026-11-01T00:15:00Z", 0.2505),
                              ("M1", KWH_IMP, "2026-11-01T00:30:00Z", 1.6)}
    assert [line for line, _ in rejections] == [5] and "'9.9.9'" in rejections[0][1] and rows == 4


def test_a_long_layout_repeat_with_other_values_is_rejected_across_chunks(tmp_path):
    # Given the same meter, time and code twice with other values, in different chunks, and once the same again
    r = route(tmp_path, LONG)
    data = (b"device;timestamp;obis;value\n"
            b"M1;2026-11-01T00:15:00Z;1.8.0;1500\nM2;2026-11-01T00:15:00Z;1.8.0;1\nM3;2026-11-01T00:15:00Z;1.8.0;1\n"
            b"M1;2026-11-01T00:15:00Z;1.8.0;1700\nM1;2026-11-01T00:15:00Z;2.8.0;1700\nM2;2026-11-01T00:15:00Z;1.8.0;1\n")
    # When it is read
    docs, rejections, _ = decode(tmp_path, r, data)
    # Then the first value stands, the conflicting repeat is rejected naming the first line, the same repeat collapses
    assert ("M1", KWH_IMP, "2026-11-01T00:15:00Z", 1.5) in readings(docs)
    assert len(readings(docs)) == 4
    assert [line for line, _ in rejections] == [5] and "first at line 2" in rejections[0][1]


def test_an_event_log_with_the_vendors_own_codes(tmp_path):
    # Given an event log whose codes the vendor names itself, mapped to IS 15959 and to a CIM type
    r = route(tmp_path, """
        profiles:
          events:
            kind: events
            meter: meter
            code: what
            time: when
            codes: {PWR_FAIL: 101, MAGNET: "3.12.66.242"}
    """)
    data = b"meter,what,when\nM1,PWR_FAIL,2026-11-01T00:00:00Z\nM2,MAGNET,2026-11-01T00:00:05Z\nM3,SMOKE,2026-11-01T00:00:05Z\n"
    # When it is read
    docs, rejections, _ = decode(tmp_path, r, data)
    # Then both known codes are canonical events, the unknown one is rejected
    events = docs[0]["EndDeviceEvent"] + (docs[1]["EndDeviceEvent"] if len(docs) > 1 else [])
    assert [(e["meter"], e["isCode"]) for e in events][:1] == [("M1", 101)]
    assert {e["meter"] for e in events} == {"M1", "M2"}
    assert [line for line, _ in rejections] == [4]


# ------------------------------------------------------------------ the mapping is checked when routes load

@pytest.mark.parametrize("mapping, expected", [
    ("delimitr: ';'\n" + WIDE, "unknown key 'delimitr' (did you mean 'delimiter'?)"),
    ("time_zone: Asia/Kolkatta\nprofiles: {b: {kind: interval, meter: m, time: t, quantities: {k: {reading_type: %s}}}}"
     % KWH_IMP, "not an IANA time zone"),
    ("decimal: ','\n" + WIDE, "a decimal comma needs another delimiter"),
    ("profiles: {b: {kind: interval, layout: long, meter: m, time: t, quantities: {k: {reading_type: %s}}}}" % KWH_IMP,
     "a long layout names its code and value column"),
    ("profiles: {b: {kind: interval, meter: m, time: t, quantities: {k: {reading_type: 1.2.3}}}}", "18 dotted numbers"),
    ("profiles: {e: {kind: events, meter: m, time: t, code: c, codes: {X: 99999}}}", "neither an IS 15959 event code"),
    ("encoding: ebcdic\n" + WIDE, "Must be one of"),
])
def test_a_wrong_mapping_is_refused_at_load_with_file_and_line(tmp_path, mapping, expected):
    # Given a route whose mapping is wrong
    # When the routes load
    with pytest.raises(RouteValidationError) as caught:
        route(tmp_path, mapping)
    # Then the error names the file, a line inside the mapping, and what is wrong
    text = str(caught.value)
    assert expected in text, text
    assert f"{tmp_path}/hes-x.yaml:1" in text or f"{tmp_path}/hes-x.yaml:" in text
    assert all(e.line and e.line >= 10 for e in caught.value.errors), text


def test_an_unknown_top_level_option_names_the_chain_and_suggests(tmp_path):
    # Given a route whose options key is misspelt
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        routes:
          - id: hes-x
            source: {{system: hes-x, connector: file-drop, path: {tmp_path}, pattern: "*.csv"}}
            method: file-batch
            transform: [csv_readings, to_mdms_json]
            destinations: [{{system: mdms-1, connector: rest, url: "http://127.0.0.1:9/m"}}]
            options:
              csv_reading: {{}}
        """))
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env={})
    # Then both the unknown key and the missing mapping are named, at their lines
    text = str(caught.value)
    assert f"{path}:8: unknown key 'csv_reading' (did you mean 'csv_readings'?)" in text
    assert "csv_readings" in text and "missing" in text.lower()


# ------------------------------------------------------------------ hostile files

def test_hostile_files_are_refused_whole_or_row_by_row_never_crash(tmp_path):
    r = route(tmp_path, "skip_lines: 1\n" + WIDE)
    # Given a preamble line without end, far over the limit: refused whole, naming the line
    raw = tmp_path / "huge.csv"
    raw.write_bytes(b"x" * (3 << 20))
    with pytest.raises(DecodeError, match="line 1 is longer"):
        transcode.transcode_file(raw, tmp_path / "out", transcode.bound_decoder(r), 1 << 20)
    # And a file with nothing after its preamble: refused whole
    with pytest.raises(DecodeError, match="no header line"):
        decode(tmp_path, r, b"banner only\n")
    # And a file of binary junk after a good header: each bad line rejected, the good ones read
    data = b"banner\nmeter,end,kwh\nM1,2026-11-01T00:15:00Z,1\n\x00\x01,\xff\xfe\nM1,2026-11-01T00:15:00Z,1\n"
    with pytest.raises(DecodeError, match="not utf-8 text: line 4"):
        decode(tmp_path, r, data)  # utf-8 route: junk that is not UTF-8 refuses the file, as before
    r2 = route(tmp_path, "skip_lines: 1\nencoding: latin-1\n" + WIDE, route_id="hes-y-csv")
    docs, rejections, rows = decode(tmp_path, r2, data)
    assert readings(docs) == {("M1", KWH_IMP, "2026-11-01T00:15:00Z", 1.0)}
    assert [line for line, _ in rejections] == [4] and rows == 3
