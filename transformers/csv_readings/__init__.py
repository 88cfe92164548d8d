"""``csv_readings``: any HES's CSV dialect → canonical MeterReadings or EndDeviceEvents, from YAML.

The route declares the dialect (encoding, delimiter, quote, decimal mark, preamble lines, time
zone, what means "missing") and one or more profiles (mapping.py); a file's header picks its
profile.  What a connector team gets without writing Python is what ``hes_a_csv`` gives HES-A:
bad rows rejected one by one with their line in the file, the rest delivered; a repeated
(meter, time) with the same values collapsed, with other values rejected; plain decimals only.

The file-drop ingress reads the file through ``bind(options)``: it transcodes a file in another
encoding or with preamble lines to UTF-8 with the header first (the preamble becomes blank lines
after it, so every data line keeps its number), checks the header and finds conflicting repeats
across chunks.  Wide files go through transformers/wide_rows.py, the loop hes_a_csv reads too.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from operator import itemgetter
from typing import Callable, Mapping

from bus.canonical import END_DEVICE_EVENTS, METER_READINGS
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.catalogue import ReadingProfile, is15959_events
from transformers.csv_readings.mapping import CsvReadingsOptions, Dialect, Profile, Quantity, mapping
from transformers.csv_rows import Rows, csv_reason
from transformers.gc_pause import gc_paused
from transformers.hes_a_csv import RowIdentity, _meter_readings
from transformers.instants import canonical_instant, utc_day_start, utc_instant
from transformers.wide_rows import WideLayout, read_wide

_UNSEEN = object()
_PLAIN = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+").fullmatch


@dataclass(frozen=True)
class Header:
    """A header line read against a mapping: the profile it is, and where each column sits."""

    profile: Profile
    width: int
    meter: int
    time: int
    date: int | None
    code: int | None
    value: int | None
    received: int | None
    columns: tuple[int, ...]      # wide: each quantity's column, in profile order
    time_name: str                # the header's own name of the time column, for rejections

    def to_utc(self) -> Callable[[str, object], str]:
        return time_reader(self.profile)

    def raw_time(self, row: list[str]) -> str:
        """The row's time as the profile's pattern reads it: one column, or date, a space and time."""
        return row[self.time] if self.date is None else f"{row[self.date].strip()} {row[self.time].strip()}"


def time_reader(profile: Profile) -> Callable[[str, object], str]:
    """``(raw, zone) → canonical instant`` for a profile's time column(s); ValueError if unreadable."""
    fmt, shift = profile.time_format, profile.shift_s
    if fmt == "iso" and not shift:
        return utc_instant if profile.kind != "register" else utc_day_start
    if fmt == "iso":
        return lambda raw, zone: canonical_instant(datetime.fromisoformat(raw.strip()), zone, shift)
    return lambda raw, zone: canonical_instant(datetime.strptime(raw.strip(), fmt), zone, shift)


def read_header(header_line: str, dialect: Dialect) -> Header:
    """The profile a header line belongs to; DecodeError naming what the closest profile misses."""
    line = header_line.lstrip("\ufeff").strip()
    try:
        names = [n.strip().lower() for n in next(csv.reader([line], strict=True, **dialect.csv), [])]
    except csv.Error as exc:
        raise DecodeError(f"CSV header line is not valid CSV: {csv_reason(exc)}") from None
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)  # the first of repeated names wins

    def where(aliases):
        return next((index[a] for a in aliases if a in index), None) if aliases else None

    missing = {p: [a[0] for a in p.required() if where(a) is None] for p in dialect.profiles}
    matches = [p for p, m in missing.items() if not m]
    if not matches:
        closest = min(missing, key=lambda p: len(missing[p]))
        if len(dialect.profiles) == 1 and len(missing[closest]) == len(closest.required()) and len(names) == 1 \
                and dialect.delimiter not in line and ("," in line or ";" in line or "\t" in line):
            raise DecodeError(f"CSV header has no {dialect.delimiter!r} (the route's delimiter): is the file "
                              f"separated by another character?")
        raise DecodeError(f"CSV header matches no profile of the route ({', '.join(p.name for p in dialect.profiles)}); "
                          f"closest is {closest.name}, missing columns: {', '.join(missing[closest])}")
    profile = max(matches, key=lambda p: len(p.required()))  # two profiles' columns: the more specific
    columns = tuple(where(q.names) for q in profile.quantities) if profile.layout == "wide" else ()
    return Header(profile, len(names), where(profile.meter), where(profile.time), where(profile.date),
                  where(profile.code), where(profile.value), where(profile.received), columns,
                  next(a for a in profile.time if a in index))


