"""HES-A CSV exports (block-load, daily, event log) → canonical documents.

The profile comes from the header: columns are found by name, in any order,
and extra columns are ignored.  Bad rows are rejected one by one with their
line number in the HES file; the rest of the chunk goes on.

Every physical line is its own row: a quote that never closes, a lone carriage
return or a field over csv's limit costs that line only.  Values are plain
ASCII decimals (``12``, ``0.125``), at most the route's plausible maximum for
their column; anything else float() would take (``1_000``, ``１２``, ``1e3``,
``-0``) rejects the row.
"""
from __future__ import annotations

import csv
import math
import re
from itertools import repeat
from operator import itemgetter
from typing import Callable, Mapping

from marshmallow import EXCLUDE, fields, validate
from marshmallow import ValidationError as SchemaError

from bus.canonical import END_DEVICE_EVENTS, METER_READINGS
from bus.errors import ConfigError, DecodeError
from bus.options import describe
from bus.registry import did_you_mean
from bus.transform import SourceChunk, TransformContext
from transformers.csv_rows import Rows as _Rows
from transformers.csv_rows import csv_reason as _csv_reason
from transformers.catalogue import ReadingProfile, is15959_events, reading_profiles
from transformers.gc_pause import gc_paused
from transformers.instants import LocalTimeOptions, local_zone, utc_day_start, utc_instant
from transformers.wide_rows import WideLayout, read_wide

EVENT_LOG = ReadingProfile("event-log", "events", "meter_serial", "event_time", ())
EVENT_LOG_COLUMNS = ("meter_serial", "event_code", "event_time", "hes_received")
_INF = math.inf
_UNSEEN = object()
_PLAIN = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+").fullmatch
# Far above any consumer meter, far below what a corrupt export writes; block-load values are
# per 15-minute interval, daily ones cumulative registers.  A route sets its own: options.plausible_max.
PLAUSIBLE_MAX = {"kwh_imp": 100, "kwh_exp": 100, "kvah_imp": 100, "kvah_exp": 100, "v_avg": 600, "i_avg": 1000,
                 "kwh_imp_cum": 100_000_000, "kwh_exp_cum": 100_000_000,
                 "kvah_imp_cum": 100_000_000, "kvah_exp_cum": 100_000_000}


def _value_column(name: str) -> None:
    known = sorted({c for p in reading_profiles() for c, _ in p.columns})
    if name not in known:
        raise SchemaError(f"{name!r} is not a value column{did_you_mean(name, known)}")


class HesACsvOptions(LocalTimeOptions):
    """The route ``options`` this decoder reads; the other keys belong to other steps of the chain."""

    class Meta:
        unknown = EXCLUDE

    plausible_max = fields.Dict(keys=fields.String(validate=_value_column), load_default=dict,
                                values=fields.Float(allow_nan=False, validate=validate.Range(min=0)),
                                metadata=describe("Largest value taken per value column, e.g. {kwh_imp: 50}; "
                                                  "a row above it is rejected (defaults in hes_a_csv.py)."))




def check_options(options: Mapping, route_id: str | None = None) -> dict:
    """Route options as this decoder reads them; ``ConfigError`` naming the route and the option."""
    try:
        return HesACsvOptions().load(dict(options))
    except SchemaError as exc:
        where = f"route {route_id}: " if route_id else ""
        raise ConfigError(where + "; ".join(_flat(exc.messages))) from None


def _flat(messages, path: str = "") -> list[str]:
    if isinstance(messages, dict):
        return [m for k, v in messages.items()
                for m in _flat(v, path if k in ("key", "value") else f"{path}.{k}" if path else str(k))]
    return [f"option {path}: {m}" for m in messages]


def _limits(profile: ReadingProfile, options: Mapping) -> tuple[float, ...]:
    chosen = {**PLAUSIBLE_MAX, **(options.get("plausible_max") or {})}
    return tuple(float(chosen.get(c, _INF)) for c, _ in profile.columns)


def _required(profile: ReadingProfile) -> tuple[str, ...]:
    if profile is EVENT_LOG:
        return EVENT_LOG_COLUMNS
    return (profile.meter, profile.time, *(c for c, _ in profile.columns))


