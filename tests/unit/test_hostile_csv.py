"""Hostile HES-A CSV input (issue 16): every line accounted for, numbers that are what they look like.

The decoder is tested on its own (a chunk in, readings and rejections out) and
behind the file-drop survey and chunker (bytes of a file in), without a broker.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.errors import ConfigError, DecodeError, RouteValidationError
from bus.routes import load_routes
from bus.transform import SourceChunk, TransformContext
from transformers.hes_a_csv import HesACsvDecoder, check_options

HEADER = "meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg"
KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def row(meter: str = "M1", minute: int = 15, kwh: str = "0.100", hour: int = 0) -> str:
    return f"{meter},2026-11-01T{hour:02d}:{minute:02d}:00+05:30,{kwh},0.000,0.110,0.000,230.100,1.500"


def decode(body_lines: list[str], first_line: int = 2, **options) -> tuple[dict, TransformContext]:
    context = TransformContext("uc1-hes-a", "hes-a", "msg-1", "corr-1", options=options)
    text = HEADER + "\n" + "\n".join(body_lines) + "\n"
    return HesACsvDecoder()(SourceChunk(text, "hostile.csv", first_line), context), context


def readings(doc: dict) -> dict[tuple[str, str, str], float]:
    return {(mr["meter"], b["readingType"], r["timeStamp"]): r["value"]
            for mr in doc["MeterReading"] for b in mr.get("intervalBlocks", []) for r in b["intervalReadings"]}


def reasons(context: TransformContext) -> dict[int, str]:
    return {r.line: r.reason for r in context.rejections}


def thousand_rows() -> list[str]:
    return [row(f"M{i:04d}") for i in range(1000)]


# ------------------------------------------------------------- every line accounted for

def test_a_quote_that_never_closes_costs_only_its_own_line():
    # Given a 1,000-row chunk whose line 11 starts a quoted field that never closes
    lines = thousand_rows()
    lines[9] = lines[9].replace(",0.100,", ',"1.1,')
    # When it is decoded
    doc, context = decode(lines)
    # Then line 11 alone is rejected, with the reason, and the 999 other rows become readings
    assert list(reasons(context)) == [11]
    assert "quote" in reasons(context)[11]
    assert context.rows_in == 1000
    assert len(readings(doc)) == 999 * 6


def test_quoted_fields_that_close_on_their_line_are_read():
    # Given an HES that quotes every field
    quoted = ",".join(f'"{v}"' for v in row("M7").split(","))
    # When decoded
    doc, context = decode([quoted, row("M8")])
    # Then both rows are read
    assert context.rejections == [] and context.rows_in == 2
    assert len(readings(doc)) == 12


def test_a_field_over_the_csv_field_limit_rejects_its_row_only():
    # Given a chunk whose row 500 carries a field of 200,000 characters
    lines = thousand_rows()
    lines[498] = lines[498].replace("0.100", "1" * 200_000)
    # When decoded
    doc, context = decode(lines)
    # Then that line is rejected (not the chunk), and the others are readings
    assert list(reasons(context)) == [500]
    assert context.rows_in == 1000 and len(readings(doc)) == 999 * 6


def test_a_carriage_return_inside_a_line_rejects_that_line_and_keeps_the_numbering():
    # Given a lone CR in the middle of line 3 and a bad value on line 5
    lines = [row("M1"), row("M2").replace(",0.000,", ",0.0\r00,"), row("M3"), row("M4", kwh="x")]
    # When decoded
    doc, context = decode(lines)
    # Then line 3 is rejected and line 5 is still called line 5
    assert sorted(reasons(context)) == [3, 5]
    assert context.rows_in == 4 and len(readings(doc)) == 12


# ------------------------------------------------------------- numbers are what they look like

@pytest.mark.parametrize("value, why", [
    ("1_000", "not a plain decimal"),
    ("\uff11\uff12", "not a plain decimal"),    # full-width 12
    ("\u0661\u0662", "not a plain decimal"),    # Arabic-Indic 12
    ("1e308", "not a plain decimal"),
    ("1E-3", "not a plain decimal"),
    ("+1", "not a plain decimal"),
    ("0x10", "not a number"),
    ("-0", "negative"),
    ("-0.000", "negative"),
])
def test_numbers_that_are_not_plain_ascii_decimals_reject_the_row(value, why):
    # Given a row whose kwh_imp is spelled in a way float() would accept (or nearly)
    # When decoded
    doc, context = decode([row(kwh=value), row("M2")])
    # Then the row is rejected naming the column and the value, and the other row goes through
    assert list(reasons(context)) == [2]
    assert why in reasons(context)[2] and "kwh_imp" in reasons(context)[2]
    assert len(readings(doc)) == 6


@pytest.mark.parametrize("value, number", [(" 1.5 ", 1.5), ("7", 7.0), ("0.", 0.0), (".25", 0.25)])
def test_plain_decimals_with_surrounding_blanks_are_read(value, number):
    # Given plain ASCII decimals, padded or without a fraction
    doc, context = decode([row(kwh=value)])
    # Then they are read as they look
    assert context.rejections == []
    assert readings(doc)[("M1", KWH_IMP, "2026-10-31T18:45:00Z")] == number


def test_an_implausible_reading_rejects_the_row_naming_the_limit():
    # Given 5,000 kWh in 15 minutes (the default plausible maximum is far lower)
    doc, context = decode([row(kwh="5000"), row("M2")])
    # Then the row is rejected and the reason names the limit and the option that sets it
    assert list(reasons(context)) == [2]
    assert re.search(r"kwh_imp '5000' is above the plausible maximum \d+.* plausible_max\.kwh_imp",
                     reasons(context)[2])
    assert len(readings(doc)) == 6


def test_a_route_can_raise_or_lower_a_plausible_maximum():
    # Given a route whose meters are large (kwh_imp up to 10,000 per interval) and whose v_avg may not pass 250
    options = {"plausible_max": {"kwh_imp": 10_000, "v_avg": 250}}
    # When a 5,000 kWh row and a 260 V row are decoded
    doc, context = decode([row(kwh="5000"), row("M2").replace("230.100", "260")], **options)
    # Then the first is accepted and the second rejected, naming its limit
    assert readings(doc)[("M1", KWH_IMP, "2026-10-31T18:45:00Z")] == 5000.0
    assert list(reasons(context)) == [3] and "plausible maximum 250" in reasons(context)[3]


def test_event_codes_must_be_ascii_digits():
    # Given event-log rows whose codes are 101 in Arabic-Indic digits and 1_01
    text = ("meter_serial,event_code,event_time,hes_received\n"
            "M1,\u0661\u0660\u0661,2026-11-01T00:10:12+05:30,\n"
            "M1,1_01,2026-11-01T00:11:12+05:30,\n"
            "M1,101,2026-11-01T00:12:12+05:30,\n")
    context = TransformContext("uc1-hes-a", "hes-a", "msg-1", "corr-1")
    # When decoded
    doc = HesACsvDecoder()(SourceChunk(text, "events.csv"), context)
    # Then only the plain code is an event
    assert sorted(reasons(context)) == [2, 3]
    assert len(doc["EndDeviceEvent"]) == 1


ROUTES = """\
use_case: 1
routes:
  - id: hes-a-csv-to-mdms-1
    source: {system: hes-a, connector: file-drop, path: /tmp/inbox/hes-a, pattern: "*.csv"}
    method: file-batch
    transform: [hes_a_csv, to_mdms_json]
    destinations:
      - {system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}
    options:
      plausible_max: {kwh_imp: 10000, kwh_impp: 3, v_avg: -1}
