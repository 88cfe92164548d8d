"""Hostile HES-A CSV input (issue 16): every line accounted for, numbers that are what they look like.

The decoder is tested on its own: a chunk in, readings and rejections out.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.errors import ConfigError, RouteValidationError
from bus.routes import load_routes
from bus.transform import SourceChunk, TransformContext
from transformers.hes_a_csv import HesACsvDecoder

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
    # Then both are named, with the file and line of the options
    text = str(caught.value)
    assert f"{path}:9:" in text
    assert "kwh_impp" in text and "did you mean 'kwh_imp'" in text
    assert "v_avg" in text


def test_check_options_accepts_the_defaults_and_refuses_a_non_number():
    # Given no options, and a limit written as text
    # Then the first is fine and the second is a ConfigError naming the route
    HesACsvDecoder().check_options({}, "r1")
    with pytest.raises(ConfigError, match="r1.*plausible_max.kwh_imp"):
        HesACsvDecoder().check_options({"plausible_max": {"kwh_imp": "lots"}}, "r1")


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
