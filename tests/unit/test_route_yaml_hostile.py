"""Hostile route files: YAML tags, alias bombs and deep nesting are refused at file:line (issue 16)."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bus.errors import RouteValidationError
from bus.routes import load_routes
from bus.routes.loader import MAX_ALIAS_NODES, MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
ENV = {"GRIDBUS_INBOX": "/tmp/inbox", "MDMS_1_URL": "http://127.0.0.1:9"}
CHILD_MEMORY = 512 * 1024 * 1024  # address space of a `routes validate` child: the bomb would need gigabytes

ROUTE = """\
use_case: 1
routes:
  - id: {id}
    source: {{system: hes-a, connector: file-drop, path: "/tmp/inbox/hes-a", pattern: "*.csv"}}
    method: file-batch
    transform: [hes_a_csv, to_mdms_json]
    destinations: {destinations}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env=ENV)
    return [str(e) for e in caught.value.errors]


def alias_bomb(kind: str = "list") -> str:
    """A "billion laughs" of YAML aliases: 9 levels of 9 aliases each, 9**9 values when expanded."""
    lines = ["use_case: 2", "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for before, name in zip("abcdefgh", "bcdefghi"):
        if kind == "list":
            lines.append(f"{name}: &{name} [" + ",".join([f"*{before}"] * 9) + "]")
        else:
            lines.append(f"{name}: &{name} {{" + ",".join(f"{k}: *{before}" for k in "123456789") + "}")
    lines.append("routes: [*i, *i]")
    return "\n".join(lines) + "\n"


def validate(path: Path, timeout_s: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """`gridbus routes validate PATH` in a child limited to CHILD_MEMORY of address space."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bus.cli.main", "routes", "validate", str(path)],
                          cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=timeout_s, preexec_fn=limit_memory)
    return done, time.monotonic() - started


@pytest.mark.parametrize("value, shown", [
    ("!foo hes-a-1", "!foo"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!!python/object/apply:os.system [\"touch {marker}\"]", "!!python/object/apply:os.system"),
    ("!!binary aGVsbG8=", "!!binary"),
])
def test_a_yaml_tag_outside_the_core_schema_is_refused_at_its_line_and_nothing_runs(tmp_path, value, shown):
    # Given a route file whose route id carries a tag (one would run a command if constructed)
    marker = tmp_path / "ran"
    path = write(tmp_path, "tagged.yaml", ROUTE.format(id=value.format(marker=marker),
                                                       destinations="[{system: mdms-1, connector: rest, "
                                                                    "url: \"http://127.0.0.1:9/m\"}]"))
    # When it is loaded  Then one error, at the line of the tag, naming it
    assert errors_of(path) == [f"{path}:3: YAML tag {shown} is not allowed: route files hold plain values"]
    # and nothing was executed
    assert not marker.exists()


def test_core_schema_tags_and_a_few_aliases_are_still_taken(tmp_path):
    # Given a route file that tags a value !!str and shares its destinations through an anchor
    path = write(tmp_path, "shared.yaml", """\
        use_case: 1
        routes:
          - id: !!str hes-a-1
            source: {system: hes-a, connector: file-drop, path: "/tmp/inbox/a", pattern: "*.csv"}
            method: file-batch
            transform: [hes_a_csv, to_mdms_json]
            destinations: &mdms [{system: mdms-1, connector: rest, url: "http://127.0.0.1:9/m"}]
          - id: hes-a-2
            source: {system: hes-a, connector: file-drop, path: "/tmp/inbox/b", pattern: "*.csv"}
            method: file-batch
            transform: [hes_a_csv, to_mdms_json]
            destinations: *mdms
        """)
    # When loaded  Then both routes load, with the same destination
    table = load_routes([path], env=ENV)
    assert [r.destinations[0].options["url"] for r in table] == ["http://127.0.0.1:9/m"] * 2


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_a_353_byte_alias_bomb_is_refused_at_once_at_its_line_by_routes_validate(tmp_path, kind):
    # Given a 353-byte route file of nested aliases (9**9 values expanded; it grew past 6 GB)
    text = alias_bomb(kind)
    if kind == "list":
        assert len(text.encode()) == 353
    path = write(tmp_path, "bomb.yaml", text)
    # When `gridbus routes validate` reads it, in a child that may not take 512 MB
    done, took = validate(path)
    # Then it fails at once, at the line where the aliases pass the bound, with no traceback
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"{path}:6: aliases expand to more than {MAX_ALIAS_NODES:,} values (at *d); write the values out",
        "1 error(s)"]
    assert took < 15  # the interpreter's start on two busy cores; the check itself takes milliseconds


def test_yaml_nested_thousands_of_levels_is_refused_at_its_line_not_with_a_recursion_error(tmp_path):
    # Given a route file with a 5,000-deep flow list (the composer recursed once per level)
    path = write(tmp_path, "deep.yaml", "use_case: 1\nroutes:\n  - id: " + "[" * 5000 + "]" * 5000 + "\n")
    # When loaded  Then one error at its line
    assert errors_of(path) == [f"{path}:3: nested more than {MAX_DEPTH} levels deep"]


@pytest.mark.parametrize("line, expected", [
    ("  - id: 2024-13-45", "'2024-13-45' is not a valid timestamp: month must be in 1..12 "
                           "(quote it to keep it as text)"),
    ("  - id: !!int twelve", "'twelve' is not a valid int: invalid literal for int() with base 10: 'twelve'"),
    ("  - id: !!bool maybe", "'maybe' is not a valid bool: 'maybe'"),
    ("  - {[1, 2]: x}", "a key must be a plain value (not a list, a mapping or an alias)"),
])
def test_a_value_or_key_yaml_cannot_read_is_an_error_at_its_line_not_a_traceback(tmp_path, line, expected):
    # Given a route file with a value its (given or resolved) tag cannot read, or a key that is a list
    path = write(tmp_path, "odd.yaml", "use_case: 1\nroutes:\n" + line + "\n")
    # When loaded  Then one error at line 3
    assert errors_of(path) == [f"{path}:3: {expected}"]


def test_routes_validate_prints_one_line_per_hostile_file_and_exits_1(tmp_path):
    # Given a folder with a tagged file, an alias bomb and a deep file
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "a-tag.yaml").write_text("use_case: 1\nroutes: !!python/name:os.system\n")
    (folder / "b-bomb.yaml").write_text(alias_bomb())
    (folder / "c-deep.yaml").write_text("routes: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    # When validated
    done, _ = validate(folder)
    # Then one file:line line per file and a count, exit 1, no traceback
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [f"{folder}/a-tag.yaml:2", f"{folder}/b-bomb.yaml:6",
                                                          f"{folder}/c-deep.yaml:1", "3 error(s)"]
