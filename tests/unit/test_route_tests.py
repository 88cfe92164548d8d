"""Route tests (`gridbus routes test`, bus/routes/testing.py): the shipped ones pass, and the
runner reports failures, bad test files and hostile ones as a connector team needs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bus.cli.routes import routes_group
from bus.errors import RouteValidationError
from bus.routes import load_routes, testing
from bus.routes.loader import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
ROUTES = ROOT / "routes"

ROUTE_FILE = """\
use_case: 1
routes:
  - id: meter-files
    source: {system: hes-a, connector: file-drop, path: "${INBOX_FOR_TEST}/hes-a", pattern: "*.csv"}
    method: file-batch
    transform: [hes_a_csv, to_mdms_json]
    destinations:
      - {system: mdms-1, connector: rest, url: "${SOME_UNSET_MDMS_URL}/messages", timeout_s: 10}
"""

DAILY = ("meter_serial,read_date,kwh_imp_cum,kwh_exp_cum,kvah_imp_cum,kvah_exp_cum\n"
         "UPM00012345,2026-11-01,1234.5,12.0,1301.2,12.5\n"
         "UPM00099999,01/11/2026,1.0,0,1.0,0\n")
BAD_HEADER = "serial,when\nUPM00012345,2026-11-01\n"


def cases(*items: dict) -> str:
    """A test file's text holding ``items``, each a case on route meter-files."""
    return yaml.safe_dump({"cases": [{"route": "meter-files", **item} for item in items]}, sort_keys=False)


def folder(tmp_path: Path, test_text: str, route_text: str = ROUTE_FILE) -> Path:
    """A route file meters.yaml and its test file meters_test.yaml in ``tmp_path``."""
    (tmp_path / "meters.yaml").write_text(route_text)
    (tmp_path / "meters_test.yaml").write_text(textwrap.dedent(test_text))
    return tmp_path / "meters_test.yaml"


def run_cli(*args: str):
    return CliRunner().invoke(routes_group, ["test", *args])


def load_errors(path: Path) -> list[str]:
    with pytest.raises(RouteValidationError) as caught:
        testing.load_test_files([path])
    return [str(e) for e in caught.value.errors]


# --- the shipped route tests -------------------------------------------------------------------

def test_every_shipped_route_test_passes():
    # Given the route tests shipped beside the route files
    suites = testing.load_test_files([ROUTES])
    # When every case runs
    results = testing.run(suites)
    # Then there are tests for the meter-data and alarm routes, and every case passes
    assert {s.path.name for s in suites} >= {"uc1-meter-data-files_test.yaml", "uc2-4-5-alarms_test.yaml"}
    failures = {f"{r.case.file}:{r.case.line} {r.case.name}": [p.text() for p in r.problems]
                for r in results if not r.passed}
    assert not failures
    assert len(results) >= 12


def test_route_files_skip_test_files_beside_them():
    # Given the routes folder, which holds route tests beside the route files
    # When it is loaded as routes
    table = load_routes([ROUTES], env={name: "http://127.0.0.1:9" for name in (
        "MDMS_1_URL", "WFM_URL", "FMS_URL", "ADMS_URL", "HES_A_URL", "HES_B_URL", "BILLING_1_URL",
        "BILLING_2_URL", "GRIDBUS_METER_ASSIGNMENT", "GRIDBUS_INBOX", "GRIDBUS_OUTBOX")})
    # Then the test files are not read as route files
    assert not [r for r in table if r.file.endswith("_test.yaml")]
    assert "hes-a-csv-to-mdms-1" in {r.id for r in table}


def test_a_test_file_named_as_a_route_file_is_refused_with_the_command_to_run(tmp_path):
    # Given a test file given where route files are expected
    path = folder(tmp_path, "cases: []\n")
    # When it is loaded as routes
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env={})
    # Then the error says what it is and how to run it
    assert "gridbus routes test" in str(caught.value)


# --- passing and failing cases ----------------------------------------------------------------

