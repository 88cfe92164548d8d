"""`gridbus routes new SYSTEM --sample FILE`: the route, mapping and test it writes from a sample.

Each sample is a dialect a new HES vendor might send; what is written must load with
`gridbus routes validate` and its test must pass with `gridbus routes test`, as written.
Hostile samples exit 1 with a reason, never a traceback.
"""
from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bus.cli.routes import routes_group
from tests.support import ROUTE_ENV

ROOT = Path(__file__).resolve().parents[2]
KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
V_AVG = "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0"


@pytest.fixture(autouse=True)
def route_addresses(monkeypatch, tmp_path):
    """The addresses a written route names (MDMS_1_URL, GRIDBUS_INBOX), as a deployment sets them,
    and no dev.env of this machine's stack: the tests pass the same on a fresh machine."""
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(tmp_path / "none.env"))
    for name, value in ROUTE_ENV.items():
        monkeypatch.setenv(name, value)


def routes(*args: str):
    return CliRunner().invoke(routes_group, list(args))


def new(tmp_path: Path, system: str, sample: Path, *more: str) -> dict:
    """Run `routes new --json`, check the files validate and their test passes; the summary."""
    out = tmp_path / "routes"
    result = routes("new", system, "--sample", str(sample), "--out", str(out), "--json", *more)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    validated = routes("validate", str(out))
    assert validated.exit_code == 0, validated.output
    tested = routes("test", str(out))
    assert tested.exit_code == 0, tested.output
    assert summary["test"]["passes"] is True
    return summary


def mapping(summary: dict) -> dict:
    doc = yaml.safe_load(Path(summary["files"]["route"]).read_text(encoding="utf-8"))
    return doc["routes"][0]["options"]["csv_readings"]


def guessed(summary: dict) -> dict:
    return {g["item"]: g["value"] for g in summary["guessed"]}


def unsure(summary: dict) -> str:
    return "\n".join(u["edit"] for u in summary["could_not_guess"])


def test_the_hes_a_simulators_block_load_file(tmp_path):
    # Given a block-load file from the HES-A simulator, malformed rows included
    staging = tmp_path / "staging"
    done = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging), "--meters", "2",
                           "--rows", "12", "--seed", "3"], capture_output=True, text=True, cwd=ROOT / "dev")
    assert done.returncode == 0, done.stderr
    sample = Path(json.loads(done.stdout)["path"])
    # When a route is scaffolded from it
    summary = new(tmp_path, "hes-n", sample)
    m = mapping(summary)
    profile = next(iter(m["profiles"].values()))
    # Then the mapping is HES-A's: comma, ISO times with their offset, 15-min, its six ReadingTypes
    assert m["delimiter"] == "," and m["encoding"] == "utf-8" and "time_zone" not in m
    assert (profile["kind"], profile["meter"], profile["time"], profile["time_format"]) == \
        ("interval", "meter_serial", "interval_end", "iso")
    assert profile["interval_s"] == 900 and profile["time_marks"] == "end"
    assert {k: q["reading_type"] for k, q in profile["quantities"].items()} == {
        "kwh_imp": KWH_IMP, "kwh_exp": KWH_EXP, "kvah_imp": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0",
        "kvah_exp": "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0", "v_avg": V_AVG,
        "i_avg": "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0"}
    # And the route is the file-drop route to MDMS-1 the brief names
    route = yaml.safe_load(Path(summary["files"]["route"]).read_text())["routes"][0]
    assert route["id"] == "hes-n-csv-to-mdms-1" and route["transform"] == ["csv_readings", "to_mdms_json"]
    assert route["source"]["path"] == "${GRIDBUS_INBOX}/hes-n"
    assert route["destinations"][0]["url"] == "${MDMS_1_URL}/messages"
    # And the test holds the sample's rows inline, and says which of them the mapping rejects
    case = yaml.safe_load(Path(summary["files"]["test"]).read_text())["cases"][0]
    assert case["input"].startswith("meter_serial,interval_end,")
    assert case["expect"]["noun"] == "MeterReadings"
    assert len(case.get("expect_rejections", [])) == len(summary["test"]["rejections"])


