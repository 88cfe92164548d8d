"""Route files are validated at load time; every error names file and line."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.errors import RouteValidationError
from bus.routes import load_routes
from tests.support import ROUTE_ENV

ENV = ROUTE_ENV

GOOD = """\
use_case: 1
routes:
  - id: hes-a-csv-to-mdms-1
    source: {system: hes-a, connector: file-drop, path: "${GRIDBUS_INBOX}/hes-a", pattern: "*.csv"}
    method: file-batch
    transform: [hes_a_csv, to_mdms_json]
    destinations:
      - {system: mdms-1, connector: rest, url: "${MDMS_1_URL}/messages"}
    retry: {attempts: 3, first_delay_s: 2, max_delay_s: 60}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(*paths: Path, env=ENV) -> list[str]:
    with pytest.raises(RouteValidationError) as caught:
        load_routes(paths, env=env)
    return [str(e) for e in caught.value.errors]


def test_a_good_route_file_loads_with_defaults(tmp_path):
    # Given a valid route file
    path = write(tmp_path, "uc1.yaml", GOOD)
    # When it is loaded
    table = load_routes([path], env=ENV)
    # Then the route has its options, the connector's defaults and queue defaults
    route = table.get("hes-a-csv-to-mdms-1")
    assert route.use_case == 1 and route.line == 3
    assert route.source.options["format"] == "csv" and route.source.options["path"] == "/tmp/inbox/hes-a"
    assert route.destinations[0].options["url"] == "http://127.0.0.1:9/messages"
    assert route.queue.type == "quorum" and route.queue.batch_size == 1000
    assert route.retry.attempts == 3


def test_the_shipped_route_files_are_valid():
    # Given the repository's routes/ folder  When loaded  Then no error
    table = load_routes([Path(__file__).parents[2] / "routes"], env=ENV)
    assert len(table) >= 3


def test_unknown_key_is_reported_at_its_line(tmp_path):
    # Given a route with a misspelt key on line 6
    path = write(tmp_path, "r.yaml", GOOD.replace("    method: file-batch\n",
                                                  "    method: file-batch\n    retires: 3\n"))
    # Then the error names the file, line 6 and the key
    assert errors_of(path) == [f"{path}:6: unknown key 'retires'"]


def test_unknown_transformer_suggests_the_close_name(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD.replace("[hes_a_csv, to_mdms_json]", "[hes_a_cvs, to_mdms_json]"))
    assert errors_of(path) == [f"{path}:6: unknown transformer 'hes_a_cvs' (did you mean 'hes_a_csv'?)"]


def test_unknown_connector_suggests_the_close_name(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD.replace("connector: rest", "connector: rets"))
    assert errors_of(path) == [f"{path}:8: unknown connector 'rets' (did you mean 'rest'?)"]


def test_missing_environment_variable_is_reported_once(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD)
    env = {k: v for k, v in ENV.items() if k != "MDMS_1_URL"}
    assert errors_of(path, env=env) == [f"{path}:8: environment variable MDMS_1_URL is not set"]


def test_bad_url_is_reported(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD.replace('"${MDMS_1_URL}/messages"', "ftp:/nowhere"))
    assert errors_of(path) == [f"{path}:8: url: Not a valid URL."]


def test_invalid_retry_policy_is_reported(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD.replace("{attempts: 3, first_delay_s: 2, max_delay_s: 60}",
                                                  "{attempts: 0, first_delay_s: 30, max_delay_s: 10}"))
    errors = errors_of(path)
    assert f"{path}:9: retry.attempts: Must be greater than or equal to 1 and less than or equal to 100." in errors
    assert f"{path}:9: retry.max_delay_s: max_delay_s must not be smaller than first_delay_s" in errors


def test_duplicate_route_ids_across_files(tmp_path):
    # Given the same route id in two files (with different sources)
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", GOOD.replace("/hes-a", "/hes-b"))
    # Then the second is reported, pointing at the first
    assert errors_of(first, second) == [
        f"{second}:3: duplicate route id 'hes-a-csv-to-mdms-1' (first defined at {first}:3)"]


def test_two_routes_claiming_the_same_source(tmp_path):
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", GOOD.replace("hes-a-csv-to-mdms-1", "other-route"))
    assert errors_of(first, second) == [
        f"{second}:3: route 'other-route' claims the same source as route 'hes-a-csv-to-mdms-1' ({first}:3)"]


def test_only_quorum_queues(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD + "    queue: {type: classic}\n")
    assert errors_of(path) == [
        f"{path}:10: queue.type: only quorum queues are supported (at-least-once dead-lettering)"]


def test_every_error_of_a_file_is_reported_not_only_the_first(tmp_path):
    path = write(tmp_path, "r.yaml", GOOD.replace("connector: rest", "connector: rets")
                 .replace("method: file-batch", "method: batch"))
    assert len(errors_of(path)) == 2


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "r.yaml", "routes:\n  - id: [unclosed\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:3: not valid YAML")


def test_validate_command_prints_file_line_errors_and_exits_1(tmp_path):
    # Given a broken route file
    path = write(tmp_path, "r.yaml", GOOD.replace("connector: rest", "connector: rets"))
    # When `gridbus routes validate` runs on it
    done = subprocess.run([sys.executable, "-m", "bus.cli.main", "routes", "validate", str(path)],
                          capture_output=True, text=True, env={**ENV, "PATH": "/usr/bin:/bin"})
    # Then it exits 1 with file:line: message on stderr
    assert done.returncode == 1
    assert f"{path}:8: unknown connector 'rets'" in done.stderr


def test_a_transformer_option_out_of_range_is_reported_at_load_time_at_its_line(tmp_path):
    # Given a fraud route whose case window is 10 s (below the 60 s minimum)
    path = write(tmp_path, "fraud.yaml", """\
        routes:
          - id: fraud-to-fms
            source: {system: fms, connector: subscription, topic: "EndDeviceEvents.#", classes: [fraud]}
            method: pub-sub
            transform: [to_fms_cases]
            destinations:
              - {system: fms, connector: rest, url: "http://127.0.0.1:9/cases"}
            options: {fraud_case_window_s: 10}
        """)
    # When the routes load  Then the error names the option, the file and the line of options
    [error] = errors_of(path)
    assert "fraud_case_window_s" in error and "fraud.yaml:8" in error