def test_a_passing_case_exits_0_without_dev_env_and_with_unset_variables(tmp_path, monkeypatch):
    # Given a route file needing variables this machine does not set, and no dev.env
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.delenv("INBOX_FOR_TEST", raising=False)
    path = folder(tmp_path, cases({
        "name": "daily file", "input": DAILY,
        "expect": {"noun": "MeterReadings", "MeterReading": [{"meter": "UPM00012345"}]},
        "expect_rejections": [{"line": 3, "reason": "read_date"}],
        "expect_output": {"content_type": "application/json", "readings": 4}}))
    # When its test runs
    result = run_cli(str(path))
    # Then it passes: one PASS line and the summary
    assert result.exit_code == 0, result.output
    assert "PASS  daily file" in result.output
    assert "1 passed, 0 failed (1 test file)" in result.output


def test_a_failing_case_exits_1_with_a_diff_naming_the_path_and_the_rejections(tmp_path):
    # Given a case expecting another meter, another value and a rejection that does not happen
    path = folder(tmp_path, cases({
        "name": "daily file, wrong expectations", "input": DAILY,
        "expect": {"MeterReading": [{"meter": "UPM00012345", "readings": [{"value": 1234.5}, {"value": 99.0}, "..."]},
                                    {"meter": "UPM00099999"}]},
        "expect_rejections": [{"line": 2, "reason": "kwh"}]}))
    # When it runs
    result = run_cli(str(path))
    # Then it fails with exit 1, naming each difference by its path in the document
    assert result.exit_code == 1, result.output
    out = result.output
    assert "FAIL  daily file, wrong expectations" in out
    assert "document.MeterReading[0].readings[1].value: expected 99.0, got 12.0" in out
    assert "document.MeterReading: expected 2 items, got 1 items" in out
    # and the rejection expected but missing, and the one not expected
    assert "missing rejection: line 2: 'kwh'" in out
    assert "unexpected rejection: line 3: meter UPM00099999" in out
    assert "0 passed, 1 failed" in out


def test_json_output_is_one_list_of_cases_with_their_problems(tmp_path):
    # Given one passing and one failing case
    rejected = [{"line": 3, "reason": "read_date"}]
    path = folder(tmp_path, cases(
        {"name": "good", "input": DAILY, "expect": {"noun": "MeterReadings"}, "expect_rejections": rejected},
        {"name": "bad", "input": DAILY, "expect": {"noun": "EndDeviceEvents"}, "expect_rejections": rejected}))
    # When they run with --json
    result = run_cli(str(path), "--json")
    # Then stdout is one JSON list: each case, whether it passed, and each problem with its path
    assert result.exit_code == 1
    records = json.loads(result.output)
    assert [(c["name"], c["passed"]) for c in records] == [("good", True), ("bad", False)]
    assert records[1]["problems"][0] | {"text": None} == {
        "kind": "differs", "path": "document.noun", "expected": "EndDeviceEvents", "got": "MeterReadings",
        "text": None}


def test_an_expected_error_passes_and_an_unexpected_one_fails(tmp_path):
    # Given a file with a header no profile has: once expected, once not
    path = folder(tmp_path, cases(
        {"name": "refused as expected", "input": BAD_HEADER, "expect_error": "missing columns"},
        {"name": "refused unexpectedly", "input": BAD_HEADER, "expect": {"noun": "MeterReadings"}}))
    # When they run
    result = run_cli(str(path))
    # Then the first passes, the second fails saying the message was refused and why
    assert "PASS  refused as expected" in result.output
    assert "FAIL  refused unexpectedly" in result.output
    assert "the message was refused: " in result.output and "missing columns" in result.output
    assert result.exit_code == 1


def test_a_case_filter_runs_only_the_matching_cases(tmp_path):
    # Given two cases
    path = folder(tmp_path, cases(
        {"name": "first daily", "input": DAILY.split("\n")[0] + "\n", "expect": None},
        {"name": "second", "input": BAD_HEADER, "expect_error": "missing"}))
    # When run with -k daily
    result = run_cli(str(path), "-k", "DAILY")
    # Then only the first ran (a header alone is no message: no document)
    assert "first daily" in result.output and "second" not in result.output
    assert result.exit_code == 0, result.output


def test_the_folder_default_runs_every_test_file_in_it(tmp_path, monkeypatch):
    # Given GRIDBUS_ROUTES naming a folder with a test file
    folder(tmp_path, cases({"name": "header only", "input": BAD_HEADER, "expect_error": "missing columns"}))
    monkeypatch.setenv("GRIDBUS_ROUTES", str(tmp_path))
    # When run without paths
    result = run_cli()
    # Then that folder's tests ran
    assert "PASS  header only" in result.output and result.exit_code == 0


