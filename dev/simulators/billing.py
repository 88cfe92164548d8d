"""Billing determinants from 15-min interval energy (use case 6): pure functions.

``determinants(series, start_utc, end_utc, calendar)`` takes one meter's block-load
series as the MDMS stand-in keeps them (readingType -> {timeStamp: value}, the
timeStamp being the END of the interval, UTC ``YYYY-MM-DDTHH:MM:SSZ``) and answers
the determinants of the period (docs/request-formats.md):

- an interval belongs to the period when its end t satisfies start < t <= end;
- it belongs to the TOD zone of its START (t - 15 min) in the calendar's local
  time (IST, simulators/data/tod_calendar.yaml);
- maximum demand = 4 x the 15-min energy (kWh -> kW, kVAh -> kVA), the largest
  interval; "at" is that interval's end timestamp (the earliest on a tie);
- average PF = kWh import total / kVAh import total over the period;
- energies are sums of floats, rounded to 6 decimals (a micro-kWh: below any
  meter's resolution, and it keeps 0.1 + 0.2 from showing as 0.30000000000000004);
  PF is rounded to 4 decimals from the rounded totals;
- a missing interval is simply absent: ``missing_intervals`` counts the 15-min slots
  of the period that have no kWh-import value.

Only ``load_calendar`` touches a file; nothing here imports bus, connectors or transformers.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

RT_KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KVAH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0"
RT_KVAH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0"
BLOCK_LOAD_ENERGY_TYPES = (RT_KWH_IMP, RT_KWH_EXP, RT_KVAH_IMP, RT_KVAH_EXP)

DEFAULT_CALENDAR = Path(__file__).parent / "data" / "tod_calendar.yaml"
ENERGY_DECIMALS = 6
PF_DECIMALS = 4
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_CLOCK = re.compile(r"(\d\d):(\d\d)")
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")
_EPOCH = dt.datetime(1970, 1, 1)


class CalendarError(ValueError):
    """A TOD calendar that does not give every minute of the day exactly one zone."""


@dataclasses.dataclass(frozen=True)
class TodCalendar:
    """TOD zones by local minute of the day, with optional per-day overrides."""

    name: str
    utc_offset: dt.timedelta
    zones: tuple[str, ...]                                   # in the calendar's order
    by_minute: tuple[str, ...]                               # 1440 zone names
    overrides: tuple[tuple[frozenset, frozenset, tuple[str, ...]], ...] = ()  # (weekdays, dates, by_minute)

    def zone_at_local(self, local: dt.datetime) -> str:
        """The zone of a local (wall-clock) instant."""
        minute = local.hour * 60 + local.minute
        if self.overrides:
            weekday, day = WEEKDAYS[local.weekday()], local.date().isoformat()
            for weekdays, dates, by_minute in self.overrides:
                if weekday in weekdays or day in dates:
                    return by_minute[minute]
        return self.by_minute[minute]

    def zone_of_interval(self, end_utc: str, interval_minutes: int = 15) -> str:
        """The zone of the interval ending at ``end_utc``: the zone of its start, in local time."""
        end = dt.datetime.strptime(end_utc, TIME_FORMAT)
        return self.zone_at_local(end - dt.timedelta(minutes=interval_minutes) + self.utc_offset)


def _minute(text: Any, where: str) -> int:
    match = _CLOCK.fullmatch(str(text))
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59 or (
            int(match.group(1)) == 24 and int(match.group(2)) != 0):
        raise CalendarError(f"{where} must be a local time HH:MM (00:00..24:00), not {text!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def _day_table(zones: Any, where: str) -> tuple[list[str], tuple[str, ...]]:
    if not isinstance(zones, list) or not zones:
        raise CalendarError(f"{where} must be a non-empty list of {{name, from, to}}")
    names: list[str] = []
    table: list[str | None] = [None] * 1440
    for i, zone in enumerate(zones):
        at = f"{where}[{i}]"
        if not isinstance(zone, dict) or not isinstance(zone.get("name"), str) or not zone["name"]:
            raise CalendarError(f"{at} must be an object with a name, from and to")
        start, end = _minute(zone.get("from"), f"{at}.from"), _minute(zone.get("to"), f"{at}.to")
        length = 1440 if end - start == 1440 else (end - start) % 1440
        if length == 0:
            raise CalendarError(f"{at} is empty (from == to); a whole day is 00:00-24:00")
        if zone["name"] not in names:
            names.append(zone["name"])
        for minute in range(start, start + length):
            slot = minute % 1440
            if table[slot] is not None:
                raise CalendarError(f"{at} overlaps zone {table[slot]!r} at {slot // 60:02d}:{slot % 60:02d}")
            table[slot] = zone["name"]
    gaps = [m for m, zone in enumerate(table) if zone is None]
    if gaps:
        raise CalendarError(f"{where} leave {gaps[0] // 60:02d}:{gaps[0] % 60:02d} without a zone")
    return names, tuple(table)  # type: ignore[arg-type]


def calendar_from_dict(doc: Mapping[str, Any]) -> TodCalendar:
    """A ``TodCalendar`` from the parsed yaml (see simulators/data/tod_calendar.yaml)."""
    if not isinstance(doc, Mapping):
        raise CalendarError("a TOD calendar is a mapping with utc_offset and zones")
    offset = _OFFSET.fullmatch(str(doc.get("utc_offset", "+05:30")))
    if not offset:
        raise CalendarError(f"utc_offset must be like +05:30, not {doc.get('utc_offset')!r}")
    sign = -1 if offset.group(1) == "-" else 1
    utc_offset = sign * dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3)))
    names, table = _day_table(doc.get("zones"), "zones")
    overrides = []
    for i, override in enumerate(doc.get("overrides") or ()):
        at = f"overrides[{i}]"
        if not isinstance(override, dict):
            raise CalendarError(f"{at} must be a mapping with weekdays and/or dates, and zones")
        weekdays = [str(d).lower() for d in override.get("weekdays") or ()]
        dates = [str(d) for d in override.get("dates") or ()]
        if not weekdays and not dates:
            raise CalendarError(f"{at} names no weekday and no date")
        bad = [d for d in weekdays if d not in WEEKDAYS]
        if bad:
            raise CalendarError(f"{at}.weekdays: {bad[0]!r} is not one of {WEEKDAYS}")
        for day in dates:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise CalendarError(f"{at}.dates: {day!r} is not a date YYYY-MM-DD") from None
        day_names, day_table = _day_table(override.get("zones"), f"{at}.zones")
        unknown = [n for n in day_names if n not in names]
        if unknown:
            raise CalendarError(f"{at}.zones: zone {unknown[0]!r} is not one of the main zones {names}")
        overrides.append((frozenset(weekdays), frozenset(dates), day_table))
    return TodCalendar(str(doc.get("name", "tod")), utc_offset, tuple(names), table, tuple(overrides))


def load_calendar(path: str | Path | None = None) -> TodCalendar:
    """The TOD calendar in ``path`` (default simulators/data/tod_calendar.yaml)."""
    with open(path or DEFAULT_CALENDAR, encoding="utf-8") as fh:
        return calendar_from_dict(yaml.safe_load(fh))


_default: TodCalendar | None = None


def default_calendar() -> TodCalendar:
    global _default
    if _default is None:
        _default = load_calendar()
    return _default


def _epoch_s(instant: str, where: str) -> int:
    if not isinstance(instant, str) or not _INSTANT.fullmatch(instant):
        raise ValueError(f"{where} must be UTC like 2026-11-01T00:00:00Z, not {instant!r}")
    return int((dt.datetime.strptime(instant, TIME_FORMAT) - _EPOCH).total_seconds())


def _energy(x: float) -> float:
    return round(x, ENERGY_DECIMALS) + 0.0          # + 0.0: never answer -0.0


def expected_intervals(start_utc: str, end_utc: str, interval_minutes: int = 15) -> int:
    """The number of interval ends t on the UTC 15-min grid with start < t <= end."""
    step = interval_minutes * 60
    return _epoch_s(end_utc, "end") // step - _epoch_s(start_utc, "start") // step


def determinants(series: Mapping[str, Mapping[str, float]], start_utc: str, end_utc: str,
                 calendar: TodCalendar | None = None, interval_minutes: int = 15) -> dict[str, Any]:
    """Billing determinants of one meter over (start_utc, end_utc]; see the module doc.

    ``series`` maps readingType mRID -> {interval-end timeStamp: value}; types other than
    the four block-load energy deltas are ignored.  ``calendar`` defaults to the yaml's.
    Raises ``ValueError`` for a malformed instant or end <= start."""
    calendar = calendar or default_calendar()
    start_s, end_s = _epoch_s(start_utc, "start"), _epoch_s(end_utc, "end")
    if end_s <= start_s:
        raise ValueError(f"end {end_utc} must be after start {start_utc}")
    step = interval_minutes * 60
    per_hour = 60 / interval_minutes

    def in_period(rt: str) -> list[tuple[str, float]]:
        # the fixed-width UTC format orders as text, so no parsing to select
        values = series.get(rt) or {}
        return sorted((t, v) for t, v in values.items() if start_utc < t <= end_utc)

    kwh_imp, kvah_imp = in_period(RT_KWH_IMP), in_period(RT_KVAH_IMP)
    kwh_exp, kvah_exp = in_period(RT_KWH_EXP), in_period(RT_KVAH_EXP)

    def by_zone(values: list[tuple[str, float]]) -> dict[str, float]:
        parts: dict[str, list[float]] = {zone: [] for zone in calendar.zones}
        for t, v in values:
            parts[calendar.zone_of_interval(t, interval_minutes)].append(v)
        return {zone: _energy(math.fsum(vs)) for zone, vs in parts.items()}

    def max_demand(values: list[tuple[str, float]]) -> dict[str, Any]:
        best: tuple[str, float] | None = None
        for t, v in values:                          # sorted by time: the earliest max wins
            if best is None or v > best[1]:
                best = (t, v)
        return ({"value": _energy(best[1] * per_hour), "at": best[0]} if best
                else {"value": None, "at": None})

    def total(values: list[tuple[str, float]]) -> float:
        return _energy(math.fsum(v for _, v in values))

    kwh_total, kvah_total = total(kwh_imp), total(kvah_imp)
    kwh_exp_total = total(kwh_exp)
    on_grid = sum(1 for t, _ in kwh_imp if _epoch_s(t, "timeStamp") % step == 0)
    return {
        "period": {"start": start_utc, "end": end_utc},
        "intervals": len(kwh_imp),
        "missing_intervals": end_s // step - start_s // step - on_grid,
        "kwh_import": {"total": kwh_total, "zones": by_zone(kwh_imp)},
        "kvah_import": {"total": kvah_total, "zones": by_zone(kvah_imp)},
        "kwh_export": {"total": kwh_exp_total},
        "kvah_export": {"total": total(kvah_exp)},
        "max_demand_kw": max_demand(kwh_imp),
        "max_demand_kva": max_demand(kvah_imp),
        "average_pf": round(kwh_total / kvah_total, PF_DECIMALS) if kvah_total else None,
        "net_kwh": _energy(kwh_total - kwh_exp_total),
    }
