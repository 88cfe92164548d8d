"""Find connectors and transformers by name, never by import.

``bus`` must not import ``connectors`` or ``transformers`` (dependency direction);
they announce themselves as entry points in ``setup.cfg``::

    [options.entry_points]
    gridbus.transformers = hes_a_csv = transformers.hes_a_csv:HesACsvDecoder
    gridbus.connectors   = file-drop = connectors.file_drop:FileDropSource
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from bus.errors import ConfigError

TRANSFORMERS = "gridbus.transformers"
CONNECTORS = "gridbus.connectors"


@lru_cache(maxsize=None)
def names(group: str) -> tuple[str, ...]:
    return tuple(sorted({ep.name for ep in entry_points(group=group)}))


def did_you_mean(name: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@lru_cache(maxsize=None)
def load(group: str, name: str) -> Any:
    """The object registered as ``name``; classes are instantiated without arguments."""
    for ep in entry_points(group=group):
        if ep.name == name:
            obj = ep.load()
            return obj() if isinstance(obj, type) else obj
    kind = group.rsplit(".", 1)[-1][:-1]
    raise ConfigError(f"unknown {kind} {name!r}{did_you_mean(name, names(group))}")


def transformer(name: str) -> Any:
    return load(TRANSFORMERS, name)


def connector(name: str) -> Any:
    return load(CONNECTORS, name)
