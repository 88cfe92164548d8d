"""Route tests (``gridbus routes test``): a route's chain run on sample inputs, no broker, no HTTP.

A test file ``<route file stem>_test.yaml`` sits beside its route file (``route_files`` never
loads it as one) and holds ``cases``; each names a route, gives one input (``input`` text or
``input_file``, relative to the test file) and what must come of it::

    cases:
      - name: block-load file, one bad row
        route: hes-a-csv-to-mdms-1
        input_file: fixtures/hes-a-block-load.csv
        expect:                      # the canonical document, partially
          noun: MeterReadings
          MeterReading:
            - meter: UPM00012345
            - "..."                  # more items may follow
        expect_rejections:           # exactly these, in any order; none when left out
          - {line: 4, reason: "is not a number"}
        expect_output: {content_type: application/json, readings: 12, body_contains: ['"Header"']}
      - name: a file no decoder reads
        route: hes-a-csv-to-mdms-1
        input: "serial,when\\n"
        expect_error: "matches no HES-A profile"

The input becomes what the worker would get from the route's source connector, by the
connector's ``sample_payloads(route, data, name, reject)`` (file-drop: the ingress's survey and
cut; http-push: the gateway's body checks; amqp-in: the ingress's batch), or, for a source
without one, the input parsed as JSON.  Each payload runs through the route's chain with the
context the worker gives; the canonical document is the output of the first step that returns
a mapping with a ``noun`` (or the payload itself when it already is one: a subscriber route).
A destination's own ``transform`` is applied to the chain's result for that destination, as
the worker does; ``expect_output`` checks the chain's final Outbound, or the one of the
destination it names (``destination: <system>``).  Several payloads (a file longer than
``queue.batch_size``) make ``expect`` and ``expect_output`` lists, one item per message.

``bus`` finds connectors and transformers by name only (``bus.registry``).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from marshmallow import ValidationError as SchemaError, fields, validate, validates_schema

from bus import registry
from bus.errors import ConfigError, GridbusError, RouteValidationError, TransformError
from bus.options import OptionsSchema
from bus.routes.loader import load_routes, refuse_hostile_yaml, route_files
from bus.routes.model import Route, RouteTable
from bus.routes.yaml_lines import line_of, load_with_lines
from bus.settings import environment
from bus.transform import Outbound, RowRejection, TransformContext
from bus.worker.pipeline import payload_to_input

TEST_SUFFIXES = ("_test.yaml", "_test.yml")
MAX_TEST_FILE_BYTES = 2 << 20     # inline inputs are small; a big one goes in an input_file
MAX_INPUT_BYTES = 64 << 20        # an input_file: a sample, not a production export
PLACEHOLDER = "http://127.0.0.1:9"  # a variable a route file needs and this machine does not set
MORE = "..."                      # the last item of an expected list: more items may follow
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_MISSING = object()
_OWN_MESSAGES = ("give one input", "expect nothing?", "a refused message")  # whole sentences: no prefix


# --- the test file ----------------------------------------------------------------------------

class _Rejection(OptionsSchema):
    line = fields.Integer(required=True, allow_none=True, strict=True)
    reason = fields.String(required=True, validate=validate.Length(min=1))


class _Output(OptionsSchema):
    destination = fields.String(validate=validate.Length(min=1))
    content_type = fields.String()
    noun = fields.String()
    readings = fields.Integer(strict=True)
    events = fields.Integer(strict=True)
    empty = fields.Boolean()
    body_contains = fields.List(fields.String(validate=validate.Length(min=1)))
    body_json = fields.Raw(allow_none=True)


class _Case(OptionsSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    route = fields.String(required=True, validate=validate.Length(min=1))
    input = fields.String()
    input_file = fields.String(validate=validate.Length(min=1))
    file_name = fields.String(validate=validate.Length(min=1, max=255))
    expect = fields.Raw(allow_none=True)
    expect_rejections = fields.List(fields.Nested(_Rejection))
    expect_output = fields.Nested(_Output)
    expect_error = fields.String(validate=validate.Length(min=1))

    @validates_schema
    def _one_input_some_expectation(self, data, **kwargs):
        if ("input" in data) == ("input_file" in data):
            raise SchemaError("give one input: input (the text) or input_file (a path beside the test file)",
                              "input" if "input" in data else "name")
        if not {"expect", "expect_rejections", "expect_output", "expect_error"} & set(data):
            raise SchemaError("expect nothing? give expect, expect_rejections, expect_output or expect_error",
                              "name")
        if "expect_error" in data and {"expect", "expect_output"} & set(data):
            raise SchemaError("a refused message has no document or output: expect_error goes alone "
                              "(or with expect_rejections)", "expect_error")


class _TestFile(OptionsSchema):
    description = fields.String()
    routes = fields.List(fields.String(validate=validate.Length(min=1)), validate=validate.Length(min=1))
    cases = fields.List(fields.Nested(_Case), required=True, validate=validate.Length(min=1))


@dataclass
class Case:
    name: str
    route: Route
    data: bytes
    file_name: str
    file: str
    line: int
    expect: Any = _MISSING
    expect_rejections: list[dict] = field(default_factory=list)
    expect_output: dict | None = None
    expect_error: str | None = None


@dataclass
class RouteTestFile:
    path: Path
    cases: list[Case]


def find_test_files(paths: Iterable[str | Path]) -> list[Path]:
    """The test files of ``paths``: each file given, and every ``*_test.yaml`` of each folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.name.endswith(TEST_SUFFIXES) and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError("no such file or directory (give route test files or folders, or set "
                              "GRIDBUS_ROUTES)", str(p))
    return files


