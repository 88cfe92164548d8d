"""The HES file generator writes what its summary says, exactly."""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simulators.hes_files import BLOCK_LOAD_READING_TYPES, HEADERS, generate

REPO = Path(__file__).resolve().parents[2]
IS_15959_CODES = {101, 102, 151, 201, 202, 203, 204, 205, 206, 215, 216, 251}


def parse_csv(path: str, profile: str) -> dict:
    """An independent reader: valid rows, malformed line numbers, exact repeats."""
    valid, malformed, seen, repeats = [], [], set(), 0
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        for line_no, row in enumerate(reader, start=2):
            try:
                if len(row) != len(header):
                    raise ValueError("field count")
                if profile == "events":
                    int(row[1])
                    dt.datetime.fromisoformat(row[2])
                    dt.datetime.fromisoformat(row[3])
                elif profile == "daily":
                    dt.date.fromisoformat(row[1])
                    [float(x) for x in row[2:]]
                else:
                    dt.datetime.fromisoformat(row[1])
                    [float(x) for x in row[2:]]
            except ValueError:
                malformed.append(line_no)
                continue
            key = tuple(row)
            repeats += key in seen
            seen.add(key)
            valid.append(row)
    return {"header": header, "valid": valid, "malformed": malformed, "repeats": repeats,
            "rows": line_no - 1}


def readings_of(rows: list[list[str]], profile: str) -> set[tuple]:
    if profile == "events":
        return {(r[0], r[1], r[2]) for r in rows}
    return {(r[0], column, r[1]) for r in rows for column in range(2, len(r))}


@pytest.mark.parametrize("profile", ["block-load", "daily", "events"])
def test_summary_matches_what_an_independent_reader_finds(tmp_path, profile):
    # Given a file with many duplicates, gaps and malformed rows
    summary = generate(tmp_path, meters=12, days=3, profile=profile, seed=5,
                       missing_share=0.05, duplicate_share=0.05, malformed_rows=6)

    # When the file is read back without the generator's help
    found = parse_csv(summary.path, profile)

    # Then every count in the summary is exact
    assert found["header"] == HEADERS[profile].split(",")
    assert found["malformed"] == summary.malformed_lines and len(summary.malformed_lines) == 6
    assert found["repeats"] == summary.duplicate_rows
    assert found["rows"] == summary.rows_written
    assert len(found["valid"]) == summary.distinct_valid_rows + summary.duplicate_rows
    assert len(readings_of(found["valid"], profile)) == summary.expected_readings
    assert summary.meters == len({r[0] for r in found["valid"]})


def test_malformed_rows_only_repeat_values_already_in_the_file(tmp_path):
    # Given a block-load file with malformed rows
    summary = generate(tmp_path, meters=5, days=1, seed=2, malformed_rows=9)
    lines = Path(summary.path).read_text().splitlines()

    # When a lenient reader salvages the intact fields of each malformed row
    valid = {tuple(line.split(",")[:2]) for i, line in enumerate(lines[1:], start=2)
             if i not in summary.malformed_lines}
    salvaged = [lines[i - 1].split(",")[:2] for i in summary.malformed_lines]

    # Then it finds no (meter, interval) it did not already have: expected_readings holds
    assert all(tuple(s) in valid or "25:61" in s[1] for s in salvaged)


@pytest.mark.parametrize("profile,rows", [("block-load", 1000), ("daily", 250), ("events", 120)])
def test_rows_asks_for_an_exact_number_of_data_rows(tmp_path, profile, rows):
    # Given a request for an exact number of rows rather than meters x days
    summary = generate(tmp_path, rows=rows, profile=profile, seed=11)

    # When the file is counted
    lines = Path(summary.path).read_text().splitlines()

    # Then it has exactly that many data rows below the header
    assert summary.rows_written == rows == len(lines) - 1
    found = parse_csv(summary.path, profile)
    assert len(readings_of(found["valid"], profile)) == summary.expected_readings


def test_block_load_values_are_physically_consistent(tmp_path):
    # Given only rooftop-solar meters, no gaps or duplicates
    summary = generate(tmp_path, meters=6, days=1, seed=3, solar_share=1.0,
                       missing_share=0, duplicate_share=0, malformed_rows=0)

    # When the rows are read
    rows = parse_csv(summary.path, "block-load")["valid"]

    # Then kVAh >= kWh, voltage is 230 +/- 10 V, current matches apparent power,
    # exports happen around noon and never at night
    for r in rows:
        kwh_imp, kwh_exp, kvah_imp, kvah_exp, volts, amps = map(float, r[2:])
        assert kvah_imp >= kwh_imp and kvah_exp >= kwh_exp
        assert 220 <= volts <= 240
        assert amps == pytest.approx((kvah_imp + kvah_exp) * 4000 / volts, abs=0.01)
        assert r[1].endswith("+05:30")
    hour = {r[1]: int(r[1][11:13]) for r in rows}
    assert any(float(r[3]) > 0 for r in rows if 11 <= hour[r[1]] <= 13)
    assert all(float(r[3]) == 0 for r in rows if hour[r[1]] < 5)
    assert len(rows) == 6 * 96 and summary.expected_readings == 6 * 96 * 6