# --- bad test files: exit 2, file:line ----------------------------------------------------------

def test_a_bad_test_file_exits_2_with_each_error_at_its_line(tmp_path):
    # Given a test file with an unknown key, a case with two inputs and one expecting nothing
    path = folder(tmp_path, """\
        cases:
          - name: typo
            route: meter-files
            input: "x"
            expct: {noun: MeterReadings}
          - name: two inputs
            route: meter-files
            input: "x"
            input_file: x.csv
            expect_error: x
        """)
    # When it is run
    result = run_cli(str(path))
    # Then nothing runs, exit 2, every error names the file and line
    assert result.exit_code == 2
    assert "PASS" not in result.output and "FAIL" not in result.output
    assert f"{path}:5: unknown key 'expct' (did you mean 'expect'?)" in result.output
    assert f"{path}:8: give one input" in result.output


def test_an_unknown_route_id_is_named_at_its_line_with_did_you_mean(tmp_path):
    # Given a case naming a route id with a typo
    path = folder(tmp_path, """\
        cases:
          - name: typo in the route
            route: meter-file
            input: "x"
            expect_error: x
        """)
    # When it is loaded
    errors = load_errors(path)
    # Then the error is at the route line, with the close id
    assert errors == [f"{path}:3: no route 'meter-file' (did you mean 'meter-files'?)"]


def test_a_missing_input_file_is_named_at_its_line(tmp_path):
    # Given a case whose input_file is not there
    path = folder(tmp_path, """\
        cases:
          - name: missing fixture
            route: meter-files
            input_file: fixtures/nowhere.csv
            expect_error: x
        """)
    # When it is loaded
    errors = load_errors(path)
    # Then the error names the file, the key's line and the reason
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:4: input_file 'fixtures/nowhere.csv': ")
    assert "No such file" in errors[0]


def test_an_input_file_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    # Given a case whose input_file is a device that never ends
    path = folder(tmp_path, """\
        cases:
          - {name: endless, route: meter-files, input_file: /dev/zero, expect_error: x}
        """)
    # When it is loaded
    errors = load_errors(path)
    # Then it is refused at its line, unread
    assert errors == [f"{path}:2: input_file '/dev/zero': not a regular file"]


def test_a_test_file_without_a_route_file_beside_it_says_how_to_name_one(tmp_path):
    # Given a test file whose route file is not beside it
    path = tmp_path / "orphan_test.yaml"
    path.write_text("cases:\n  - {name: a, route: b, input: c, expect_error: d}\n")
    # When it is loaded
    errors = load_errors(path)
    # Then the error names the route file looked for and the 'routes:' key
    assert errors == [f"{path}:1: no route file orphan.yaml beside it: name a test file "
                      "<route file stem>_test.yaml, or list route files in 'routes:'"]


def test_routes_key_names_route_files_relative_to_the_test_file(tmp_path):
    # Given a test file in tests/ naming the route file in the folder above
    (tmp_path / "meters.yaml").write_text(ROUTE_FILE)
    (tmp_path / "tests").mkdir()
    path = tmp_path / "tests" / "anything_test.yaml"
    path.write_text("routes: [../meters.yaml]\ncases:\n"
                    "  - {name: header only, route: meter-files, input: \"serial\\n\", expect_error: missing}\n")
    # When it runs
    result = run_cli(str(path))
    # Then the route was found there
    assert "PASS  header only" in result.output and result.exit_code == 0


@pytest.mark.parametrize("text, reason", [
    ("cases: !!python/object/apply:os.system [echo hi]\n", "YAML tag !!python/object/apply:os.system is not allowed"),
    ("cases: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"nested more than {MAX_DEPTH} levels deep"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ncases: [*d, *d]\n", "aliases expand to more than"),
])
def test_hostile_test_files_are_refused_as_route_files_are(tmp_path, text, reason):
    # Given a test file with a Python tag, deep nesting or an alias bomb
    path = folder(tmp_path, "")
    path.write_text(text)
    # When it is run
    result = run_cli(str(path))
    # Then it is refused at its line, nothing run, exit 2
    assert result.exit_code == 2
    assert reason in result.output and f"{path}:" in result.output