def load_test_files(paths: Iterable[str | Path], env: dict[str, str] | None = None) -> list[RouteTestFile]:
    """Every test file of ``paths`` with its routes loaded, or ``RouteValidationError`` with every
    problem found, each at file:line."""
    errors: list[ConfigError] = []
    loaded = []
    for path in find_test_files(paths):
        before = len(errors)
        suite = _load(path, env, errors)
        if suite is not None and len(errors) == before:
            loaded.append(suite)
    if errors:
        raise RouteValidationError(sorted(errors, key=lambda e: (e.file or "", e.line or 0)))
    return loaded


def _load(path: Path, env: dict[str, str] | None, errors: list[ConfigError]) -> RouteTestFile | None:
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEST_FILE_BYTES:
            raise ConfigError(f"{size:,} bytes, more than a test file takes ({MAX_TEST_FILE_BYTES:,}): "
                              "put large inputs in an input_file", name)
        text = path.read_text(encoding="utf-8")
        refuse_hostile_yaml(text, name)
        data, lines = load_with_lines(text, name)
    except ConfigError as exc:
        errors.append(exc)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(f"cannot read: {exc}", name))
        return None
    if not isinstance(data, dict):
        errors.append(ConfigError("a route test file is a mapping with a 'cases' list", name, 1))
        return None
    try:
        header = _TestFile().load(data)
    except SchemaError as exc:
        _schema_errors(exc.messages, (), lines, name, errors)
        return None
    table = _routes(path, header.get("routes"), env, lines, errors)
    if table is None:
        return None
    cases, names = [], {}
    for index, raw in enumerate(header["cases"]):
        at = ("cases", index)
        if raw["name"] in names:
            errors.append(ConfigError(f"case name {raw['name']!r} is used twice (first at line "
                                      f"{names[raw['name']]})", name, line_of(lines, at + ("name",))))
        names.setdefault(raw["name"], line_of(lines, at + ("name",)))
        case = _case(raw, path, table, lines, at, errors)
        if case is not None:
            cases.append(case)
    return RouteTestFile(path, cases)


