"""The route-file reference (docs/reference/) is written from the schemas that validate route files."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner
from marshmallow import Schema, fields, validate

from bus import registry
from bus.cli.routes_docs import docs
from bus.options import OptionsSchema, describe
from bus.routes import reference
from bus.routes import schema as route_schema

COMMITTED = Path(__file__).parents[2] / "docs" / "reference"
# every option of a connector or transformer must have a description (none pending)
PENDING: set[str] = set()


@pytest.fixture(scope="module")
def built() -> tuple[reference.Reference, list[str]]:
    warnings: list[str] = []
    return reference.build(warn=warnings.append), warnings


def test_the_committed_reference_is_what_the_schemas_say_now(built):
    # Given the reference as the schemas write it now
    ref, _ = built
    # When compared with the committed docs/reference/
    stale = [p.name for p in reference.stale(COMMITTED, ref.files)]
    # Then every page is the same, or the message names the pages and the command that writes them
    assert not stale, (f"docs/reference/ is stale ({', '.join(stale)}): run `gridbus routes docs` "
                       "and commit docs/reference/")
    assert sorted(ref.files) == sorted(reference.PAGES)


class Quantity(Schema):
    meter = fields.String(required=True, metadata=describe("Column of the meter."))
    scale = fields.Float(load_default=1.0, validate=validate.Range(min=0, min_inclusive=False),
                         metadata=describe("Multiplier of the values."))


class Sample(OptionsSchema):
    mode = fields.String(load_default="fast", validate=validate.OneOf(["fast", "slow"]),
                         metadata=describe("How it runs | which way.", example="slow"))
    window_s = fields.Integer(load_default=60, validate=validate.Range(min=1, max=86_400),
                              metadata=describe("Window in seconds."))
    tags = fields.List(fields.String(validate=validate.OneOf(["a", "b"])), load_default=list,
                       validate=validate.Length(min=1), metadata=describe("Tags."))
    limits = fields.Dict(keys=fields.String(), values=fields.Float(validate=validate.Range(min=0)),
                         load_default=dict, metadata=describe("Largest value per column."))
    profiles = fields.Dict(keys=fields.String(), values=fields.Nested(Quantity), required=True,
                           metadata=describe("Profiles by name."))
    items = fields.List(fields.Nested(Quantity), load_default=lambda: [{"meter": "m"}])
    enabled = fields.Boolean(load_default=False, metadata=describe("On or off."))
    inner = fields.Nested(Quantity, load_default=dict, metadata=describe("One nested mapping."))


def test_nested_schemas_collections_validators_and_defaults_are_rendered():
    # Given a small schema with nested schemas, a list, mappings, OneOf and Range validators
    # When its rows are rendered
    rows = {r.name: r for r in reference.field_rows(Sample)}
    # Then every field has a row, sorted by name, nested ones dotted right after their parent
    assert list(rows) == ["enabled", "inner", "inner.meter", "inner.scale", "items", "items[].meter",
                          "items[].scale", "limits", "mode", "profiles", "profiles.<name>.meter",
                          "profiles.<name>.scale", "tags", "window_s"]
    # and types come from the fields and their validators
    assert rows["mode"].type == "String, one of `fast`, `slow`"
    assert rows["window_s"].type == "Integer, 1 to 86,400"
    assert rows["tags"].type == "list of String (one of `a`, `b`), at least 1 item"
    assert rows["limits"].type == "mapping of String to Float (at least 0)"
    assert rows["profiles"].type == "mapping of String to mapping"
    assert rows["items"].type == "list of mapping"
    assert rows["enabled"].type == "Boolean"
    assert rows["profiles.<name>.scale"].type == "Float, more than 0"
    # and defaults are shown as a route file writes them, callable ones by their value
    assert (rows["mode"].default, rows["window_s"].default, rows["enabled"].default) == ("`fast`", "`60`", "`false`")
    assert (rows["tags"].default, rows["limits"].default, rows["inner"].default) == ("`[]`", "`{}`", "`{}`")
    assert rows["items"].default == '`[{"meter": "m"}]`'
    assert rows["profiles"].default == "" and rows["profiles"].required
    assert not rows["inner.meter"].default and rows["inner.meter"].required and not rows["inner.scale"].required
    # and descriptions come from the metadata, with the example; none where the field has none
    assert rows["mode"].description == "How it runs | which way. Example: `slow`."
    assert rows["items"].description == ""
    # When rendered as a table  Then a "|" in a cell does not break the table
    assert "| `mode` | String, one of `fast`, `slow` | `fast` | no | How it runs \\| which way. Example: `slow`. |" \
        in reference.table(list(rows.values()))


def _schemas_of(module) -> list[type[Schema]]:
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Schema) and cls.__module__ == module.__name__]


def test_every_field_of_the_route_file_schema_has_a_description():
    # Given every schema of bus/routes/schema.py (route file, route, endpoint, retry, queue, ...)
    schemas = _schemas_of(route_schema)
    assert len(schemas) >= 10
    # When their fields are read
    missing = [f"{cls.__name__}.{name}" for cls in schemas for name, f in cls._declared_fields.items()
               if not (f.metadata or {}).get("description")]
    # Then each has a description for the reference
    assert not missing, f"fields without metadata=describe(...): {', '.join(missing)}"


def test_options_without_a_description_are_listed_and_only_the_pending_connectors_have_them(built):
    # Given the reference as built now
    ref, _ = built
    # When the options without a description are listed
    route_file = [u for u in ref.undescribed if u.startswith("route-file.md")]
    others = [u for u in ref.undescribed if not u.startswith("route-file.md")
              and not any(u.startswith(f"connectors.md: {name} (") for name in PENDING)]
    # Then no key of a route file lacks one, and no connector or transformer option beyond the pending ones
    assert not route_file, route_file
    assert not others, "options without a description (give them metadata=describe(...)):\n  " + "\n  ".join(others)


def test_a_transformer_that_cannot_be_loaded_is_left_out_with_a_warning(monkeypatch):
    # Given a registered transformer whose module is not there (yet)
    real_names, real_load = registry.names, registry.load

    def names(group):
        return real_names(group) + (("not_written_yet",) if group == registry.TRANSFORMERS else ())

    def load(group, name):
        if name == "not_written_yet":
            raise ModuleNotFoundError("No module named 'transformers.not_written_yet'")
        return real_load(group, name)

    monkeypatch.setattr(registry, "names", names)
    monkeypatch.setattr(registry, "load", load)
    warnings: list[str] = []
    # When the reference is built
    ref = reference.build(warn=warnings.append)
    # Then it is written without it, and the warning names it
    assert "not_written_yet" not in ref.files["transformers.md"]
    assert any("transformer 'not_written_yet' left out" in w and "ModuleNotFoundError" in w for w in warnings)
    assert "transformer not_written_yet" in ref.skipped
    assert "## `to_fms_cases`" in ref.files["transformers.md"]


def test_docs_writes_the_pages_and_check_names_the_stale_ones(tmp_path):
    # Given an empty folder
    out = tmp_path / "reference"
    runner = CliRunner()
    # When `gridbus routes docs --check` runs against it  Then exit 1, every page named stale
    checked = runner.invoke(docs, ["--out", str(out), "--check"])
    assert checked.exit_code == 1
    assert all(f"stale: {out / page}" in checked.output for page in reference.PAGES)
    assert "run `gridbus routes docs" in checked.output
    # When the pages are written  Then --check passes
    written = runner.invoke(docs, ["--out", str(out)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in out.iterdir()) == sorted(reference.PAGES)
    assert runner.invoke(docs, ["--out", str(out), "--check"]).exit_code == 0
    # When one page is edited by hand  Then --check names that page only
    (out / "connectors.md").write_text("edited by hand\n")
    again = runner.invoke(docs, ["--out", str(out), "--check"])
    assert again.exit_code == 1
    assert f"stale: {out / 'connectors.md'}" in again.output
    assert "route-file.md" not in again.output