def parse_header(header_line: str) -> tuple[ReadingProfile, dict[str, int], int]:
    """The profile a header line belongs to, its column positions and its width.

    Raises ``DecodeError`` naming the columns missing for the closest profile.
    """
    line = header_line.lstrip("\ufeff").strip()
    try:
        names = [n.strip().lower() for n in next(csv.reader([line], strict=True), [])]
    except csv.Error as exc:
        raise DecodeError(f"CSV header line is not valid CSV: {_csv_reason(exc)}") from None
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)  # the first of repeated names wins
    missing = {p: [c for c in _required(p) if c not in index] for p in (*reading_profiles(), EVENT_LOG)}
    matches = [p for p, m in missing.items() if not m]
    if matches:
        # a header carrying two profiles' columns is read as the more specific one
        return max(matches, key=lambda p: len(_required(p))), index, len(names)
    closest = min(missing, key=lambda p: len(missing[p]))
    raise DecodeError(f"CSV header matches no HES-A profile (block-load, daily, event-log); "
                      f"closest is {closest.name}, missing columns: {', '.join(missing[closest])}")


def _checked_values(row: list[str], cols: list[tuple[int, str]], limits: tuple,
                    where: str = "route option plausible_max.{}") -> tuple[tuple, str | None]:
    """Slow path for a row the fast path refused: values (None = empty) or the reason."""
    values: list = []
    for (i, name), limit in zip(cols, limits):
        s = row[i].strip(" \t")
        if not s:
            values.append(None)  # an empty value drops that value only
            continue
        if _PLAIN(s):
            v = float(s)
            if v > limit:
                return (), f"{name} {s!r} is above the plausible maximum {limit:,g} ({where.format(name)})"
            values.append(v)
            continue
        if s[0] == "-" and _PLAIN(s[1:]):
            return (), f"{name} {s!r} is negative"
        try:
            v = float(s)
        except ValueError:
            return (), f"{name} {s!r} is not a number"
        if not math.isfinite(v):
            return (), f"{name} {s!r} is not a finite number"
        return (), f"{name} {s!r} is not a plain decimal number (ASCII digits and one '.')"
    return tuple(values), None


def _decode_readings(profile: ReadingProfile, index: dict[str, int], width: int, rows: _Rows,
                     context: TransformContext) -> dict:
    zone = local_zone(context.options)
    to_utc: Callable = utc_instant if profile.kind == "interval" else utc_day_start
    cols = [(index[c], c) for c, _ in profile.columns]
    limits = _limits(profile, context.options)
    layout = WideLayout(
        width=width, meter=index[profile.meter], meter_name=profile.meter, columns=tuple(i for i, _ in cols),
        limits=limits, raw_time=itemgetter(index[profile.time]), to_utc=lambda raw: to_utc(raw, zone),
        time_problem=lambda raw: f"{profile.time} {raw.strip()!r} is not an ISO 8601 time",
        checked=lambda row: _checked_values(row, cols, limits))
    return _meter_readings(profile, read_wide(layout, rows, context), context)


def _meter_readings(profile: ReadingProfile, per_meter: dict, context: TransformContext) -> dict:
    rts = [rt for _, rt in profile.columns]
    types = list(enumerate(rts))
    out = []
    for meter, entries in per_meter.items():
        if profile.kind == "interval" and len(entries) == 1:
            # a chunk sorted by time holds one row per meter: one comprehension, not six
            t, vs = entries[0]
            blocks = [{"readingType": rt, "intervalReadings": [{"timeStamp": t, "value": v}]}
                      for rt, v in zip(rts, vs) if v is not None]
            if blocks:
                out.append({"meter": meter, "intervalBlocks": blocks})
        elif profile.kind == "interval":
            blocks = []
            for k, rt in types:
                # comprehensions build the value dicts far faster than appends in the row loop
                lst = [{"timeStamp": t, "value": vs[k]} for t, vs in entries if vs[k] is not None]
                if lst:
                    blocks.append({"readingType": rt, "intervalReadings": lst})
            if blocks:
                out.append({"meter": meter, "intervalBlocks": blocks})
        else:
            readings = [{"readingType": rt, "timeStamp": t, "value": vs[k]}
                        for k, rt in types for t, vs in entries if vs[k] is not None]
            if readings:
                out.append({"meter": meter, "readings": readings})
    return {"noun": METER_READINGS, "source": context.source_system, "MeterReading": out}