def _schema_errors(messages: Any, path: tuple, lines: dict, file: str, out: list[ConfigError]) -> None:
    """marshmallow's nested error dict as file:line errors."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            _schema_errors(value, path if key == "_schema" else path + (key,), lines, file, out)
        return
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        named = ".".join(str(p) for p in path if not isinstance(p, int))
        for message in messages:
            if message == "Missing data for required field.":
                message = f"missing required key {path[-1]!r}"
            elif named and not message.startswith(("unknown key", *_OWN_MESSAGES)):
                message = f"{named}: {message}"
            out.append(ConfigError(message, file, line_of(lines, path)))
        return
    for item in messages if isinstance(messages, list) else [messages]:
        _schema_errors(item, path, lines, file, out)


def _routes(path: Path, named: list[str] | None, env: dict[str, str] | None, lines: dict,
            errors: list[ConfigError]) -> RouteTable | None:
    """The routes the test runs: those of the route file beside it, or of ``routes:``."""
    if named:
        paths = [path.parent / p for p in named]
        missing = [p for p in paths if not p.exists()]
        for i, p in enumerate(paths):
            if p in missing:
                errors.append(ConfigError(f"routes: no such file or directory {str(p)!r}", str(path),
                                          line_of(lines, ("routes", i))))
        if missing:
            return None
    else:
        stem = path.name[:-len(next(s for s in TEST_SUFFIXES if path.name.endswith(s)))] \
            if path.name.endswith(TEST_SUFFIXES) else path.stem
        paths = [p for p in (path.with_name(stem + ".yaml"), path.with_name(stem + ".yml")) if p.exists()][:1]
        if not paths:
            errors.append(ConfigError(f"no route file {stem}.yaml beside it: name a test file "
                                      "<route file stem>_test.yaml, or list route files in 'routes:'",
                                      str(path), 1))
            return None
    try:
        return load_routes(paths, env if env is not None else placeholder_environment(paths))
    except RouteValidationError as exc:
        errors.extend(exc.errors)
    except ConfigError as exc:
        errors.append(exc)
    return None


def placeholder_environment(paths: Iterable[str | Path]) -> dict[str, str]:
    """The environment, and a placeholder for each ``${NAME}`` (without a default) of the route
    files of ``paths`` it does not set: a route test runs on any machine, dev.env or not."""
    env = environment()
    for file in route_files(paths):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the loader reports it
        for name, default in _VAR.findall(text):
            if name not in env and not default:
                env[name] = PLACEHOLDER
    return env


def _case(raw: dict, path: Path, table: RouteTable, lines: dict, at: tuple,
          errors: list[ConfigError]) -> Case | None:
    file = str(path)
    try:
        route = table.get(raw["route"])
    except ConfigError as exc:
        errors.append(ConfigError(exc.reason, file, line_of(lines, at + ("route",))))
        return None
    if "input_file" in raw:
        source = path.parent / raw["input_file"]
        try:
            data = _read_input(source)
        except ConfigError as exc:
            errors.append(ConfigError(f"input_file {raw['input_file']!r}: {exc.reason}", file,
                                      line_of(lines, at + ("input_file",))))
            return None
        default_name = source.name
    else:
        data = raw["input"].encode("utf-8")
        default_name = "input.xml" if route.source.options.get("format") == "xml" else "input.csv"
    output = raw.get("expect_output")
    if output and "destination" in output:
        with_transform = [d.system for d in route.destinations if d.transform]
        if output["destination"] not in with_transform:
            errors.append(ConfigError(
                f"expect_output.destination {output['destination']!r}: route {route.id} has no such destination "
                f"with a transform of its own{registry.did_you_mean(output['destination'], with_transform)}",
                file, line_of(lines, at + ("expect_output", "destination"))))
            return None
    return Case(raw["name"], route, data, raw.get("file_name", default_name), file,
                line_of(lines, at) or 1, raw.get("expect", _MISSING), raw.get("expect_rejections", []),
                output, raw.get("expect_error"))


def _read_input(source: Path) -> bytes:
    """The bytes of an input file: a regular file of at most MAX_INPUT_BYTES (not a FIFO or /dev/zero)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc)) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError("not a regular file")
        data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise ConfigError(f"larger than an input file may be ({MAX_INPUT_BYTES:,} bytes)")
    return data


# --- running a case ---------------------------------------------------------------------------

@dataclass
class Problem:
    """One way a case's outcome differs from what it expects."""

    kind: str        # differs | length | missing-rejection | unexpected-rejection | refused | not-refused
    path: str = ""
    expected: Any = None
    got: Any = None

    def text(self) -> str:
        if self.kind == "missing-rejection":
            return f"missing rejection: line {self.expected['line']}: {self.expected['reason']!r}"
        if self.kind == "unexpected-rejection":
            return f"unexpected rejection: line {self.got['line']}: {self.got['reason']}"
        if self.kind == "refused":
            return f"the message was refused: {self.got}"
        if self.kind == "length":
            return f"{self.path}: expected {self.expected}, got {self.got}"
        if self.kind == "not-refused":
            return f"expected the message refused ({self.expected!r}), but it went through"
        got = "nothing (no such key)" if self.got is _MISSING else _shown(self.got)
        return f"{self.path}: expected {_shown(self.expected)}, got {got}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "expected": _plain(self.expected),
                "got": None if self.got is _MISSING else _plain(self.got), "text": self.text()}