def test_daily_registers_only_grow(tmp_path):
    # Given a week of daily reads
    summary = generate(tmp_path, meters=8, days=7, profile="daily", seed=4, malformed_rows=0)

    # When each meter's registers are followed day by day
    by_meter: dict[str, list[list[float]]] = {}
    for r in parse_csv(summary.path, "daily")["valid"]:
        by_meter.setdefault(r[0], []).append([float(x) for x in r[2:]])

    # Then every register is monotonic and kVAh >= kWh
    for reads in by_meter.values():
        for earlier, later in zip(reads, reads[1:]):
            assert all(b >= a for a, b in zip(earlier, later))
        assert all(r[2] >= r[0] and r[3] >= r[1] for r in reads)


def test_events_use_is_15959_codes_and_arrive_after_they_happen(tmp_path):
    # Given a month of event logs for a feeder's worth of meters
    summary = generate(tmp_path, meters=60, days=30, profile="events", seed=8, malformed_rows=0)

    # When the events are read
    rows = parse_csv(summary.path, "events")["valid"]

    # Then codes are IS 15959 ones, the HES received each after it happened, and
    # outages come as last gasp / first breath pairs
    assert {int(r[1]) for r in rows} <= IS_15959_CODES
    assert {101, 102} <= {int(r[1]) for r in rows}
    for r in rows:
        delay = dt.datetime.fromisoformat(r[3]) - dt.datetime.fromisoformat(r[2])
        assert dt.timedelta(seconds=1) <= delay <= dt.timedelta(minutes=5)


@pytest.mark.parametrize("envelope", [False, True])
def test_xml_is_iec_61968_9_meter_readings(tmp_path, envelope):
    # Given an XML block-load file, optionally inside an IEC 61968-100 EventMessage
    summary = generate(tmp_path, meters=4, days=1, fmt="xml", seed=6, envelope=envelope,
                       duplicate_share=0.05)

    # When it is parsed as XML
    root = ET.parse(summary.path).getroot()
    ns = {"m": "http://iec.ch/TC57/2011/MeterReadings#"}
    keys, values = set(), 0
    for reading in root.iter("{http://iec.ch/TC57/2011/MeterReadings#}MeterReading"):
        meter = reading.find("m:Meter/m:mRID", ns).text
        for block in reading.findall("m:IntervalBlocks", ns):
            rt = block.find("m:ReadingType", ns).get("ref")
            assert rt in BLOCK_LOAD_READING_TYPES
            for ir in block.findall("m:IntervalReadings", ns):
                stamp = ir.find("m:timeStamp", ns).text
                assert stamp.endswith("Z")
                float(ir.find("m:value", ns).text)
                keys.add((meter, rt, stamp))
                values += 1

    # Then the root is right and the distinct readings are what the summary promises
    expected_root = ("{http://iec.ch/TC57/2011/schema/message}EventMessage" if envelope
                     else "{http://iec.ch/TC57/2011/MeterReadings#}MeterReadings")
    assert root.tag == expected_root
    assert len(keys) == summary.expected_readings
    assert values == 6 * summary.rows_written and summary.malformed_lines == []


def test_same_seed_same_bytes(tmp_path):
    # Given two generations with the same arguments
    a = generate(tmp_path / "a", meters=5, days=2, seed=9)
    b = generate(tmp_path / "b", meters=5, days=2, seed=9)

    # Then the files are identical
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()


def test_final_name_appears_only_when_complete(tmp_path):
    # Given a watcher polling the directory while a larger file is written
    seen_final_sizes, seen_part = [], []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(tmp_path):
                if entry.name.endswith(".part"):
                    seen_part.append(entry.name)
                elif entry.name == "big.csv":
                    seen_final_sizes.append(entry.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()

    # When the generator writes it
    try:
        summary = generate(tmp_path, rows=150_000, seed=1, file_name="big.csv")
    finally:
        done.set()
        watcher.join()

    # Then the watcher saw the hidden .part file, and the final name only at full size
    final_size = Path(summary.path).stat().st_size
    assert seen_part and set(seen_part) == {".big.csv.part"}
    assert all(size == final_size for size in seen_final_sizes)
    assert not list(tmp_path.glob(".*.part"))


def test_cli_prints_the_summary_and_writes_expected_json(tmp_path):
    # Given the command line the benchmark uses
    cmd = [sys.executable, "-m", "simulators.hes_files", "--out", str(tmp_path), "--reads", "500",
           "--profile", "block-load", "--format", "csv", "--seed", "2", "--expected"]

    # When it runs
    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True, timeout=60)

    # Then stdout is the summary and the expected file agrees with it
    printed = json.loads(out.stdout)
    assert printed["rows_written"] == 500
    written = json.loads(Path(printed["path"] + ".expected.json").read_text())
    assert written["expected_readings"] == printed["expected_readings"]


def test_bad_arguments_are_refused(tmp_path):
    # Given arguments the generator cannot honour, Then it says so before writing
    with pytest.raises(ValueError, match="profile"):
        generate(tmp_path, profile="billing")
    with pytest.raises(ValueError, match="xml"):
        generate(tmp_path, profile="events", fmt="xml")
    assert list(tmp_path.iterdir()) == []