def test_a_windows_1252_semicolon_decimal_comma_file_with_a_banner(tmp_path):
    # Given a German export: a 2-line banner, semicolons, decimal commas, NA and - for missing, local times
    sample = tmp_path / "lastgang.csv"
    sample.write_bytes((
        "HES-Y Lastgang Export v2\r\nErstellt am 01.11.2026;;\r\n"
        "Zählernummer;Zeitstempel;Wirkenergie_Bezug_kWh;Wirkenergie_Lieferung_kWh;Spannung_V\r\n"
        "Z1001;01.11.2026 00:15;1,25;0,00;231,5\r\nZ1001;01.11.2026 00:30;1,30;NA;230,9\r\n"
        "Z1002;01.11.2026 00:15;0,75;0,10;229,0\r\nZ1002;01.11.2026 00:30;-;0,12;228,4\r\n").encode("windows-1252"))
    # When a route is scaffolded from it
    summary = new(tmp_path, "hes-y", sample)
    m = mapping(summary)
    profile = m["profiles"]["interval-data"]
    # Then each part of the dialect is guessed
    assert (m["encoding"], m["delimiter"], m["decimal"], m["skip_lines"]) == ("windows-1252", ";", ",", 2)
    assert m["missing"] == ["", "NA", "-"]
    assert (profile["meter"], profile["time"], profile["time_format"]) == \
        ("Zählernummer", "Zeitstempel", "%d.%m.%Y %H:%M")
    assert [q["reading_type"] for q in profile["quantities"].values()] == [KWH_IMP, KWH_EXP, V_AVG]
    # And the times' zone is a placeholder the team is told to confirm
    assert m["time_zone"] == "Asia/Kolkata" and "time_zone" in unsure(summary)
    # And the rows go to the test in the sample's own encoding (the runner reads `input` as UTF-8)
    fixture = Path(summary["files"]["fixture"])
    assert fixture.read_bytes().decode("windows-1252").startswith("HES-Y Lastgang")
    assert "Zählernummer" in Path(summary["files"]["route"]).read_text(encoding="utf-8")


def test_a_utf16_file_with_a_bom(tmp_path):
    # Given a UTF-16 (little-endian, with a BOM) tab-separated file
    sample = tmp_path / "u16.csv"
    text = ("meter\tend\tkwh_import\tkwh_export\r\n"
            "M1\t2026-11-01T00:15:00Z\t1.5\t0\r\nM1\t2026-11-01T00:30:00Z\t1.25\t0\r\n")
    sample.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    # When a route is scaffolded from it
    summary = new(tmp_path, "hes-u", sample)
    m = mapping(summary)
    # Then it is read as UTF-16 with tabs, and the test's rows keep the BOM
    assert (m["encoding"], m["delimiter"]) == ("utf-16", "\t")
    assert Path(summary["files"]["fixture"]).read_bytes().startswith(codecs.BOM_UTF16_LE)
    assert summary["test"]["readings"] == 4


def test_a_long_layout_with_obis_codes(tmp_path):
    # Given one row per meter, time and OBIS code
    sample = tmp_path / "obis.csv"
    sample.write_text("meter_id,timestamp,obis,value\n" + "".join(
        f"M1,2026-11-01T00:{mm}:00+05:30,{code},{v}\n"
        for mm in ("15", "30") for code, v in (("1.29.0", "0.5"), ("2.29.0", "0"), ("12.7.0", "230.1"))))
    # When a route is scaffolded from it
    summary = new(tmp_path, "hes-o", sample)
    profile = mapping(summary)["profiles"]["interval-data"]
    # Then the layout is long, and OBIS codes become the well-known ReadingTypes
    assert (profile["layout"], profile["code"], profile["value"]) == ("long", "obis", "value")
    assert {k: q["reading_type"] for k, q in profile["quantities"].items()} == {
        "1.29.0": KWH_IMP, "2.29.0": KWH_EXP, "12.7.0": V_AVG}
    assert summary["test"]["readings"] == 6