@dataclass
class Outcome:
    """What the route made of a case's input."""

    documents: list = field(default_factory=list)   # one per payload: the canonical document (or None)
    outputs: list = field(default_factory=list)     # one per payload: {None: chain's Outbound, system: ...}
    rejections: list[RowRejection] = field(default_factory=list)
    error: str | None = None


@dataclass
class CaseResult:
    case: Case
    problems: list[Problem]
    outcome: Outcome

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"file": self.case.file, "line": self.case.line, "name": self.case.name,
                "route": self.case.route.id, "passed": self.passed,
                "problems": [p.as_dict() for p in self.problems]}


def run(suites: Iterable[RouteTestFile], match: str | None = None) -> list[CaseResult]:
    """Every case (whose name holds ``match``, when given), in file order."""
    return [run_case(case) for suite in suites for case in suite.cases
            if not match or match.lower() in case.name.lower()]


def run_case(case: Case) -> CaseResult:
    outcome = outcome_of(case.route, case.data, case.file_name)
    return CaseResult(case, _compare(case, outcome), outcome)


def outcome_of(route: Route, data: bytes, name: str) -> Outcome:
    """The route's chain on ``data`` as its source connector would hand it over."""
    outcome = Outcome()
    reject = lambda line, reason: outcome.rejections.append(RowRejection(line, reason))  # noqa: E731
    try:
        for payload in _payloads(route, data, name, reject):
            context = TransformContext(route_id=route.id, source_system=_source_system(route, payload),
                                       message_id="test", correlation_id="test", options=dict(route.options))
            document, result = _chain(route.transform, payload_to_input(payload), context)
            outputs = {None: result if isinstance(result, Outbound) else None}
            for destination in route.destinations:
                if destination.transform:
                    outputs[destination.system] = _chain(destination.transform, result, context)[1]
            outcome.documents.append(document)
            outcome.outputs.append(outputs)
            outcome.rejections += context.rejections
    except GridbusError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a connector's bug on this input: the case says so, the run goes on
        outcome.error = f"{exc.__class__.__name__}: {exc}"
    return outcome


def _payloads(route: Route, data: bytes, name: str, reject: Callable) -> Iterable[Any]:
    connector = registry.connector(route.source.connector)
    if hasattr(connector, "sample_payloads"):
        return connector.sample_payloads(route, data, name, reject)
    from bus.errors import DecodeError
    try:
        return [json.loads(data)]
    except ValueError as exc:
        raise DecodeError(f"the input of a {route.source.connector} route is a JSON document: {exc}") from exc


def _source_system(route: Route, payload: Any) -> str:
    """The system the worker names as the message's source: the route's, except on a subscriber
    route, whose copies keep the source of the document published (``connectors/pubsub.py``)."""
    if route.source.connector == "subscription" and _is_document(payload) and isinstance(payload.get("source"), str):
        return payload["source"]
    return route.source.system


def _is_document(value: Any) -> bool:
    return isinstance(value, dict) and "noun" in value


def _chain(names: tuple[str, ...], payload: Any, context: TransformContext) -> tuple[Any, Any]:
    """(the canonical document, the last step's result): the worker's chain, step by step."""
    given, document = payload, None
    for name in names:
        step = registry.transformer(name)
        try:
            payload = step(payload, context)
        except GridbusError:
            raise
        except Exception as exc:  # as the worker: a transformer bug on this input is a TransformError
            raise TransformError(f"transformer {name} failed: {exc.__class__.__name__}: {exc}") from exc
        if document is None and _is_document(payload):
            document = payload
    if document is None and _is_document(given):  # a subscriber route's: canonical already
        document = given
    return document, payload


def _compare(case: Case, outcome: Outcome) -> list[Problem]:
    problems: list[Problem] = []
    if outcome.error is not None:
        if case.expect_error is None:
            problems.append(Problem("refused", got=outcome.error))
        elif case.expect_error.lower() not in outcome.error.lower():
            problems.append(Problem("differs", "error", f"… {case.expect_error} …", outcome.error))
    elif case.expect_error is not None:
        problems.append(Problem("not-refused", expected=case.expect_error))
    problems += _rejections(case.expect_rejections, outcome.rejections)
    if outcome.error is not None:
        return problems
    if case.expect is not _MISSING:
        docs = outcome.documents
        got = docs[0] if len(docs) == 1 else (docs or None)
        problems += match(case.expect, got, "document")
    if case.expect_output is not None:
        expected = dict(case.expect_output)
        destination = expected.pop("destination", _MISSING)
        chosen = [_chosen(o, destination) for o in outcome.outputs]
        got = chosen[0] if len(chosen) == 1 else (chosen or None)
        if isinstance(got, list):
            problems += [p for i, o in enumerate(got) for p in _output(expected, o, f"output[{i}]")]
        else:
            problems += _output(expected, got, "output")
    return problems


