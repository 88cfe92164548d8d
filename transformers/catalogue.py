"""The data files in ``transformers/data``: CSV ReadingTypes and IS 15959 event codes."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import yaml

from bus.canonical.fields import EVENT_CLASSES, SEVERITIES
from bus.errors import ConfigError


@dataclass(frozen=True)
class ReadingProfile:
    """One HES CSV layout: the meter and time columns and the value columns' ReadingTypes."""

    name: str
    kind: str  # "interval" → intervalBlocks, "register" → readings
    meter: str
    time: str
    columns: tuple[tuple[str, str], ...]  # (column, ReadingType mRID), document order


@dataclass(frozen=True)
class EventCode:
    """What an IS 15959 event code means in CIM terms."""

    is_code: int
    event_type: str
    name: str
    classes: tuple[str, ...]  # routing classes: outage, critical, fraud, health
    severity: str = "info"  # from the classes, by the rule in is15959_events.yaml


def _load(file_name: str) -> dict:
    path = files("transformers") / "data" / file_name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {file_name}: {exc}", file=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top", file=str(path))
    return data


@lru_cache(maxsize=None)
def reading_profiles() -> tuple[ReadingProfile, ...]:
    """Profiles from ``reading_types.yaml``, in file order."""
    out = []
    for name, spec in _load("reading_types.yaml").items():
        try:
            out.append(ReadingProfile(name, spec["kind"], spec["meter"], spec["time"],
                                      tuple((str(c), str(rt)) for c, rt in spec["columns"].items())))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"profile {name!r} is incomplete: {exc}", file="reading_types.yaml") from exc
    return tuple(out)


def _severity_rule(data: dict) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(levels most severe first, class → level)``, checked against the canonical vocabulary."""
    try:
        levels = tuple(str(v) for v in data["severity"]["levels"])
        by_class = {str(k): str(v) for k, v in data["severity"]["classes"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"severity rule is incomplete: {exc}", file="is15959_events.yaml") from exc
    if not levels or not set(levels) <= set(SEVERITIES) or not set(by_class.values()) <= set(levels):
        raise ConfigError(f"severity levels must be among {list(SEVERITIES)}", file="is15959_events.yaml")
    if by_class.keys() != EVENT_CLASSES:
        raise ConfigError(f"severity.classes must name each of {sorted(EVENT_CLASSES)}",
                          file="is15959_events.yaml")
    return levels, by_class


@lru_cache(maxsize=None)
def is15959_events() -> dict[int, EventCode]:
    """IS 15959 code → its CIM EndDeviceEventType, name, routing classes and severity."""
    data = _load("is15959_events.yaml")
    levels, by_class = _severity_rule(data)
    out = {}
    for code, spec in data["events"].items():
        try:
            classes = tuple(str(c) for c in spec.get("class") or ())
            ranks = [levels.index(by_class[c]) for c in classes]
            out[int(code)] = EventCode(int(code), str(spec["eventType"]), str(spec["name"]), classes,
                                       levels[min(ranks, default=len(levels) - 1)])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"event {code!r} is incomplete or has an unknown class: {exc}",
                              file="is15959_events.yaml") from exc
    return out


@lru_cache(maxsize=None)
def event_codes_by_type() -> dict[str, EventCode]:
    """CIM EndDeviceEventType → its IS 15959 code (one each: the data file never shares a type)."""
    return {code.event_type: code for code in is15959_events().values()}


def event_classes(event_type: str) -> tuple[str, ...]:
    """Routing classes of a CIM EndDeviceEventType, e.g. ``("outage", "critical")``."""
    code = event_codes_by_type().get(event_type)
    return code.classes if code else ()


@lru_cache(maxsize=None)
def default_severity() -> str:
    """The severity of an event in no class (the rule's last level)."""
    return _severity_rule(_load("is15959_events.yaml"))[0][-1]