# ------------------------------------------------------------------------------ values

def _scaler(q: Quantity) -> Callable[[float], float] | None:
    """Value → scaled value; a division when the scale is 1/n, so 1234 Wh is 1.234 kWh exactly as written."""
    if q.scale == 1:
        return None
    inverse = 1 / q.scale
    if inverse > 1 and abs(inverse - round(inverse)) < 1e-9:
        n = float(round(inverse))
        return lambda v: v / n
    scale = q.scale
    return lambda v: v * scale


def _value(s: str, q: Quantity, dialect: Dialect, profile: str) -> tuple[float | None, str | None]:
    """One value as written (stripped) → (number or None for missing, reason to reject); ``profile``
    names the mapping's profile where a reason points at the option to change."""
    if s in dialect.missing:
        return None, None
    text = s.replace(",", ".") if dialect.decimal == "," else s
    sign = 1.0
    if q.signed and text[:1] == "-":
        text, sign = text[1:], -1.0
    if not _PLAIN(text):
        if text[:1] == "-" and _PLAIN(text[1:]):
            return None, f"{q.key} {s!r} is negative"
        try:
            v = float(text)
        except ValueError:
            if text and not text.strip("0123456789.,"):  # digits and marks: a thousands mark, two decimal marks
                v = math.nan
            else:
                return None, f"{q.key} {s!r} is not a number"
        if math.isinf(v) or (math.isnan(v) and text.strip("0123456789.,")):
            return None, f"{q.key} {s!r} is not a finite number"
        mark = "','" if dialect.decimal == "," else "'.'"
        return None, f"{q.key} {s!r} is not a plain decimal number (ASCII digits and one {mark})"
    v = sign * float(text)
    scale = _scaler(q)
    if scale:
        v = scale(v)
    if v > q.max:
        return None, f"{q.key} {s!r} is above the plausible maximum {q.max:,g} (csv_readings.profiles.{profile}.quantities.{q.key}.max)"
    return v, None


def _checked(row: list[str], header: Header, dialect: Dialect) -> tuple[tuple, str | None]:
    """Slow path of a wide row: its values (None = missing) or the reason it is rejected."""
    values = []
    for i, q in zip(header.columns, header.profile.quantities):
        v, why = _value(row[i].strip(" \t"), q, dialect, header.profile.name)
        if why:
            return (), why
        values.append(v)
    return tuple(values), None


# ------------------------------------------------------------------------------ decoding

def _decode_wide(h: Header, dialect: Dialect, rows: Rows, context: TransformContext) -> dict:
    profile, zone, to_utc = h.profile, dialect.zone, h.to_utc()
    scalers = tuple(_scaler(q) for q in profile.quantities)
    layout = WideLayout(
        width=h.width, meter=h.meter, meter_name=profile.meter[0], columns=h.columns,
        limits=tuple(q.max for q in profile.quantities),
        raw_time=itemgetter(h.time) if h.date is None else h.raw_time,  # one column: no Python call a row
        to_utc=lambda raw: to_utc(raw, zone), time_problem=lambda raw: _time_problem(h, raw),
        checked=lambda row: _checked(row, h, dialect), decimal_comma=dialect.decimal == ",",
        scalers=scalers if any(scalers) else ())
    return _meter_readings(_as_reading_profile(profile), read_wide(layout, rows, context), context)


def _time_problem(h: Header, raw: str) -> str:
    fmt = h.profile.time_format
    shown = raw.strip()
    if fmt == "iso":
        return f"{h.time_name} {shown!r} is not an ISO 8601 time"
    return f"{h.time_name} {shown!r} does not match {fmt!r}"


def _as_reading_profile(profile: Profile) -> ReadingProfile:
    return ReadingProfile(profile.name, profile.kind, profile.meter[0], profile.time[0],
                          tuple((q.key, q.reading_type) for q in profile.quantities))