def test_a_date_and_time_in_two_columns_with_day_first_dates_and_watt_hours(tmp_path):
    # Given dates and times apart, day first (13/11), values in Wh, 30-min intervals
    sample = tmp_path / "dt.csv"
    sample.write_text("Device;Date;Time;Import Wh;Export Wh\nD-77;13/11/2026;00:30;1250;0\n"
                      "D-77;13/11/2026;01:00;1100;5\nD-78;13/11/2026;00:30;900;0\n")
    # When a route is scaffolded from it
    summary = new(tmp_path, "hes-d", sample)
    profile = mapping(summary)["profiles"]["interval-data"]
    # Then date and time are two columns read with a day-first pattern, Wh scaled to kWh
    assert (profile["date"], profile["time"], profile["time_format"]) == ("Date", "Time", "%d/%m/%Y %H:%M")
    assert profile["interval_s"] == 1800
    assert all(q["scale"] == 0.001 for q in profile["quantities"].values())
    # And a 30-min ReadingType, not one the shipped routes use, is listed to confirm
    assert profile["quantities"]["Import Wh"]["reading_type"] == "0.0.5.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert "Import Wh" in unsure(summary)


def test_ambiguous_dates_are_written_day_first_and_flagged(tmp_path):
    # Given dates whose day is never above 12
    sample = tmp_path / "amb.csv"
    sample.write_text("meter,read_time,kwh\nM1,01/11/2026 00:15,1\nM1,01/11/2026 00:30,2\n")
    # When a route is scaffolded
    summary = new(tmp_path, "hes-m", sample)
    # Then day-first is written and the team is asked to confirm
    assert mapping(summary)["profiles"]["interval-data"]["time_format"] == "%d/%m/%Y %H:%M"
    assert "day-first and month-first" in unsure(summary)


def test_text_output_names_guesses_doubts_and_next_steps(tmp_path):
    # Given a small sample
    sample = tmp_path / "s.csv"
    sample.write_text("meter,end,kwh,signal_dbm\nM1,2026-11-01T00:15:00,1,-70\nM1,2026-11-01T00:30:00,2,-71\n")
    # When scaffolded without --json
    result = routes("new", "hes-t", "--sample", str(sample), "--out", str(tmp_path / "r"))
    # Then the summary has the three parts, and the column of no known quantity is left out, said so
    assert result.exit_code == 0, result.output
    for part in ("guessed:", "could not guess", "next steps:", "gridbus routes test", "gridbus routes validate",
                 "gridbus routes apply", "signal_dbm"):
        assert part in result.output
    assert "# signal_dbm" in (tmp_path / "r" / "hes-t-csv.yaml").read_text()


def test_existing_files_are_kept_unless_forced(tmp_path):
    # Given a route already scaffolded
    sample = tmp_path / "s.csv"
    sample.write_text("meter,end,kwh\nM1,2026-11-01T00:15:00Z,1\n")
    out = tmp_path / "r"
    assert routes("new", "hes-f", "--sample", str(sample), "--out", str(out)).exit_code == 0
    (out / "hes-f-csv.yaml").write_text("# edited by the team\n" + (out / "hes-f-csv.yaml").read_text())
    # When it is scaffolded again
    again = routes("new", "hes-f", "--sample", str(sample), "--out", str(out))
    # Then it refuses, and the team's edit is kept; --force overwrites
    assert again.exit_code == 1 and "--force" in again.output
    assert (out / "hes-f-csv.yaml").read_text().startswith("# edited")
    assert routes("new", "hes-f", "--sample", str(sample), "--out", str(out), "--force").exit_code == 0
    assert not (out / "hes-f-csv.yaml").read_text().startswith("# edited")


