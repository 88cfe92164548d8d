"""HES-A CSV exports (block-load, daily, event log) → canonical documents.

The profile comes from the header: columns are found by name, in any order,
and extra columns are ignored.  Bad rows are rejected one by one with their
line number in the HES file; the rest of the chunk goes on.
"""
from __future__ import annotations

import csv
import io
import math
from operator import itemgetter
from typing import Callable

from bus.canonical import END_DEVICE_EVENTS, METER_READINGS
from bus.errors import DecodeError
from bus.transform import SourceChunk, TransformContext
from transformers.catalogue import ReadingProfile, is15959_events, reading_profiles
from transformers.gc_pause import gc_paused
from transformers.instants import local_zone, utc_day_start, utc_instant

EVENT_LOG = ReadingProfile("event-log", "events", "meter_serial", "event_time", ())
EVENT_LOG_COLUMNS = ("meter_serial", "event_code", "event_time", "hes_received")
_INF = math.inf
_UNSEEN = object()


def _required(profile: ReadingProfile) -> tuple[str, ...]:
    if profile is EVENT_LOG:
        return EVENT_LOG_COLUMNS
    return (profile.meter, profile.time, *(c for c, _ in profile.columns))


def parse_header(header_line: str) -> tuple[ReadingProfile, dict[str, int], int]:
    """The profile a header line belongs to, its column positions and its width.

    Raises ``DecodeError`` naming the columns missing for the closest profile.
    """
    line = header_line.lstrip("\ufeff").strip()
    names = [n.strip().lower() for n in next(csv.reader([line]), [])]
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


class _Rows:
    """Data rows of a chunk: skips blank lines, counts rows, names rejected rows by file line."""

    def __init__(self, body: str, first_line: int, context: TransformContext):
        self.reader = csv.reader(io.StringIO(body, newline=""))
        self.base = first_line - 1
        self.context = context
        self.count = 0

    def __iter__(self):
        for row in self.reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line: not a row the HES meant to send
            self.count += 1
            yield row

    @property
    def line(self) -> int:
        return self.base + self.reader.line_num

    def reject(self, reason: str) -> None:
        self.context.reject(self.line, reason)


def _checked_values(row: list[str], cols: list[tuple[int, str]]) -> tuple[list, str | None]:
    """Slow path for a row the fast path refused: values (None = empty) or the reason."""
    values: list = []
    for i, name in cols:
        s = row[i].strip()
        if not s:
            values.append(None)  # an empty value drops that value only
            continue
        try:
            v = float(s)
        except ValueError:
            return values, f"{name} {s!r} is not a number"
        if v != v or v in (_INF, -_INF):
            return values, f"{name} {s!r} is not a finite number"
        if v < 0:
            return values, f"{name} {s!r} is negative"
        values.append(v)
    return values, None


def _decode_readings(profile: ReadingProfile, index: dict[str, int], width: int,
                     rows: _Rows, context: TransformContext) -> dict:
    zone = local_zone(context.options)
    to_utc: Callable = utc_instant if profile.kind == "interval" else utc_day_start
    im, it = index[profile.meter], index[profile.time]
    cols = [(index[c], c) for c, _ in profile.columns]
    pick = itemgetter(*(i for i, _ in cols)) if len(cols) > 1 else (lambda r, i=cols[0][0]: (r[i],))
    per_meter: dict[str, list[tuple[str, tuple]]] = {}  # meter → [(utc, values)] in file order
    first_seen: dict[tuple[str, str], tuple[int, list[str]]] = {}
    utc_of: dict[str, str | None] = {}  # HES files repeat a few timestamps thousands of times
    # the hot loop reads the csv reader itself: a generator in between costs ~5 %
    reader = rows.reader
    base = rows.base
    n = 0
    for row in reader:
        n += 1
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()):
                n -= 1  # a blank line is not a row the HES meant to send
                continue
            rows.reject(f"expected {width} fields, found {len(row)}")
            continue
        meter = row[im].strip()
        if not meter:
            rows.reject(f"empty {profile.meter}")
            continue
        raw = row[it]
        utc = utc_of.get(raw, _UNSEEN)
        if utc is _UNSEEN:
            try:
                utc = utc_of[raw] = to_utc(raw, zone)
            except ValueError:
                utc = utc_of[raw] = None
        if utc is None:
            context.meters.add(meter)
            rows.reject(f"meter {meter}: {profile.time} {raw.strip()!r} is not an ISO 8601 time")
            continue
        try:
            values = tuple(map(float, pick(row)))
            # one test for all: min catches negatives, the sum turns nan or inf into not < inf
            if not (min(values) >= 0.0 and sum(values) < _INF):
                raise ValueError
        except ValueError:
            values, bad = _checked_values(row, cols)
            if bad:
                context.meters.add(meter)
                rows.reject(f"meter {meter}: {bad}")
                continue
        key = (meter, utc)
        first = first_seen.get(key)
        if first is not None:
            if first[1] != row:
                rows.reject(f"meter {meter}: second row for {utc} with other values (first at line {first[0]})")
            continue  # an exact duplicate collapses into the first row
        first_seen[key] = (base + reader.line_num, row)
        entries = per_meter.get(meter)
        if entries is None:
            per_meter[meter] = [(utc, values)]
        else:
            entries.append((utc, values))
    rows.count = n
    context.meters.update(per_meter)
    return _meter_readings(profile, per_meter, context)


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
        try:
            code = codes[int(raw_code)]
        except (ValueError, KeyError):
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


class HesACsvDecoder:
    """``hes_a_csv``: a CSV ``SourceChunk`` from HES-A → MeterReadings or EndDeviceEvents."""

    name = "hes_a_csv"

    def check_header(self, header_line: str) -> str:
        """HeaderProbe: the noun the file will decode to; ``DecodeError`` if no profile matches."""
        profile, _, _ = parse_header(header_line)
        return END_DEVICE_EVENTS if profile is EVENT_LOG else METER_READINGS

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
        rows = _Rows(body, payload.first_line, context)
        with gc_paused():
            if profile is EVENT_LOG:
                doc = _decode_events(index, width, rows, context)
            else:
                doc = _decode_readings(profile, index, width, rows, context)
        context.rows_in = rows.count
        return doc