def _decode_events(index: dict[str, int], width: int, rows: _Rows, context: TransformContext) -> dict:
    zone = local_zone(context.options)
    codes = is15959_events()
    im, ic, it, ir = (index[c] for c in EVENT_LOG_COLUMNS)
    events: list[dict] = []
    seen: set[tuple[str, int, str]] = set()
    for row in rows:
        if len(row) != width:
            rows.reject(f"expected {width} fields, found {len(row)}")
            continue
        meter = row[im].strip()
        if not meter:
            rows.reject("empty meter_serial")
            continue
        context.meters.add(meter)
        raw_code = row[ic].strip()
        code = codes.get(int(raw_code)) if raw_code.isascii() and raw_code.isdigit() else None
        if code is None:
            rows.reject(f"meter {meter}: unknown IS 15959 event code {raw_code!r}")
            continue
        try:
            created = utc_instant(row[it], zone)
            received = utc_instant(row[ir], zone) if row[ir].strip() else None
        except ValueError:
            rows.reject(f"meter {meter}: event_time or hes_received is not an ISO 8601 time")
            continue
        key = (meter, code.is_code, created)
        if key in seen:
            continue  # the MDMS keys events this way: a repeat is the same event
        seen.add(key)
        event = {"meter": meter, "eventType": code.event_type, "isCode": code.is_code,
                 "createdDateTime": created, "severity": code.severity}
        if code.classes:  # routing classes, as the alarm decoders give them
            event["eventClass"] = list(code.classes)
        if received:
            event["receivedDateTime"] = received
        events.append(event)
    return {"noun": END_DEVICE_EVENTS, "source": context.source_system, "EndDeviceEvent": events}


