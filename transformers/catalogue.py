"""The data files in ``transformers/data``: CSV ReadingTypes and IS 15959 event codes."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import yaml

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


@lru_cache(maxsize=None)
def is15959_events() -> dict[int, EventCode]:
    """IS 15959 code → its CIM EndDeviceEventType, name and routing classes."""
    out = {}
    for code, spec in _load("is15959_events.yaml")["events"].items():
        try:
            out[int(code)] = EventCode(int(code), str(spec["eventType"]), str(spec["name"]),
                                       tuple(spec.get("class") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"event {code!r} is incomplete: {exc}", file="is15959_events.yaml") from exc
    return out


@lru_cache(maxsize=None)
def _classes_by_event_type() -> dict[str, tuple[str, ...]]:
    return {code.event_type: code.classes for code in is15959_events().values()}


def event_classes(event_type: str) -> tuple[str, ...]:
    """Routing classes of a CIM EndDeviceEventType, e.g. ``("outage", "critical")``."""
    return _classes_by_event_type().get(event_type, ())