def test_a_huge_test_file_is_refused_before_it_is_parsed(tmp_path):
    # Given a test file of more than MAX_TEST_FILE_BYTES
    path = folder(tmp_path, "")
    path.write_text("cases:\n" + "# padding\n" * (testing.MAX_TEST_FILE_BYTES // 10 + 1))
    # When it is run
    result = run_cli(str(path))
    # Then it is refused by its size, exit 2
    assert result.exit_code == 2
    assert "more than a test file takes" in result.output


# --- the partial match ---------------------------------------------------------------------------

def test_partial_match_rules():
    # Given a document
    got = {"noun": "X", "items": [{"a": 1, "b": 2}, {"a": 3}], "flag": True, "at": "2026-11-01T04:45:02Z"}
    # When expectations are matched against it
    # Then keys not named are ignored, "..." allows more items, numbers compare as numbers
    assert testing.match({"items": [{"a": 1.0}, "..."]}, got, "d") == []
    assert testing.match({"items": [{"a": 1}, {"a": 3}]}, got, "d") == []
    # and a shorter list without "..." differs by length, a missing key is named, a bool is no number
    assert [p.text() for p in testing.match({"items": [{"a": 1}]}, got, "d")] == \
        ["d.items: expected 1 items, got 2 items"]
    assert [p.text() for p in testing.match({"nope": 1}, got, "d")] == ["d.nope: expected 1, got nothing (no such key)"]
    assert testing.match({"flag": 1}, got, "d") and testing.match({"flag": True}, got, "d") == []
    # and a time YAML read as a datetime compares with the document's text
    import datetime as dt
    at = dt.datetime(2026, 11, 1, 4, 45, 2, tzinfo=dt.timezone.utc)
    assert testing.match({"at": at}, got, "d") == []


LATIN_ROUTE = """\
use_case: 1
routes:
  - id: latin-files
    source: {system: hes-x, connector: file-drop, path: "/tmp/inbox/hes-x", pattern: "*.csv"}
    method: file-batch
    transform: [csv_readings, to_mdms_json]
    options:
      csv_readings:
        encoding: latin-1
        skip_lines: 2
        time_zone: Asia/Kolkata
        profiles:
          daily:
            kind: register
            meter: compteur
            time: date
            quantities:
              kwh_imp_cum: {reading_type: 11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0, max: 100000000}
    destinations:
      - {system: mdms-1, connector: rest, url: "${MDMS_1_URL}/messages", timeout_s: 10}
"""


def test_a_file_in_the_routes_encoding_with_a_banner_is_read_as_the_ingress_reads_it(tmp_path):
    # Given a route declaring Latin-1 files with two banner lines, and such a file
    path = folder(tmp_path, yaml.safe_dump({"cases": [{
        "name": "latin-1 with a banner", "route": "latin-files", "input_file": "export.csv",
        "expect": {"MeterReading": [{"meter": "UPM00012345", "readings": [{"value": 1234.5}]}]},
        "expect_rejections": [{"line": 5, "reason": "'abc'"}]}]}), LATIN_ROUTE)
    (tmp_path / "export.csv").write_bytes(
        "Export HES-X, relevé quotidien\ngénéré le 2026-11-01\ncompteur,date,kwh_imp_cum\n"
        "UPM00012345,2026-11-01,1234.5\nUPM00067890,2026-11-01,abc\n".encode("latin-1"))
    # When its test runs
    result = run_cli(str(path))
    # Then the file was transcoded before it was cut: read, and the bad row named by its line in the file sent
    assert result.exit_code == 0, result.output


def test_a_file_longer_than_the_batch_is_cut_as_the_ingress_cuts_it(tmp_path):
    # Given a route taking one row per message, and a daily file of two good rows
    route = ROUTE_FILE + "    queue: {batch_size: 1}\n"
    two = DAILY.replace("UPM00099999,01/11/2026", "UPM00067890,2026-11-01")
    path = folder(tmp_path, cases({
        "name": "two messages", "input": two,
        "expect": [{"MeterReading": [{"meter": "UPM00012345"}]}, {"MeterReading": [{"meter": "UPM00067890"}]}],
        "expect_output": {"readings": 4}}), route)
    # When its test runs
    result = run_cli(str(path))
    # Then each message's document and output are checked, in the file's order
    assert result.exit_code == 0, result.output
