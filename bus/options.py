"""Options schemas: what a transformer or connector reads from a route, checked when routes load.

Every transformer declares ``options_schema`` (a subclass of ``OptionsSchema``) naming the
route ``options`` keys it reads, with type, default and a description (``metadata``): the
route loader checks a route's options against the schemas of its chain, and ``gridbus routes
docs`` writes the reference from the same schemas, so the two cannot disagree.

A route's ``options`` is one mapping shared by the steps of its chain: a key is unknown when
no step of the chain declares it.  Within a step's schema unknown keys are refused at every
level, each with a "did you mean" when a known key is close.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validates_schema

from bus.registry import did_you_mean

UNKNOWN_KEY = "unknown key"


def field_names(schema: Schema | type[Schema]) -> list[str]:
    """The keys a schema reads, as a route file spells them."""
    declared = schema._declared_fields if isinstance(schema, type) else schema.fields
    return sorted(f.data_key or name for name, f in declared.items() if not f.dump_only)


def unknown_key(key: Any, known: Iterable[str]) -> str:
    return f"{UNKNOWN_KEY} {key!r}{did_you_mean(str(key), list(known))}"


class OptionsSchema(Schema):
    """Refuses keys it does not declare, naming the closest one it does."""

    class Meta:
        unknown = EXCLUDE  # reported below, with a suggestion, instead of marshmallow's "Unknown field."

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _no_unknown_keys(self, _data, original, **_kwargs):
        if not isinstance(original, Mapping):
            return
        known = field_names(self)
        errors = {key: [unknown_key(key, known)] for key in original if key not in known}
        if errors:
            raise ValidationError(errors)


def describe(text: str, **extra: Any) -> dict:
    """``metadata`` of a field: its description for the reference (``gridbus routes docs``)."""
    return {"description": text, **extra}


class Text(fields.String):
    """A string that is not empty."""

    def _deserialize(self, value, attr, data, **kwargs):
        out = super()._deserialize(value, attr, data, **kwargs)
        if not out:
            raise ValidationError("must not be empty")
        return out


def check_chain_options(schemas: Mapping[str, type[Schema] | None], options: Mapping) -> dict:
    """The problems of a chain's ``options`` as marshmallow's nested messages; ``{}`` if none.

    ``schemas`` maps each step to its ``options_schema``; a step without one (a transformer from
    elsewhere that declares nothing) may read anything, so then no key is called unknown.
    """
    errors: dict = {}
    declared = [s for s in schemas.values() if s is not None]
    if len(declared) == len(schemas):
        known = sorted({k for s in declared for k in field_names(s)})
        errors.update({k: [unknown_key(k, known)] for k in options if k not in known})
    for schema in dict.fromkeys(declared):
        own = field_names(schema)
        try:
            schema().load({k: v for k, v in options.items() if k in own})
        except ValidationError as exc:
            _merge(errors, exc.messages)
    return errors


def _merge(into: dict, messages: Any) -> None:
    if not isinstance(messages, dict):
        into.setdefault("_schema", []).extend(messages if isinstance(messages, list) else [messages])
        return
    for key, value in messages.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif key not in into:
            into[key] = value
