"""HES export files: IS 15959 block-load, daily and event profiles as CSV or CIM XML.

The generator streams one meter-day at a time, so memory does not grow with the
number of rows, and it knows exactly what a correct pipeline must store: the
summary (and ``<file>.expected.json``) counts distinct readings, duplicates and
the line numbers of the malformed rows.

Malformed rows are extra lines, each a corrupted copy of the valid line just
before it: a pipeline must reject the whole row; one that salvages the intact
fields only re-stores values it already has, so ``expected_readings`` holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

# ReadingType mRIDs of the block-load columns (IEC 61968-9 annex C).
RT_KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_KVAH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0"
RT_KVAH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0"
RT_V_AVG = "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0"
RT_I_AVG = "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0"
BLOCK_LOAD_READING_TYPES = (RT_KWH_IMP, RT_KWH_EXP, RT_KVAH_IMP, RT_KVAH_EXP, RT_V_AVG, RT_I_AVG)
# Daily (midnight) cumulative registers, used by the XML form of the daily profile.
DAILY_READING_TYPES = (
    "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
    "11.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
    "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.71.0",
    "11.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.71.0",
)
METER_READINGS_NS = "http://iec.ch/TC57/2011/MeterReadings#"
MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"

HEADERS = {
    "block-load": "meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg",
    "daily": "meter_serial,read_date,kwh_imp_cum,kwh_exp_cum,kvah_imp_cum,kvah_exp_cum",
    "events": "meter_serial,event_code,event_time,hes_received",
}
READINGS_PER_ROW = {"block-load": 6, "daily": 4, "events": 1}
FORMATS = ("csv", "xml")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
INTERVALS_PER_DAY = 96
_V_MIN_MV = 218_000
_LIST_METERS_UP_TO = 10_000


@dataclasses.dataclass
class GenerationSummary:
    """What was written, and what a correct pipeline must end up storing."""

    path: str
    profile: str
    format: str
    rows_written: int          # data rows, including duplicates and malformed rows
    distinct_valid_rows: int
    duplicate_rows: int
    missing_rows: int          # intervals (or days) the HES did not deliver
    malformed_lines: list[int]  # 1-based, the header is line 1
    meters: int
    meter_serials: list[str] | None  # listed up to 10,000 meters
    expected_readings: int     # distinct (meter, readingType, timeStamp); events: (meter, code, time)
    start_date: str
    days: int
    seed: int
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- value models

def _fixed3(milli: int) -> str:
    return f"{milli // 1000}.{milli % 1000:03d}"


# Lookup tables turn integer milli-units into text ~5x faster than float formatting.
_MILLI = [_fixed3(i) for i in range(40_000)]
_VOLTS = [_fixed3(_V_MIN_MV + i) for i in range(24_001)]


def _hour_of(t: int) -> float:
    return t * 0.25 + 0.125


def _load_shape(h: float) -> float:
    """Residential kW per unit of meter size: night low, morning and evening peaks."""
    return (0.32 + 0.55 * math.exp(-((h - 7.75) / 1.5) ** 2)
            + 0.95 * math.exp(-((h - 20.25) / 1.9) ** 2)
            + 0.12 * math.exp(-((h - 13.5) / 3.0) ** 2))


def _solar_shape(h: float) -> float:
    return max(0.0, math.sin(math.pi * (h - 6.25) / 12.5)) ** 1.3 if 6.25 < h < 18.75 else 0.0


LOAD_SHAPE = [_load_shape(_hour_of(t)) for t in range(INTERVALS_PER_DAY)]
SOLAR_SHAPE = [_solar_shape(_hour_of(t)) for t in range(INTERVALS_PER_DAY)]


@dataclasses.dataclass(slots=True)
class _Meter:
    serial: str
    size_kw: float       # average demand scale
    pf: float            # typical power factor
    solar_kw: float      # rooftop capacity, 0 without solar
    v_base_mv: int       # feeder position sets the mean voltage
    registers: list[int]  # daily profile: cumulative Wh/VAh imp, exp


@dataclasses.dataclass(slots=True)
class _Unit:
    """One meter-day of rows; a duplicate is the same tuple object repeated."""

    meter: _Meter
    day: dt.date
    rows: list[tuple]
    duplicates: int
    missing: int


def _new_meter(rng: random.Random, serial: str, solar_share: float) -> _Meter:
    solar = rng.uniform(1.0, 4.0) if rng.random() < solar_share else 0.0
    reg = [rng.randint(500_000, 20_000_000), 0, 0, 0]
    reg[2] = int(reg[0] / rng.uniform(0.9, 0.97))
    if solar:
        reg[1] = rng.randint(0, 3_000_000)
        reg[3] = int(reg[1] / 0.97)
    return _Meter(serial, rng.uniform(0.3, 1.4), rng.uniform(0.87, 0.98), solar,
                  rng.randint(224_000, 236_000), reg)


def _block_load_rows(rng: random.Random, m: _Meter, missing: float, dup: float) -> _Unit:
    rnd = rng.random
    k = m.size_kw * rng.uniform(0.85, 1.15)       # weather of the day
    cap = m.solar_kw * rng.uniform(0.5, 1.0)      # clouds of the day
    pf0 = m.pf - 0.01
    v0 = m.v_base_mv - 4_000 - _V_MIN_MV
    rows: list[tuple] = []
    n_dup = n_missing = 0
    for t in range(INTERVALS_PER_DAY):
        if rnd() < missing:
            n_missing += 1
            continue
        net = LOAD_SHAPE[t] * k * (0.8 + 0.4 * rnd())
        if cap:
            net -= SOLAR_SHAPE[t] * cap * (0.9 + 0.2 * rnd())
        pf = pf0 + 0.02 * rnd()
        if net >= 0:
            imp, exp = int(net * 250 + 0.5), 0                # kW over 15 min -> Wh
        else:
            imp, exp = 0, int(-net * 250 + 0.5)
        kvah = int(imp / pf + 0.5), int(exp / pf + 0.5)
        v = v0 + int(rnd() * 8_000)
        amps = int((kvah[0] + kvah[1]) * 4e6 / (v + _V_MIN_MV) + 0.5)
        row = (t, imp, exp, kvah[0], kvah[1], v, amps)
        rows.append(row)
        if rnd() < dup:
            rows.append(row)
            n_dup += 1
    return _Unit(m, dt.date.min, rows, n_dup, n_missing)


def _daily_rows(rng: random.Random, m: _Meter, missing: float, dup: float) -> _Unit:
    reg = m.registers
    row = tuple(reg)
    rows: list[tuple] = []
    n_dup = n_missing = 0
    if rng.random() < missing:
        n_missing = 1
    else:
        rows.append(row)
        if rng.random() < dup:
            rows.append(row)
            n_dup = 1
    # Advance the registers by one day so the next read is larger (monotonic).
    use = m.size_kw * 0.55 * 24 * rng.uniform(0.85, 1.15) * 1000
    gen = m.solar_kw * 4.2 * rng.uniform(0.5, 1.0) * 1000
    imp, exp = max(use - 0.6 * gen, 0.05 * use), max(gen - 0.4 * use, 0.0) if gen else 0.0
    pf = m.pf
    for i, inc in enumerate((imp, exp, imp / pf, exp / pf)):
        reg[i] += int(inc)
    return _Unit(m, dt.date.min, rows, n_dup, n_missing)


# (code, restoration code or None, probability per meter-day, duration range in s)
_EVENT_KINDS = (
    (101, 102, 0.20, (1, 10_800)),     # power failure / restored
    (201, 202, 0.03, (30, 1_800)),     # magnet
    (205, 206, 0.04, (900, 7_200)),    # low power factor
    (215, 216, 0.03, (60, 3_600)),     # overload
    (203, 204, 0.01, (10, 600)),       # neutral disturbance
    (251, None, 0.01, (0, 0)),         # cover open
    (151, None, 0.05, (0, 0)),         # RTC change
)
_FEEDER_SIZE = 50


def _event_rows(rng: random.Random, m: _Meter, missing: float, dup: float,
                feeder_trip: tuple[int, int, int] | None, meter_no: int) -> _Unit:
    rnd = rng.random
    found: dict[tuple[int, int], int] = {}   # (code, second of day) -> receive delay

    def add(code: int, sec: int, delay: int) -> None:
        found.setdefault((code, min(max(sec, 0), 86_399)), delay)

    if feeder_trip and meter_no // _FEEDER_SIZE == feeder_trip[0]:
        start, duration = feeder_trip[1], feeder_trip[2]
        add(101, start + rng.randint(0, 4), rng.randint(1, 15))      # last gasp burst
        add(102, start + duration + rng.randint(0, 10), rng.randint(5, 120))
    for code, restore, p, (lo, hi) in _EVENT_KINDS:
        if rnd() < p:
            sec = rng.randint(0, 86_399)
            add(code, sec, rng.randint(1, 15) if code == 101 else rng.randint(2, 300))
            if restore:
                add(restore, sec + rng.randint(lo, hi), rng.randint(5, 300))
    rows: list[tuple] = []
    n_dup = n_missing = 0
    for (code, sec), delay in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if rnd() < missing:
            n_missing += 1
            continue
        row = (code, sec, delay)
        rows.append(row)
        if rnd() < dup:
            rows.append(row)
            n_dup += 1
    return _Unit(m, dt.date.min, rows, n_dup, n_missing)


def _units(profile: str, rng: random.Random, start: dt.date, days: int, meters: int,
           first_serial: int, solar_share: float, missing: float, dup: float,
           extend: bool) -> Iterator[_Unit]:
    """Meter-days, day by day; with ``extend`` more meters follow until the caller stops."""
    next_no, batch = 0, meters
    while True:
        fleet = [_new_meter(rng, f"UPM{first_serial + next_no + i:08d}", solar_share)
                 for i in range(batch)]
        for d in range(days):
            day = start + dt.timedelta(days=d)
            trip = None
            if profile == "events" and rng.random() < 0.5:
                trip = (rng.randrange(max(1, math.ceil(batch / _FEEDER_SIZE))),
                        rng.randint(0, 80_000), rng.choice((3, 40, 600, 5_400)))
            for i, m in enumerate(fleet):
                if profile == "block-load":
                    unit = _block_load_rows(rng, m, missing, dup)
                elif profile == "daily":
                    unit = _daily_rows(rng, m, missing, dup)
                else:
                    unit = _event_rows(rng, m, missing, dup, trip, i)
                unit.day = day
                yield unit
        if not extend:
            return
        next_no += batch
        batch = max(1, batch // 10)


# ---------------------------------------------------------------- formatting

class _Clock:
    """Timestamp text per day, computed once per day rather than per row."""

    def __init__(self) -> None:
        self._day: dt.date | None = None
        self.local: list[str] = []
        self.utc: list[str] = []
        self.date = ""
        self.midnight_utc = ""

    def at(self, day: dt.date) -> "_Clock":
        if day != self._day:
            self._day = day
            base = dt.datetime.combine(day, dt.time(), IST)
            ends = [base + dt.timedelta(minutes=15 * (t + 1)) for t in range(INTERVALS_PER_DAY)]
            self.local = [e.isoformat() for e in ends]
            self.utc = [_utc(e) for e in ends]
            self.date = day.isoformat()
            self.midnight_utc = _utc(base)
        return self


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_time(day: dt.date, sec: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), IST) + dt.timedelta(seconds=sec)


def _csv_lines(profile: str, unit: _Unit, clock: _Clock) -> list[str]:
    s = unit.meter.serial
    if profile == "block-load":
        ts, M, V = clock.local, _MILLI, _VOLTS
        return [f"{s},{ts[t]},{M[a]},{M[b]},{M[c]},{M[d]},{V[v]},{M[i]}\n"
                for (t, a, b, c, d, v, i) in unit.rows]
    if profile == "daily":
        return [f"{s},{clock.date},{_fixed3(a)},{_fixed3(b)},{_fixed3(c)},{_fixed3(d)}\n"
                for (a, b, c, d) in unit.rows]
    out = []
    for code, sec, delay in unit.rows:
        at = _event_time(unit.day, sec)
        out.append(f"{s},{code},{at.isoformat()},{(at + dt.timedelta(seconds=delay)).isoformat()}\n")
    return out


def _xml_meter_reading(profile: str, unit: _Unit, clock: _Clock) -> str:
    rows = unit.rows
    if not rows:
        return ""
    parts = ["<MeterReading>"]
    if profile == "block-load":
        ts, M, V = clock.utc, _MILLI, _VOLTS
        for col, rt in enumerate(BLOCK_LOAD_READING_TYPES, start=1):
            table = V if col == 5 else M
            parts.append("<IntervalBlocks>")
            parts.extend(f"<IntervalReadings><timeStamp>{ts[r[0]]}</timeStamp>"
                         f"<value>{table[r[col]]}</value></IntervalReadings>" for r in rows)
            parts.append(f'<ReadingType ref="{rt}"/></IntervalBlocks>')
        parts.append(f"<Meter><mRID>{unit.meter.serial}</mRID></Meter>")
    else:
        parts.append(f"<Meter><mRID>{unit.meter.serial}</mRID></Meter>")
        for r in rows:
            parts.extend(f"<Readings><timeStamp>{clock.midnight_utc}</timeStamp>"
                         f'<value>{_fixed3(r[i])}</value><ReadingType ref="{rt}"/></Readings>'
                         for i, rt in enumerate(DAILY_READING_TYPES))
    parts.append("</MeterReading>\n")
    return "".join(parts)


def _corrupt(profile: str, line: str, n: int) -> str:
    """The n-th malformed row: a non-numeric value, a bad timestamp or a wrong field count."""
    fields = line.rstrip("\n").split(",")
    kind = n % 3
    if kind == 0:
        fields[2 if profile != "events" else 1] = "ERR"
    elif kind == 1:
        fields[1 if profile != "events" else 2] = "2026-11-01T25:61:00+05:30" \
            if profile != "daily" else "2026-13-41"
    else:
        fields.pop()
    return ",".join(fields) + "\n"


_FALLBACK_LINE = {
    "block-load": "UPM99999999,2026-11-01T00:15:00+05:30,0.100,0.000,0.110,0.000,230.000,1.900",
    "daily": "UPM99999999,2026-11-01,100.000,0.000,110.000,0.000",
    "events": "UPM99999999,101,2026-11-01T00:00:01+05:30,2026-11-01T00:00:05+05:30",
}


# ---------------------------------------------------------------- generate

def _plan_meters(profile: str, rows: int, days: int, missing: float, dup: float) -> int:
    per_meter_day = {"block-load": INTERVALS_PER_DAY, "daily": 1, "events": 0.45}[profile]
    expected = per_meter_day * days * (1 - missing) * (1 + dup) * 0.99
    return max(1, math.ceil(rows / expected) + 1)


def generate(out_dir: str | os.PathLike, meters: int = 100, days: int = 1,
             start_date: dt.date | str = "2026-11-01", profile: str = "block-load",
             fmt: str = "csv", seed: int = 1, solar_share: float = 0.2,
             missing_share: float = 0.01, duplicate_share: float = 0.005,
             malformed_rows: int = 3, rows: int | None = None, file_name: str | None = None,
             *, envelope: bool = False, expected: bool = False, source: str = "hes-a",
             first_serial: int | None = None) -> GenerationSummary:
    """Write one HES export file (write-then-rename) and return what it holds.

    ``rows`` asks for exactly that many data rows (duplicates and malformed rows
    included) instead of ``meters`` x ``days``: ``days`` is kept, meters are added
    as needed. XML carries no malformed rows; ``envelope`` wraps it in an
    IEC 61968-100 EventMessage. ``expected`` also writes ``<file>.expected.json``
    before the data file gets its final name.
    """
    if profile not in HEADERS:
        raise ValueError(f"profile must be one of {sorted(HEADERS)}, not {profile!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if fmt == "xml" and profile == "events":
        raise ValueError("xml is MeterReadings: use profile block-load or daily")
    if rows is not None and rows < 1 or meters < 1 or days < 1:
        raise ValueError("rows, meters and days must be positive")
    started = time.perf_counter()
    start = dt.date.fromisoformat(start_date) if isinstance(start_date, str) else start_date
    rng = random.Random(seed)
    if rows is not None:
        meters = _plan_meters(profile, rows, days, missing_share, duplicate_share)
    if first_serial is None:
        first_serial = 10_000 + (seed % 900) * 100_000
    malformed_rows = 0 if fmt == "xml" else malformed_rows
    if rows is not None:
        malformed_rows = min(malformed_rows, rows - 1)
    tag = profile.replace("-", "")
    name = file_name or f"{source}_{tag}_{start:%Y%m%d}_s{seed}.{fmt}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final, part = out / name, out / f".{name}.part"

    # Malformed rows land at line numbers chosen up front (line 1 is the header,
    # line 2 is kept valid so every bad row can copy a real one).
    limit = rows if rows is not None else math.inf
    span = rows + 1 if rows is not None else max(
        3, int(meters * days * {"block-load": 96, "daily": 1, "events": 0.4}[profile] * 0.9))
    bad_at = sorted(rng.sample(range(3, span + 1), min(malformed_rows, max(0, span - 2))))
    bad_at += [span + 1 + i for i in range(malformed_rows - len(bad_at))]
    bad_lines: list[int] = []

    written = distinct = dups = missing = 0
    line_no = 1
    last_valid = _FALLBACK_LINE[profile] + "\n"
    serials: set[str] = set()
    clock = _Clock()
    with open(part, "w", encoding="ascii", newline="", buffering=1 << 20) as f:
        if fmt == "csv":
            f.write(HEADERS[profile] + "\n")
        else:
            f.write(_xml_open(envelope, source, start, rng))
        for unit in _units(profile, rng, start, days, meters, first_serial, solar_share,
                           missing_share, duplicate_share, extend=rows is not None):
            if written >= limit:
                break
            missing += unit.missing
            if not unit.rows:
                continue
            serials.add(unit.meter.serial)
            clock.at(unit.day)
            if fmt == "xml":
                if len(unit.rows) > limit - written:
                    _truncate(unit, int(limit - written))
                f.write(_xml_meter_reading(profile, unit, clock))
                written += len(unit.rows)
                distinct += len(unit.rows) - unit.duplicates
                dups += unit.duplicates
                continue
            lines = _csv_lines(profile, unit, clock)
            room = limit - written
            if len(lines) <= room and (not bad_at or bad_at[0] > line_no + len(lines)):
                f.write("".join(lines))      # fast path: no malformed row, no truncation
                written += len(lines)
                line_no += len(lines)
                distinct += len(lines) - unit.duplicates
                dups += unit.duplicates
                last_valid = lines[-1]
                continue
            chunk: list[str] = []
            i = 0
            while i < len(lines) and written < limit:
                line_no += 1
                written += 1
                if bad_at and bad_at[0] == line_no:
                    chunk.append(_corrupt(profile, last_valid, len(bad_lines)))
                    bad_lines.append(bad_at.pop(0))
                    continue
                chunk.append(lines[i])
                last_valid = lines[i]
                if i and unit.rows[i] is unit.rows[i - 1]:
                    dups += 1
                else:
                    distinct += 1
                i += 1
            f.write("".join(chunk))
        for _ in range(len(bad_at)):         # past the last data row: append them
            line_no += 1
            written += 1
            f.write(_corrupt(profile, last_valid, len(bad_lines)))
            bad_lines.append(line_no)
        if fmt == "xml":
            f.write(_xml_close(envelope))
    summary = GenerationSummary(
        path=str(final), profile=profile, format=fmt, rows_written=written,
        distinct_valid_rows=distinct, duplicate_rows=dups, missing_rows=missing,
        malformed_lines=bad_lines, meters=len(serials),
        meter_serials=sorted(serials) if len(serials) <= _LIST_METERS_UP_TO else None,
        expected_readings=distinct * READINGS_PER_ROW[profile],
        start_date=start.isoformat(), days=days, seed=seed,
        elapsed_s=round(time.perf_counter() - started, 3))
    if expected:
        _write_then_rename(Path(f"{final}.expected.json"),
                           json.dumps(summary.to_dict(), indent=2) + "\n")
    os.replace(part, final)
    return summary


def _truncate(unit: _Unit, keep: int) -> None:
    unit.rows = unit.rows[:keep]
    unit.duplicates = sum(1 for i in range(1, keep) if unit.rows[i] is unit.rows[i - 1])


def _xml_open(envelope: bool, source: str, start: dt.date, rng: random.Random) -> str:
    head = '<?xml version="1.0" encoding="UTF-8"?>\n'
    if not envelope:
        return head + f'<MeterReadings xmlns="{METER_READINGS_NS}">\n'
    stamp = dt.datetime.combine(start, dt.time(), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    message_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    return (head + f'<EventMessage xmlns="{MESSAGE_NS}">\n<Header><Verb>created</Verb>'
            f"<Noun>MeterReadings</Noun><Timestamp>{stamp}</Timestamp><Source>{source}</Source>"
            f"<MessageID>{message_id}</MessageID></Header>\n<Payload>\n"
            f'<MeterReadings xmlns="{METER_READINGS_NS}">\n')


def _xml_close(envelope: bool) -> str:
    return "</MeterReadings>\n" + ("</Payload>\n</EventMessage>\n" if envelope else "")


def _write_then_rename(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _shared_first_serial(meters: int, seed: int) -> int | None:
    """In a dev stack (simulators.network ``shared_recipe``), the first of ``meters`` consecutive
    consumer meters of the shared network, where ``seed`` says; None outside one.  So that the
    files' meters are meters the GIS, the meter assignment and the HES stand-ins know."""
    from simulators.network import shared_model        # only when asked: generating takes a moment
    model = shared_model()
    if model is None:
        return None
    if meters > len(model):
        raise ValueError(f"the dev stack's shared network has {len(model):,} consumer meters, not {meters:,}: "
                         "give --first-serial, or a bigger GRIDBUS_DEV_NETWORK_CONSUMERS")
    return model.first_meter + seed % (len(model) - meters + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.hes_files",
                                description="Write an HES export file and print its summary as JSON.")
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--meters", type=int, default=100)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--start-date", default="2026-11-01", help="first day (local, IST)")
    p.add_argument("--profile", choices=sorted(HEADERS), default="block-load")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    p.add_argument("--rows", "--reads", dest="rows", type=int,
                   help="exactly this many data rows instead of meters x days")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--solar-share", type=float, default=0.2)
    p.add_argument("--missing-share", type=float, default=0.01)
    p.add_argument("--duplicate-share", type=float, default=0.005)
    p.add_argument("--malformed-rows", type=int, default=3)
    p.add_argument("--file-name")
    p.add_argument("--source", default="hes-a", help="HES name, used in the file name")
    p.add_argument("--first-serial", type=int, help="number of the first meter serial (default: with "
                   "GRIDBUS_DEV_NETWORK_* set, a run of the dev stack's shared network's consumer meters "
                   "chosen by --seed; else one of 900 ranges chosen by --seed)")
    p.add_argument("--xml-envelope", action="store_true",
                   help="wrap the XML in an IEC 61968-100 EventMessage")
    p.add_argument("--expected", action="store_true", help="also write <file>.expected.json")
    a = p.parse_args(argv)
    try:
        if a.first_serial is None and a.rows is None:   # (--rows decides its meters as it goes)
            a.first_serial = _shared_first_serial(a.meters, a.seed)
        summary = generate(a.out, a.meters, a.days, a.start_date, a.profile, a.fmt, a.seed,
                           a.solar_share, a.missing_share, a.duplicate_share, a.malformed_rows,
                           a.rows, a.file_name, envelope=a.xml_envelope, expected=a.expected,
                           source=a.source, first_serial=a.first_serial)
    except ValueError as exc:
        p.error(str(exc))
    d = summary.to_dict()
    d["rows_per_s"] = round(summary.rows_written / summary.elapsed_s) if summary.elapsed_s else None
    json.dump(d, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
