"""Load YAML keeping the line of every value, so each error can name file:line."""
from __future__ import annotations

import re
from typing import Any

import yaml

from bus.errors import ConfigError

Path = tuple  # a path into the document: keys and list indexes
_SCALARS = yaml.SafeLoader("")  # only its scalar constructors are used
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_with_lines(text: str, file: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; return the data and a map from path to 1-based line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file,
                          mark.line + 1 if mark else None) from exc
    lines: dict[Path, int] = {}
    if root is None:
        return None, lines
    return _convert(root, (), lines, file), lines


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in result:
                raise ConfigError(f"key {key!r} appears twice", file, key_node.start_mark.line + 1)
            result[key] = _convert(value_node, path + (key,), lines, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    # Scalars: let PyYAML's resolver give ints, floats, booleans and nulls their types.
    return _SCALARS.construct_object(node)


def interpolate(data: Any, env: dict[str, str], lines: dict[Path, int], file: str,
                errors: list[ConfigError], path: Path = ()) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in strings; collect missing names."""
    if isinstance(data, dict):
        return {k: interpolate(v, env, lines, file, errors, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, lines, file, errors, path + (i,)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append(ConfigError(f"environment variable {name} is not set", file, line_of(lines, path)))
        return match.group(0)

    return _VAR.sub(substitute, data)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]