def _chosen(outputs: dict, destination: Any) -> Outbound | None:
    if destination is not _MISSING:
        return outputs.get(destination)
    if outputs.get(None) is not None:
        return outputs[None]
    return next((o for s, o in outputs.items() if s is not None and isinstance(o, Outbound)), None)


def _output(expected: dict, got: Outbound | None, path: str) -> list[Problem]:
    if not isinstance(got, Outbound):
        return [Problem("differs", path, "an Outbound (the route's chain ends with an encoder)",
                        "nothing" if got is None else type(got).__name__)]
    problems = []
    for key in ("content_type", "noun", "readings", "events", "empty"):
        if key in expected:
            problems += match(expected[key], getattr(got, key), f"{path}.{key}")
    body = got.body.decode("utf-8", "replace") if isinstance(got.body, (bytes, bytearray)) else str(got.body)
    for fragment in expected.get("body_contains", ()):
        if fragment not in body:
            problems.append(Problem("differs", f"{path}.body", f"… {fragment} …", _excerpt(body)))
    if "body_json" in expected:
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            problems.append(Problem("differs", f"{path}.body", "JSON", f"not JSON ({exc}): {_excerpt(body)}"))
        else:
            problems += match(expected["body_json"], parsed, f"{path}.body_json")
    return problems


def _rejections(expected: list[dict], got: list[RowRejection]) -> list[Problem]:
    """Exactly the expected rejections, in any order: each expected one pairs with a distinct
    rejection of its line whose reason holds the expected fragment (a maximum matching)."""
    fits = [[j for j, r in enumerate(got) if r.line == e["line"] and e["reason"].lower() in r.reason.lower()]
            for e in expected]
    paired: dict[int, int] = {}  # rejection → expected

    def place(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in paired or place(paired[j], seen):
                    paired[j] = i
                    return True
        return False

    for i in range(len(expected)):
        place(i, set())
    placed = set(paired.values())
    problems = [Problem("missing-rejection", expected=e) for i, e in enumerate(expected) if i not in placed]
    problems += [Problem("unexpected-rejection", got=r.as_dict()) for j, r in enumerate(got) if j not in paired]
    return problems


def match(expected: Any, got: Any, path: str) -> list[Problem]:
    """Where ``got`` differs from ``expected``, partially: a mapping matches when each expected key
    matches; a list item by item, of the same length unless the expected list ends with "..."."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [Problem("differs", path, expected, got)]
        problems = []
        for key, value in expected.items():
            at = f"{path}.{key}"
            if key not in got:
                problems.append(Problem("differs", at, value, _MISSING))
            else:
                problems += match(value, got[key], at)
        return problems
    if isinstance(expected, list):
        if not isinstance(got, list):
            return [Problem("differs", path, expected, got)]
        more = bool(expected) and expected[-1] == MORE
        items = expected[:-1] if more else expected
        problems = []
        if len(got) < len(items) or (not more and len(got) != len(items)):
            problems.append(Problem("length", path, f"{'at least ' if more else ''}{len(items)} items",
                                    f"{len(got)} items"))
        for i, (e, g) in enumerate(zip(items, got)):
            problems += match(e, g, f"{path}[{i}]")
        return problems
    return [] if _same(expected, got) else [Problem("differs", path, expected, got)]


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, (dt.date, dt.datetime)) and isinstance(got, str):
        # YAML reads an unquoted 2026-11-01T00:15:00Z as a time: compare it as one
        try:
            parsed = (dt.datetime if isinstance(expected, dt.datetime) else dt.date).fromisoformat(got)
        except ValueError:
            return False
        if isinstance(expected, dt.datetime) and (expected.tzinfo is None) != (parsed.tzinfo is None):
            return False
        return parsed == expected
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return expected == got
    return type(expected) is type(got) and expected == got


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _shown(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _excerpt(body: str, limit: int = 200) -> str:
    return body if len(body) <= limit else body[:limit] + f"… ({len(body)} characters)"