def test_a_route_id_already_taken_in_the_folder_is_refused(tmp_path):
    # Given the routes folder holds a route with the id the new one would get
    sample = tmp_path / "s.csv"
    sample.write_text("meter,end,kwh\nM1,2026-11-01T00:15:00Z,1\n")
    out = tmp_path / "r"
    out.mkdir()
    other = yaml.safe_load((ROOT / "routes" / "uc1-meter-data-files.yaml").read_text())
    (out / "existing.yaml").write_text(yaml.safe_dump(other))
    # When the new route is named after HES-A
    result = routes("new", "hes-a", "--sample", str(sample), "--out", str(out))
    # Then it refuses, naming the clash
    assert result.exit_code == 1 and "already exists" in result.output


@pytest.mark.parametrize("name, data, reason", [
    ("empty.csv", b"", "empty"),
    ("binary.csv", bytes(range(256)) * 8, "binary"),
    ("random.csv", bytes((i * 7919 + 13) % 251 + 1 for i in range(4000)).replace(b"\n", b"x"), "binary"),
    ("huge-line.csv", b"a," * 700_000, "no line break"),
    ("one-column.csv", b"serial\nM1\nM2\nM3\n", "one column"),
    ("ragged.csv", b"a,b,c\n1\n1,2,3,4,5\nx;y\n1,2\n4,5,6,7\n", "inconsistent field counts"),
    ("header-only.csv", b"meter,end,kwh\n", "no data rows"),
    ("no-header.csv", b"M1,2026-11-01T00:15:00Z,1\nM1,2026-11-01T00:30:00Z,2\n", "no header"),
    ("utf16-no-bom.csv", "meter,end,kwh\nM1,2026,1\n".encode("utf-16-le"), "without a byte order mark"),
])
def test_hostile_samples_exit_1_with_a_reason(tmp_path, name, data, reason):
    # Given a sample no route can be guessed from
    sample = tmp_path / name
    sample.write_bytes(data)
    out = tmp_path / "r"
    # When scaffolded (text and --json)
    result = routes("new", "hes-h", "--sample", str(sample), "--out", str(out))
    as_json = routes("new", "hes-h", "--sample", str(sample), "--out", str(out), "--json")
    # Then exit 1 with the reason, no traceback, nothing written
    assert result.exit_code == 1 and reason in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert as_json.exit_code == 1 and reason in json.loads(as_json.stdout)["error"]
    assert not out.exists()


def test_a_sample_that_is_not_a_file_and_a_bad_system_name(tmp_path):
    # Given a folder as sample, and a system name no route id can hold
    sample = tmp_path / "s.csv"
    sample.write_text("meter,end,kwh\nM1,2026-11-01T00:15:00Z,1\n")
    # When scaffolded
    missing = routes("new", "hes-x", "--sample", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r"))
    bad = routes("new", "HES X", "--sample", str(sample), "--out", str(tmp_path / "r"))
    # Then each exits 1 with a reason
    assert missing.exit_code == 1 and "cannot read the sample" in missing.output
    assert bad.exit_code == 1 and "system" in bad.output


def test_only_the_first_mib_is_read(tmp_path):
    # Given a sample of more than 1 MiB (the last line cut in the middle by the limit)
    sample = tmp_path / "big.csv"
    rows = "".join(f"M{i % 50},2026-11-01T{(i // 50) % 24:02d}:{(i // 1200) % 4 * 15:02d}:00Z,{i % 7}.5\n"
                   for i in range(60_000))
    sample.write_text("meter,end,kwh\n" + rows)
    assert sample.stat().st_size > 1 << 20
    # When scaffolded
    summary = new(tmp_path, "hes-b", sample)
    # Then it is guessed from the first lines only (2,000 at most)
    assert guessed(summary)["meter"] == "meter"