class RowIdentity:
    """What the file-drop ingress needs to find rows of one file claiming the same reading.

    A fingerprint is a hash of (meter, UTC time) of a line, valid within one
    process; the ingress compares the values of rows whose fingerprints repeat.
    """

    def __init__(self, profile: ReadingProfile, index: dict[str, int], width: int, options: Mapping):
        self.im, self.it = index[profile.meter], index[profile.time]
        self.cols = [(index[c], c) for c, _ in profile.columns]
        self.width = width
        self.zone = local_zone(options)
        self.to_utc = utc_instant if profile.kind == "interval" else utc_day_start
        self.utc_of: dict = {}  # raw time → UTC: a file repeats a few times endlessly
        self.dialect: dict = {}  # csv.reader's delimiter and quotechar, when not comma and '"'
        self.sep = b","

    def fingerprints(self, data: bytes, lines: list[bytes]) -> list[int]:
        """One int per line of ``data`` (UTF-8, split into ``lines``): 0 for a blank line, 1 for one
        without meter and time, else a hash of the (meter, UTC time) it claims."""
        if not lines or self.dialect.get("quotechar", '"').encode() in data:
            return [self._fingerprint(line) for line in lines]
        # the fields in bulk, no loop in Python: first where meter and time sit at the same bytes on
        # every line (HES exports usually), then where every line has the header's width
        fields = self._fixed_width(lines) or self._same_width(data, lines)
        if fields is None:
            return [self._fingerprint(line) for line in lines]
        meters, times = fields
        for raw in set(times).difference(self.utc_of):
            self.utc_of[raw] = self._utc(raw.decode())
        return list(map(hash, zip(map(bytes.strip, meters), map(self.utc_of.__getitem__, times))))

    def _fixed_width(self, lines: list[bytes]) -> tuple[list, list] | None:
        first, ends = lines[0], []
        for _ in range(max(self.im, self.it) + 1):  # where the first line has its commas
            ends.append(first.find(self.sep, ends[-1] + 1 if ends else 0))
            if ends[-1] < 0:
                return None
        try:  # the same bytes are commas on every line
            if any(bytes(map(itemgetter(end), lines)) != self.sep * len(lines) for end in ends):
                return None
        except IndexError:  # a shorter line
            return None
        starts = [0, *(end + 1 for end in ends)]
        meters = list(map(itemgetter(slice(starts[self.im], ends[self.im])), lines))
        times = list(map(itemgetter(slice(starts[self.it], ends[self.it])), lines))
        # and no other comma before them: the same fields on every line
        if len(ends) == 2:  # meter and time are the first two fields
            extra = b"".join(meters).count(self.sep) + b"".join(times).count(self.sep)
        else:
            extra = b"".join(map(itemgetter(slice(0, ends[-1])), lines)).count(self.sep) - len(lines) * (len(ends) - 1)
        if extra:
            return None
        return meters, times

    def _same_width(self, data: bytes, lines: list[bytes]) -> tuple[list, list] | None:
        if list(map(bytes.count, lines, repeat(self.sep))).count(self.width - 1) != len(lines):
            return None
        fields = data.replace(b"\n", self.sep).split(self.sep)
        return fields[self.im::self.width][:len(lines)], fields[self.it::self.width][:len(lines)]

    def _fingerprint(self, line: bytes) -> int:
        if not line.strip(b" \t\r"):
            return 0
        try:
            row = next(csv.reader((line.decode(),), strict=True, **self.dialect), [])
            return hash((row[self.im].encode().strip(), self._utc(row[self.it])))
        except (csv.Error, IndexError):
            return 1

    def _utc(self, raw: str) -> str | None:
        utc = self.utc_of.get(raw, _UNSEEN)
        if utc is _UNSEEN:
            try:
                utc = self.to_utc(raw, self.zone)
            except ValueError:
                utc = None
            self.utc_of[raw] = utc
        return utc

    def key(self, line: str) -> tuple[str, str] | None:
        """(meter, UTC time) of a line; None if csv cannot read it or either is missing or wrong."""
        try:
            row = next(csv.reader((line,), strict=True, **self.dialect), [])
            meter, utc = row[self.im].strip(), self._utc(row[self.it])
        except (csv.Error, IndexError):
            return None
        return (meter, utc) if meter and utc else None

    def values(self, line: str) -> tuple | None:
        """The numbers of a line as the decoder reads them; None if the decoder would reject the row."""
        try:
            row = next(csv.reader((line,), strict=True, **self.dialect), [])
        except csv.Error:
            return None
        if len(row) != self.width:
            return None
        values, bad = _checked_values(row, self.cols, (_INF,) * len(self.cols))
        return None if bad else values


class HesACsvDecoder:
    """``hes_a_csv``: a CSV ``SourceChunk`` from HES-A → MeterReadings or EndDeviceEvents."""

    name = "hes_a_csv"
    options_schema = HesACsvOptions

    def check_header(self, header_line: str) -> str:
        """HeaderProbe: the noun the file will decode to; ``DecodeError`` if no profile matches."""
        profile, _, _ = parse_header(header_line)
        return END_DEVICE_EVENTS if profile is EVENT_LOG else METER_READINGS

    def row_identity(self, header_line: str, options: Mapping | None = None) -> RowIdentity | None:
        """For the file-drop ingress; None for the event log, whose repeats are the same event."""
        profile, index, width = parse_header(header_line)
        return None if profile is EVENT_LOG else RowIdentity(profile, index, width, options or {})

    def __call__(self, payload: SourceChunk, context: TransformContext) -> dict:
        if not isinstance(payload, SourceChunk) or payload.format != "csv":
            raise DecodeError(f"{self.name} reads CSV SourceChunks, got {type(payload).__name__}")
        header, _, body = payload.text.partition("\n")
        if not header.strip("\ufeff \t\r"):
            raise DecodeError(f"{payload.file_name}: no CSV header line")
        try:
            profile, index, width = parse_header(header)
        except DecodeError as exc:
            raise DecodeError(f"{payload.file_name}: {exc}") from None
        rows = _Rows(body, payload.first_line, context, width)
        with gc_paused():
            if profile is EVENT_LOG:
                doc = _decode_events(index, width, rows, context)
            else:
                doc = _decode_readings(profile, index, width, rows, context)
        context.rows_in = rows.count
        return doc