def _decode_long(h: Header, dialect: Dialect, rows: Rows, context: TransformContext) -> dict:
    """One row per meter, time and quantity code: gathered per (meter, time) into the wide shape."""
    profile, zone, to_utc = h.profile, dialect.zone, h.to_utc()
    by_code = {q.key: (k, q) for k, q in enumerate(profile.quantities)}
    width, nq = h.width, len(profile.quantities)
    per_meter: dict[str, dict[str, list]] = {}
    first_seen: dict[tuple, tuple[int, float | None]] = {}
    utc_of: dict = {}
    for row in rows:
        if len(row) != width:
            rows.reject(f"expected {width} fields, found {len(row)}")
            continue
        meter = row[h.meter].strip()
        if not meter:
            rows.reject(f"empty {profile.meter[0]}")
            continue
        context.meters.add(meter)
        raw = h.raw_time(row)
        utc = utc_of.get(raw, _UNSEEN)
        if utc is _UNSEEN:
            try:
                utc = utc_of[raw] = to_utc(raw, zone)
            except (ValueError, OverflowError):
                utc = utc_of[raw] = None
        if utc is None:
            rows.reject(f"meter {meter}: {_time_problem(h, raw)}")
            continue
        code = row[h.code].strip()
        found = by_code.get(code)
        if found is None:
            rows.reject(f"meter {meter}: quantity code {code!r} is not in the route's quantities")
            continue
        k, q = found
        value, bad = _value(row[h.value].strip(" \t"), q, dialect, h.profile.name)
        if bad:
            rows.reject(f"meter {meter}: {bad}")
            continue
        key = (meter, utc, code)
        first = first_seen.get(key)
        if first is not None:
            if first[1] != value:
                rows.reject(f"meter {meter}: second row for {utc} {code} with other values "
                            f"(first at line {first[0]})")
            continue
        first_seen[key] = (rows.line, value)
        if value is None:
            continue
        slots = per_meter.setdefault(meter, {}).setdefault(utc, [None] * nq)
        slots[k] = value
    wide = {m: [(t, tuple(vs)) for t, vs in times.items()] for m, times in per_meter.items()}
    return _meter_readings(_as_reading_profile(profile), wide, context)


def _decode_events(h: Header, dialect: Dialect, rows: Rows, context: TransformContext) -> dict:
    profile, zone = h.profile, dialect.zone
    to_utc = time_reader(replace(profile, kind="interval"))  # an event time is an instant, never a bare date
    table = profile.events
    builtin = is15959_events() if table is None else None
    events: list[dict] = []
    seen: set[tuple[str, int, str]] = set()
    for row in rows:
        if len(row) != h.width:
            rows.reject(f"expected {h.width} fields, found {len(row)}")
            continue
        meter = row[h.meter].strip()
        if not meter:
            rows.reject(f"empty {profile.meter[0]}")
            continue
        context.meters.add(meter)
        raw_code = row[h.code].strip()
        if table is None:
            code = builtin.get(int(raw_code)) if raw_code.isascii() and raw_code.isdigit() and len(raw_code) < 10 \
                else None
        else:
            code = table.get(raw_code)
        if code is None:
            kind = "IS 15959 event code" if table is None else "event code (not in the route's codes)"
            rows.reject(f"meter {meter}: unknown {kind} {raw_code!r}")
            continue
        raw = h.raw_time(row)
        try:
            created = to_utc(raw, zone)
            received = to_utc(row[h.received], zone) if h.received is not None and row[h.received].strip() \
                else None
        except (ValueError, OverflowError):
            names = profile.time[0] + (f" or {profile.received[0]}" if profile.received else "")
            what = "an ISO 8601 time" if profile.time_format == "iso" else f"a time like {profile.time_format!r}"
            rows.reject(f"meter {meter}: {names} is not {what}")
            continue
        key = (meter, code.is_code, created)
        if key in seen:
            continue  # the MDMS keys events this way: a repeat is the same event
        seen.add(key)
        event = {"meter": meter, "eventType": code.event_type, "isCode": code.is_code,
                 "createdDateTime": created, "severity": code.severity}
        if code.classes:
            event["eventClass"] = list(code.classes)
        if received:
            event["receivedDateTime"] = received
        events.append(event)
    return {"noun": END_DEVICE_EVENTS, "source": context.source_system, "EndDeviceEvent": events}


# ------------------------------------------------------------------------------ ingress side