"""


def test_plausibility_options_are_checked_when_the_routes_load(tmp_path):
    # Given a route with an unknown column and a negative limit
    path = tmp_path / "uc1.yaml"
    path.write_text(ROUTES)
    # When the routes are loaded
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env={})
    # Then both are named, with the file and line of the option
    text = str(caught.value)
    assert f"{path}:10:" in text
    assert "kwh_impp" in text and "did you mean 'kwh_imp'" in text
    assert "v_avg" in text


def test_check_options_accepts_the_defaults_and_refuses_a_non_number():
    # Given no options, and a limit written as text
    # Then the first is fine and the second is a ConfigError naming the route
    check_options({}, "r1")
    with pytest.raises(ConfigError, match="r1.*plausible_max.kwh_imp"):
        check_options({"plausible_max": {"kwh_imp": "lots"}}, "r1")


# ------------------------------------------------------------- duplicates

def test_a_repeat_that_spells_the_same_values_differently_is_not_a_conflict():
    # Given the same meter and interval twice, with 0.1 written as 0.100 and as 0.1
    doc, context = decode([row(kwh="0.100"), row(kwh="0.1")])
    # Then it collapses into one reading, no rejection
    assert context.rejections == [] and len(readings(doc)) == 6


def test_a_conflicting_repeat_in_the_same_chunk_names_both_lines():
    # Given the same meter and interval with two values
    doc, context = decode([row(kwh="0.100"), row("M2"), row(kwh="0.200")])
    # Then the later row is rejected naming the earlier one; the first value stays
    assert reasons(context) == {4: "meter M1: second row for 2026-10-31T18:45:00Z with other values "
                                    "(first at line 2)"}
    assert readings(doc)[("M1", KWH_IMP, "2026-10-31T18:45:00Z")] == 0.1


# ------------------------------------------------------------- property: the decoder alone

TOKENS = ['"', '"1.1', "\r", "\x00", "\uff11\uff12", "\u0661", "1_0", "1e3", "-0", "nan", " ", ",,", "x" * 40,
          "2026-11-01T00:15:00+05:30", "2026-13-01", "\u2028", "\x85", "M1"]
FIELD = st.one_of(st.sampled_from(TOKENS), st.text(max_size=8), st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
LINE = st.one_of(
    st.builds(row, st.sampled_from(["M1", "M2", "M3"]), st.sampled_from([0, 15, 30, 45]),
              st.sampled_from(["0.100", "0.200", "0.1"])),
    st.lists(FIELD, min_size=1, max_size=10).map(",".join),
    st.just(""),
    st.text(max_size=30),
).map(lambda line: line.replace("\n", ""))  # the chunker cut the file at every LF


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=25), first_line=st.integers(2, 10_000))
@example(lines=[row(), '"1.1,' + row("M2"), row("M3")], first_line=2)
def test_any_chunk_decodes_with_every_nonblank_line_accepted_or_rejected_once(lines, first_line):
    # Given any chunk text (its lines never contain LF: the chunker cut them there)
    # When it is decoded
    doc, context = decode(lines, first_line)
    # Then rows read (non-blank lines) = accepted + rejected, each rejection on its own line of the chunk
    data_lines = [first_line + i for i, line in enumerate(lines) if line.strip(" \t\r")]
    rejected = [r.line for r in context.rejections]
    assert context.rows_in == len(data_lines)
    assert len(set(rejected)) == len(rejected) and set(rejected) <= set(data_lines)
    assert all(r.reason for r in context.rejections)
    assert len(readings(doc)) <= 6 * (len(data_lines) - len(rejected))


# ------------------------------------------------------------- property: bytes of a file through the ingress

def file_bytes() -> st.SearchStrategy[bytes]:
    line = st.one_of(LINE.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=20))
    body = st.lists(line, max_size=30)
    header = st.sampled_from([HEADER.encode(), b"\xef\xbb\xbf" + HEADER.encode(), b"serial,when", b"",
                              HEADER.encode() + b',"extra'])
    eol = st.sampled_from([b"\n", b"\r\n"])
    return st.one_of(st.builds(lambda h, b, e, end: e.join([h, *b]) + (e if end else b""),
                               header, body, eol, st.booleans()),
                     st.binary(max_size=200))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=file_bytes(), batch=st.integers(1, 7))
@example(data=(HEADER + "\n" + row() + "\n" + row("M2") + "\n" + row(kwh="0.9") + "\n").encode(), batch=1)
@example(data=(HEADER + "\n" + row() + "\nM2,\xff\n").encode("latin-1"), batch=2)
def test_any_file_is_rejected_whole_naming_a_line_or_every_data_line_is_accepted_or_rejected(tmp_path, data, batch,
                                                                                              memory):
    from connectors.file_drop import split
    from connectors.file_drop.survey import survey_csv
    # Given any bytes in a .csv file
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    decoder = HesACsvDecoder()
    # When the ingress surveys it
    try:
        survey = survey_csv(path, max_line_bytes=4096, decoder=decoder)
    except DecodeError as exc:
        # Then either the whole file is refused with a reason that names the line
        assert re.search(r"line \d+|header|empty", str(exc)), str(exc)
        return
    # or it is cut into chunks and decoded: rows read = accepted + rejected, each rejection on its own line
    decoded, ingress_rejected, rejected = 0, 0, []
    for chunk in split.csv_chunks(path, batch, survey, decoder=decoder):
        context = TransformContext("r", "hes-a", "m", "c")
        decoder(chunk.source, context)
        assert context.rows_in == chunk.rows
        decoded += chunk.rows
        ingress_rejected += len(chunk.rejections)
        rejected += [r.line for r in context.rejections] + [r["line"] for r in chunk.rejections]
        assert all(r.reason for r in context.rejections) and all(r["reason"] for r in chunk.rejections)
    assert decoded + ingress_rejected == survey.data_rows
    assert len(set(rejected)) == len(rejected)
    assert all(2 <= line <= survey.lines for line in rejected)


# ------------------------------------------------------------- the file-drop ingress, without a broker

def write_csv(tmp_path: Path, lines: list[str], name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["remembered", "read-twice"])
def memory(request, monkeypatch):
    """The chunker remembers every fingerprint, or (a file over TRACKED_ROWS) only those that repeat,
    found by a second read in segments of EXACT_FINGERPRINTS."""
    if request.param == "read-twice":
        monkeypatch.setattr("connectors.file_drop.split.TRACKED_ROWS", 10)
        monkeypatch.setattr("connectors.file_drop.survey.EXACT_FINGERPRINTS", 64)
    return request.param


def test_conflicting_rows_far_apart_reject_the_later_one_naming_both_lines(tmp_path, memory):
    from connectors.file_drop import split
    from connectors.file_drop.survey import survey_csv
    # Given 2,500 rows in chunks of 1,000, where line 1,300 repeats line 100's meter and interval with another value
    lines = [row(f"M{i:04d}") for i in range(2500)]
    lines[1298] = row("M0098", kwh="0.900")
    path = write_csv(tmp_path, lines)
    decoder = HesACsvDecoder()
    # When the ingress surveys and cuts the file and the chunks are decoded
    survey = survey_csv(path, decoder=decoder)
    chunks = list(split.csv_chunks(path, 1000, survey, decoder=decoder))
    values = {}
    for chunk in chunks:
        values.update(readings(HesACsvDecoder()(chunk.source, TransformContext("r", "hes-a", "m", "c"))))
    # Then the later row is rejected, naming the earlier line, and never reaches the decoder
    assert [r for c in chunks for r in c.rejections] == [
        {"line": 1300, "reason": "meter M0098: second row for 2026-10-31T18:45:00Z with other values "
                                 "(first at line 100)"}]
    assert [c.rows for c in chunks] == [1000, 999, 500]
    assert values[("M0098", KWH_IMP, "2026-10-31T18:45:00Z")] == 0.1


def test_the_first_row_the_decoder_takes_wins_and_later_ones_are_compared_with_it(tmp_path, memory):
    from connectors.file_drop import split
    from connectors.file_drop.survey import survey_csv
    # Given M0001 at 00:15 on line 3 with a value that is not a number, then with 0.5 on line 1,200, then
    # again with 0.5 (a repeat) on line 1,500 and with 0.7 (a conflict) on line 2,400, in chunks of 1,000
    lines = [row(f"M{i:04d}", minute=0, hour=1) for i in range(2500)]
    lines[1], lines[1198], lines[1498], lines[2398] = (row("M0001", kwh="x"), row("M0001", kwh="0.5"),
                                                       row("M0001", kwh="0.500"), row("M0001", kwh="0.7"))
    path = write_csv(tmp_path, lines)
    decoder = HesACsvDecoder()
    # When surveyed and cut
    chunks = list(split.csv_chunks(path, 1000, survey_csv(path, decoder=decoder), decoder=decoder))
    # Then only line 2,400 is rejected by the ingress, naming line 1,200 (line 3 is the decoder's to reject)
    assert [r for c in chunks for r in c.rejections] == [
        {"line": 2400, "reason": "meter M0001: second row for 2026-10-31T18:45:00Z with other values "
                                 "(first at line 1200)"}]


def test_a_repeat_far_apart_with_the_same_values_is_not_a_conflict(tmp_path, memory):
    from connectors.file_drop import split
    from connectors.file_drop.survey import survey_csv
    # Given line 1,300 repeating line 100 exactly, only spelled 0.1 instead of 0.100
    lines = [row(f"M{i:04d}") for i in range(1500)]
    lines[1298] = row("M0098", kwh="0.1")
    path = write_csv(tmp_path, lines)
    # When surveyed and cut
    survey = survey_csv(path, decoder=HesACsvDecoder())
    chunks = list(split.csv_chunks(path, 1000, survey, decoder=HesACsvDecoder()))
    # Then nothing is rejected
    assert [r for c in chunks for r in c.rejections] == [] and sum(c.rows for c in chunks) == 1500


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path):
    from connectors.file_drop.survey import survey_csv
    # Given a byte 0xff on line 4
    path = tmp_path / "latin.csv"
    path.write_bytes((HEADER + "\n" + row() + "\n" + row("M2") + "\n").encode() + b"M3,\xff\xfe\n" + row().encode())
    # When surveyed / Then the reason names line 4, not an offset within some block
    with pytest.raises(DecodeError, match=r"not UTF-8 text: line 4, byte 4"):
        survey_csv(path, decoder=HesACsvDecoder())


def test_a_line_longer_than_the_maximum_refuses_the_file(tmp_path):
    from connectors.file_drop.survey import survey_csv
    # Given a file of one 20,000-byte line
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"x," * 10_000)
    # When surveyed with max_line_bytes 4,096 / Then it is refused naming the line and the limit
    with pytest.raises(DecodeError, match=r"line 1 is longer than max_line_bytes \(4096\)"):
        survey_csv(path, max_line_bytes=4096, decoder=HesACsvDecoder())


def test_the_survey_counts_physical_lines_and_blank_lines(tmp_path):
    from connectors.file_drop.survey import survey_csv
    # Given CRLF lines, a blank line, a whitespace line and no newline at the end
    path = tmp_path / "crlf.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + row() + "\r\n\r\n  \r\n" + row("M2")).encode())
    # When surveyed
    survey = survey_csv(path, decoder=HesACsvDecoder())
    # Then lines, data rows and blank lines are those of the file
    assert (survey.lines, survey.data_rows, survey.blank_lines) == (5, 2, 2)
    assert survey.header.startswith("meter_serial")


@pytest.mark.parametrize("name, problem", [
    ("ok\udcff.csv", "not UTF-8"),
    ("x" * 237 + ".csv", "longer than"),
    ("new\nline.csv", "control character"),
])
def test_file_names_that_cannot_be_archived_are_named_as_such(name, problem):
    from connectors.file_drop.inbox import name_problem, safe_name
    # Given a name with a byte that is not UTF-8, one too long for the archive's names, one with a newline
    # Then each has a problem, and its safe name is short printable ASCII, different for different names
    assert problem in name_problem(name)
    safe = safe_name(name)
    assert safe.isascii() and safe.isprintable() and len(safe) <= 120 and safe != safe_name(name + "x")
    assert name_problem("UPM-2026-11-01_block-load.csv") is None


def test_a_file_is_ready_only_when_unchanged_for_the_settle_time_or_when_its_marker_is_there(tmp_path):
    from connectors.file_drop.inbox import Readiness
    # Given a clock we move by hand, a file still being written and a file with its marker
    now = [100.0]
    growing, marked = tmp_path / "growing.csv", tmp_path / "marked.csv"
    growing.write_text("a\n")
    marked.write_text("a\n")
    (tmp_path / "marked.csv.done").write_text("")
    plain = Readiness(settle_s=5, clock=lambda: now[0])
    with_marker = Readiness(settle_s=5, marker_suffix=".done", clock=lambda: now[0])
    # When the growing file changes within the settle time
    assert plain.ready([growing]) == []
    now[0] += 4
    growing.write_text("a\nb\n")
    now[0] += 4
    # Then it is not ready; once unchanged for 5 s it is
    assert plain.ready([growing]) == []
    now[0] += 5
    assert plain.ready([growing]) == [growing]
    # and with a marker suffix, only a file whose marker exists is ready, at once
    assert with_marker.ready([growing, marked]) == [marked]


def test_symlinks_are_not_candidates_but_are_reported(tmp_path):
    from connectors.file_drop.inbox import scan
    # Given a CSV, a link to a CSV outside the inbox, and a file in the middle of an upload
    outside = tmp_path / "outside.csv"
    outside.write_text(HEADER + "\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "real.csv").write_text(HEADER + "\n")
    (inbox / "link.csv").symlink_to(outside)
    (inbox / "upload.csv.part").write_text("")
    # When the inbox is scanned
    found = scan(inbox, "*.csv")
    # Then only the real file is a candidate, and the link is set apart
    assert found.files == [inbox / "real.csv"] and found.links == [inbox / "link.csv"]


def test_a_report_does_not_call_a_file_delivered_unless_every_line_is_accounted_for():
    from connectors.file_drop.reconcile import build_report
    # Given a 1,000-row chunk of which the decoder saw 10 rows (the stray-quote symptom), and a balanced file
    file = {"route": "r", "name": "f.csv", "checksum": "c" * 64, "archive_path": "/a/f.csv", "received_at": 0,
            "rows": 1000, "chunks": 1}
    chunks = [{"chunk": 0, "first_line": 2, "last_line": 1001, "rows": 1000}]
    short = [{"chunk": 0, "result": "delivered", "rows_in": 10, "rejected": [{"line": 11, "reason": "bad"}],
              "readings": 54, "message_id": "m0", "reason": ""}]
    whole = [{**short[0], "rows_in": 1000}]
    # When the reports are built
    bad, good = build_report(file, short, chunks, {}), build_report(file, whole, chunks, {})
    # Then the first is not delivered and names the lines nobody accounted for; the second balances
    assert bad["status"] == "incomplete" and bad["chunks_delivered"] == 0
    assert bad["unaccounted"] == [{"chunk": 0, "first_line": 2, "last_line": 1001, "rows": 1000,
                                   "rows_decoded": 10, "result": "delivered"}]
    assert good["status"] == "delivered" and good["rows_accepted"] + good["rows_rejected"] == 1000