class MappedRowIdentity(RowIdentity):
    """(meter, time) of each line for the ingress's cross-chunk repeats, in the route's dialect.

    hes_a_csv's byte-level fast path serves a wide layout with one time column and a one-byte
    delimiter; otherwise each line is parsed on its own (long layouts add the quantity code)."""

    def __init__(self, header: Header, dialect: Dialect):  # noqa: D107 - RowIdentity's fields, set here
        self.header, self.mapped = header, dialect
        self.im, self.it = header.meter, header.time
        self.cols = [(i, q.key) for i, q in zip(header.columns, header.profile.quantities)]
        self.width = header.width
        self.zone = dialect.zone
        self.to_utc = header.to_utc()
        self.utc_of = {}
        self.dialect = dialect.csv
        self.sep = dialect.delimiter.encode()
        self.per_line = header.profile.layout == "long" or header.date is not None or len(self.sep) != 1

    def fingerprints(self, data: bytes, lines: list[bytes]) -> list[int]:
        if self.per_line:
            return [self._fingerprint(line) for line in lines]
        return super().fingerprints(data, lines)

    def _fingerprint(self, line: bytes) -> int:
        if not line.strip(b" \t\r"):
            return 0
        key = self.key(line.decode())
        return hash(key) if key else 1

    def _row(self, line: str) -> list[str] | None:
        try:
            return next(csv.reader((line,), strict=True, **self.dialect), [])
        except csv.Error:
            return None

    def key(self, line: str) -> tuple | None:
        row = self._row(line)
        h = self.header
        if row is None or len(row) != h.width:
            return None
        raw = h.raw_time(row)
        meter, utc = row[h.meter].strip(), self._utc(raw)
        if not meter or not utc:
            return None
        return (meter, utc, row[h.code].strip()) if h.profile.layout == "long" else (meter, utc)

    def values(self, line: str) -> tuple | None:
        row = self._row(line)
        h = self.header
        if row is None or len(row) != h.width:
            return None
        if h.profile.layout == "long":
            q = next((q for q in h.profile.quantities if q.key == row[h.code].strip()), None)
            if q is None:
                return None
            v, bad = _value(row[h.value].strip(" \t"), q, self.mapped, h.profile.name)
            return None if bad else (v,)
        values, bad = _checked(row, h, self.mapped)
        return None if bad else values


class BoundCsvReadings:
    """The decoder with one route's mapping, as the file-drop ingress uses it."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self.encoding = dialect.encoding
        self.skip_lines = dialect.skip_lines

    def check_header(self, header_line: str) -> str:
        h = read_header(header_line, self.dialect)
        return END_DEVICE_EVENTS if h.profile.kind == "events" else METER_READINGS

    def row_identity(self, header_line: str, options: Mapping | None = None) -> RowIdentity | None:
        h = read_header(header_line, self.dialect)
        return None if h.profile.kind == "events" else MappedRowIdentity(h, self.dialect)


class CsvReadingsDecoder:
    """``csv_readings``: a CSV file in the dialect and profiles the route declares → canonical
    MeterReadings (interval or register) or EndDeviceEvents."""

    name = "csv_readings"
    options_schema = CsvReadingsOptions

    def bind(self, options: Mapping) -> BoundCsvReadings:
        """ConfigError if the options are wrong (the route loader has checked them already)."""
        return BoundCsvReadings(mapping(options))

    def __call__(self, payload: SourceChunk, context: TransformContext) -> dict:
        if not isinstance(payload, SourceChunk) or payload.format != "csv":
            raise DecodeError(f"{self.name} reads CSV SourceChunks, got {type(payload).__name__}")
        dialect = mapping(context.options)
        header, _, body = payload.text.partition("\n")
        if not header.strip("\ufeff \t\r"):
            raise DecodeError(f"{payload.file_name}: no CSV header line")
        try:
            h = read_header(header, dialect)
        except DecodeError as exc:
            raise DecodeError(f"{payload.file_name}: {exc}") from None
        rows = Rows(body, payload.first_line, context, h.width, dialect.csv)
        with gc_paused():
            if h.profile.kind == "events":
                doc = _decode_events(h, dialect, rows, context)
            elif h.profile.layout == "long":
                doc = _decode_long(h, dialect, rows, context)
            else:
                doc = _decode_wide(h, dialect, rows, context)
        context.rows_in = rows.count
        return doc

