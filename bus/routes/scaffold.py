"""``gridbus routes new``: a starting route file, mapping and route test from a sample CSV file.

A connector team gets a sample export from a new HES vendor.  This module reads at most its
first MiB (2,000 lines) as text and guesses what ``csv_readings`` needs: the encoding (a byte
order mark, else valid UTF-8, else Windows-1252 or Latin-1), the lines before the header, the
delimiter, quote and decimal mark, the meter and time columns (ISO 8601 or one of a list of
strftime patterns, a date and a time column, whether times carry an offset), the interval, a
wide or long (OBIS codes) layout, the tokens meaning "missing", and ReadingTypes from column
names and units.  Every guess keeps its evidence; what it could not guess gets the closest
valid value, a ``TODO`` comment in the file and a line in the summary, so the written files
load as they are.

The route test it writes holds the first data rows of the sample and the canonical document
the guessed mapping makes of them, computed by ``bus.routes.testing`` (the runner of
``gridbus routes test``) through the real decoder, and run once before anything is written.

``bus`` never imports ``connectors`` or ``transformers``: the guesser works on text, and the
decoder is reached by name through ``bus.registry`` (inside ``bus.routes.testing``).
"""
from __future__ import annotations

import codecs
import csv
import json
import os
import re
import stat
import tempfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bus import naming
from bus.errors import ConfigError, GridbusError

MAX_SAMPLE_BYTES = 1 << 20
MAX_SAMPLE_LINES = 2000
TEST_ROWS = 6                       # data rows of the sample copied into the route test
DELIMITERS = (",", ";", "\t", "|")
PLACEHOLDER_ZONE = "Asia/Kolkata"   # the zone of times without an offset until the team confirms one
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "na", "-", "--", "null", "NULL", "None", "none", "#N/A", "nan", "NaN")
UNDEFINED_1252 = frozenset(b"\x81\x8d\x8f\x90\x9d")

# the ReadingTypes the shipped routes use (routes/uc1-meter-data-files.yaml) and DOMAIN.md lists
KNOWN_READING_TYPES = {
    "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "15-min delta kWh import",
    "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0": "15-min delta kWh export",
    "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0": "15-min delta kVAh import",
    "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0": "15-min delta kVAh export",
    "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0": "15-min average voltage, V",
    "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0": "15-min average current, A",
    "0.0.2.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "15-min register kWh import",
    "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "daily register kWh import",
    "11.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0": "daily register kWh export",
    "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.71.0": "daily register kVAh import",
    "11.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.71.0": "daily register kVAh export",
}
# IEC 61968-9 measuringPeriod (TimeAttributeKind) of an interval length in seconds
PERIOD_CODES = {60: 3, 120: 10, 180: 14, 300: 6, 600: 1, 900: 2, 1200: 31, 1800: 5, 3600: 7, 86400: 4}

METER_NAMES = ("meter", "serial", "device", "zähler", "zaehler", "msn", "mrid", "meter_no", "meterno", "zählernummer",
               "compteur", "medidor", "sn")
CODE_NAMES = ("obis", "code", "register", "channel", "quantity", "measurand", "parameter", "kennzahl", "register_id")
VALUE_NAMES = ("value", "reading", "wert", "val", "messwert", "reading_value")
EVENT_NAMES = ("event", "event_code", "eventcode", "event_id", "ereignis")
RECEIVED_NAMES = ("received", "hes_received", "recv", "received_at", "receipt")
OBIS = re.compile(r"(?:(\d{1,3})-(\d{1,3}):)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\*(\d{1,3}))?")
ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?")
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
DATETIME_PATTERNS = ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                     "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S",
                     "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y.%m.%d %H:%M", "%d/%m/%y %H:%M", "%m/%d/%y %H:%M",
                     "%d-%b-%Y %H:%M", "%d-%b-%Y %H:%M:%S", "%d %b %Y %H:%M", "%Y%m%d%H%M", "%Y%m%d%H%M%S",
                     "%Y%m%d %H%M")
DATE_PATTERNS = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d/%m/%y", "%d-%b-%Y", "%d %b %Y",
                 "%Y%m%d")
TIME_PATTERNS = ("%H:%M", "%H:%M:%S", "%H%M")
TIME_HINTS = ("time", "date", "ts", "timestamp", "zeit", "datum", "uhrzeit", "end", "start", "interval", "period",
              "day", "when", "dt", "fecha", "hora")


class SampleError(ConfigError):
    """The sample cannot be scaffolded from (empty, binary, one column...): exit 1 with the reason."""


# --- what the guesser found -------------------------------------------------------------------

@dataclass
class Guess:
    item: str
    value: Any
    evidence: str

    def as_dict(self) -> dict:
        return {"item": self.item, "value": self.value, "evidence": self.evidence}


@dataclass
class Unsure:
    item: str
    written: Any          # what the file holds meanwhile (the closest guess), or None
    edit: str             # what the team edits

    def as_dict(self) -> dict:
        return {"item": self.item, "written": self.written, "edit": self.edit}


@dataclass
class Quantity:
    column: str           # wide: the header's name; long: the vendor's code
    reading_type: str | None
    scale: float = 1.0
    signed: bool = False
    what: str = ""
    sure: bool = True
    note: str = ""        # why it is not sure


@dataclass
class Scaffold:
    """Everything guessed from one sample, and the files it becomes."""

    system: str
    sample: Path
    encoding: str = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    decimal: str = "."
    skip_lines: int = 0
    time_zone: str | None = None
    missing: list[str] = field(default_factory=lambda: [""])
    kind: str = "interval"
    layout: str = "wide"
    meter: str = ""
    time: str = ""
    date: str | None = None
    time_format: str = "iso"
    time_marks: str = "end"
    interval_s: int | None = None
    code: str | None = None
    value: str | None = None
    received: str | None = None
    quantities: list[Quantity] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)       # numeric columns with no known quantity
    guessed: list[Guess] = field(default_factory=list)
    unsure: list[Unsure] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)  # mapping key → its YAML comment
    lines: list[str] = field(default_factory=list)          # the sample's text lines read
    bom: bytes = b""
    files: dict[str, str] = field(default_factory=dict)     # role → path written
    test: dict = field(default_factory=dict)

    @property
    def route_id(self) -> str:
        return f"{self.system}-csv-to-mdms-1"

    @property
    def profile_name(self) -> str:
        return {"interval": "interval-data", "register": "registers", "events": "event-log"}[self.kind]

    def guess(self, item: str, value: Any, evidence: str, comment: str | None = None) -> None:
        self.guessed.append(Guess(item, value, evidence))
        if comment is not False:
            self.comments[item] = f"guessed: {comment or evidence}"

    def todo(self, item: str, written: Any, edit: str) -> None:
        self.unsure.append(Unsure(item, written, edit))
        self.comments[item] = f"TODO {edit}"

    def summary(self) -> dict:
        out = Path(self.files.get("route", "routes/x")).parent
        return {
            "system": self.system, "sample": str(self.sample), "route": self.route_id, "files": self.files,
            "guessed": [g.as_dict() for g in self.guessed],
            "could_not_guess": [u.as_dict() for u in self.unsure],
            "test": self.test,
            "next_steps": [
                f"edit {self.files.get('route', '')}: every line marked TODO, then each 'guessed:' line",
                f"gridbus routes test {self.files.get('test', '')}   (re-check the expected document after edits)",
                f"gridbus routes validate {out}",
                f"gridbus routes apply {out}   (declares the route's queues on the broker)",
            ],
        }


# --- reading the sample -----------------------------------------------------------------------

def read_sample(path: Path) -> tuple[bytes, bool]:
    """The first MAX_SAMPLE_BYTES of a regular file, and whether there is more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SampleError(f"cannot read the sample: {exc.strerror or exc}", str(path)) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SampleError("the sample is not a regular file", str(path))
        data = f.read(MAX_SAMPLE_BYTES + 1)
    return data[:MAX_SAMPLE_BYTES], len(data) > MAX_SAMPLE_BYTES


def decode_sample(s: Scaffold, raw: bytes, more: bool) -> str:
    """The sample as text, its encoding guessed; SampleError for an empty or binary file."""
    name = str(s.sample)
    if not raw.strip(b" \t\r\n\x00"):
        raise SampleError("the sample is empty (no text to guess from)", name)
    if raw.startswith(codecs.BOM_UTF8):
        s.bom, encoding, evidence = codecs.BOM_UTF8, "utf-8-sig", "a UTF-8 byte order mark"
        body = raw[3:]
        codec = "utf-8"
    elif raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        s.bom, encoding, evidence = raw[:2], "utf-16", "a UTF-16 byte order mark"
        body, codec = raw[2:], ("utf-16-le" if raw[:2] == codecs.BOM_UTF16_LE else "utf-16-be")
    else:
        if b"\x00" in raw:
            zeros = raw[1::2].count(0) if raw[1::2].count(0) > raw[0::2].count(0) else raw[0::2].count(0)
            if zeros > len(raw) // 4:
                raise SampleError("the sample looks like UTF-16 without a byte order mark; csv_readings reads "
                                  "UTF-16 only with one: ask the vendor for a BOM, or convert the file", name)
            raise SampleError("the sample is binary (it holds NUL bytes), not a CSV text file", name)
        body = raw
        try:
            codecs.getincrementaldecoder("utf-8")().decode(raw, final=not more)
            codec = encoding = "utf-8"
            evidence = ("valid UTF-8 with non-ASCII characters" if not raw.isascii()
                        else "ASCII only (valid UTF-8; any single-byte encoding would read it too)")
        except UnicodeDecodeError as exc:
            undefined = sorted({b for b in raw if b in UNDEFINED_1252})
            codec = encoding = "latin-1" if undefined else "windows-1252"
            evidence = (f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        + (f"bytes Windows-1252 leaves undefined ({', '.join(f'0x{b:02x}' for b in undefined)})"
                           if undefined else "no byte outside Windows-1252"))
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(body, final=not more)
    controls = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\r\n\f") or 0x7F <= ord(ch) <= 0x9F
                   or ch == "\ufffd")
    if controls > max(4, len(text) // 100):
        raise SampleError(f"the sample is binary ({controls} control characters in its first "
                          f"{len(text):,} characters), not a CSV text file", name)
    s.encoding = encoding
    s.guess("encoding", encoding, evidence)
    return text


def sample_lines(s: Scaffold, text: str, more: bool) -> list[str]:
    lines = text.split("\n")
    if more:
        if len(lines) == 1:
            raise SampleError(f"no line break in the first {MAX_SAMPLE_BYTES:,} bytes: not a line-by-line CSV "
                              "file (or its first line is longer than a sample is read)", str(s.sample))
        lines = lines[:-1]  # cut in the middle
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines[:MAX_SAMPLE_LINES]]


def _split(line: str, delimiter: str, quote: str = '"') -> list[str] | None:
    try:
        return next(csv.reader([line], delimiter=delimiter, quotechar=quote, strict=False), [])
    except csv.Error:
        return None


def _is_number(value: str, decimal: str = ".") -> bool:
    v = value.strip()
    if decimal == ",":
        v = v.replace(",", ".")
    return bool(NUMBER.fullmatch(v))


def _looks_like_time(value: str) -> bool:
    v = value.strip()
    return bool(re.search(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{1,2}:\d{2}", v))


def _header_like(fields: list[str]) -> bool:
    names = [f.strip() for f in fields]
    return (all(names) and len({n.lower() for n in names}) == len(names)
            and not any(_is_number(n) or _is_number(n, ",") or _looks_like_time(n) for n in names))


def find_dialect(s: Scaffold, lines: list[str]) -> tuple[list[str], list[list[str]], int]:
    """The header's names, the data rows of the header's width, and how many other rows there are."""
    name = str(s.sample)
    best = None
    for d in DELIMITERS:
        counts = [(len(r) if r is not None else -1) for r in (_split(line, d) if line.strip() else None
                                                               for line in lines)]
        widths = Counter(c for c in counts if c > 1)
        if not widths:
            continue
        for width, _ in widths.most_common(3):
            header = next((i for i, line in enumerate(lines) if counts[i] == width
                           and _header_like(_split(line, d) or [])), None)
            if header is None:
                continue
            after = counts[header + 1:]
            body = [c for c, line in zip(after, lines[header + 1:]) if line.strip()]
            if not body:
                continue
            fit = sum(1 for c in body if c == width) / len(body)
            score = (round(fit, 1), -header, width)
            if best is None or score > best[0]:
                best = (score, d, width, header, fit)
    if best is None:
        counts = {d: max((len(_split(line, d) or []) for line in lines[:50]), default=0) for d in DELIMITERS}
        if all(c <= 1 for c in counts.values()):
            raise SampleError("the sample has one column: no , ; | or tab separates fields on any line; "
                              "csv_readings needs at least a meter, a time and a value column", name)
        if len([line for line in lines if line.strip()]) < 2:
            raise SampleError("the sample has a header but no data rows to guess from", name)
        raise SampleError("no header line found: no line of names (not numbers or times) has the field count of "
                          "the lines after it; is there a header, and is the file one table?", name)
    _, d, width, header, fit = best
    if fit < 0.6:
        raise SampleError(f"inconsistent field counts: only {fit:.0%} of the lines after the header (line "
                          f"{header + 1}, {width} fields, delimiter {d!r}) have its {width} fields", name)
    s.delimiter, s.skip_lines = d, header
    shown = {"\t": "tab"}.get(d, d)
    s.guess("delimiter", d, f"{shown!r} splits the header (line {header + 1}) and {fit:.0%} of the lines after "
                            f"it into {width} fields")
    if header:
        s.guess("skip_lines", header, f"line{'s' if header > 1 else ''} 1-{header} before the header "
                                      f"{'are' if header > 1 else 'is'} not the table (a banner): "
                                      f"{lines[0][:40]!r}")
    else:
        s.guess("skip_lines", 0, "the header is line 1", comment=False)
    single = sum(1 for line in lines[header:] if re.search(rf"(^|{re.escape(d)})'[^']*{re.escape(d)}[^']*'", line))
    if single:
        s.quote = "'"
        s.guess("quote", "'", f"{single} line(s) hold a field in single quotes around the delimiter")
    names = [n.strip() for n in _split(lines[header], d, s.quote)]
    names[0] = names[0].lstrip("\ufeff")
    rows, other = [], 0
    for line in lines[header + 1:]:
        if not line.strip():
            continue
        row = _split(line, d, s.quote)
        if row is not None and len(row) == width:
            rows.append([v.strip() for v in row])
        else:
            other += 1
    if not rows:
        raise SampleError("the sample has a header but no data rows of its width to guess from", name)
    return names, rows, other


# --- columns ----------------------------------------------------------------------------------

@dataclass
class Column:
    index: int
    name: str
    values: list[str]
    numeric: float = 0.0          # share of present values that are numbers
    negative: bool = False
    tokens: Counter = field(default_factory=Counter)   # non-numbers among a numeric column's values
    time: tuple | None = None      # (kind: datetime|date|time, format, share, offsets, ambiguous)

    @property
    def key(self) -> str:
        return self.name.lower()


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-zäöüß]+", "_", name.lower()).strip("_")


def _tokens(name: str) -> list[str]:
    return [t for t in _norm(name).split("_") if t]


def _named(name: str, hints: tuple[str, ...]) -> bool:
    n, tokens = _norm(name), _tokens(name)
    return n in hints or any(t in hints for t in tokens) or any(h in n for h in hints if len(h) > 4)


def _time_of(values: list[str], name: str) -> tuple | None:
    """How a column's values read as times: (kind, format, share parsed, offsets, ambiguous) or None."""
    present = [v for v in values if v and v not in MISSING_TOKENS][:300]
    if not present:
        return None
    iso = [v for v in present if ISO.fullmatch(v)]
    if len(iso) >= 0.8 * len(present):
        offsets, parsed = set(), 0
        for v in iso:
            try:
                t = datetime.fromisoformat(v)
            except ValueError:
                continue
            parsed += 1
            if t.utcoffset() is not None:
                offsets.add(v[19:] if len(v) > 19 else v[16:])
        if parsed >= 0.8 * len(present):
            kind = "date" if all(len(v) == 10 for v in iso) else "datetime"
            return kind, "iso", parsed / len(present), offsets, False
    compact_ok = _named(name, TIME_HINTS)
    found = []
    for kind, patterns in (("datetime", DATETIME_PATTERNS), ("date", DATE_PATTERNS), ("time", TIME_PATTERNS)):
        for fmt in patterns:
            if not compact_ok and not re.search(r"[^%A-Za-z]", fmt.replace("%", "")):
                continue  # digits only (20261101): a number, unless the column is named like a time
            ok = 0
            for v in present:
                try:
                    datetime.strptime(v, fmt)
                    ok += 1
                except ValueError:
                    pass
            if ok >= 0.8 * len(present):
                found.append((ok, kind, fmt))
    if not found:
        return None
    best = max(found, key=lambda f: f[0])
    tied = [f for f in found if f[0] == best[0] and f[1] == best[1]]
    ok, kind, fmt = tied[0]
    ambiguous = len(tied) > 1 and {"%d", "%m"} <= set(re.findall(r"%\w", fmt))
    return kind, fmt, ok / len(present), set(), ambiguous


def analyse(s: Scaffold, names: list[str], rows: list[list[str]]) -> list[Column]:
    """Each named column with its values; the decimal mark and missing tokens guessed on the way."""
    cells = [v for row in rows for v in row]
    comma = [v for v in cells if re.fullmatch(r"-?\d+,\d+", v)]
    point = [v for v in cells if re.fullmatch(r"-?\d+\.\d+", v)]
    if s.delimiter != "," and comma and len(comma) > len(point):
        s.decimal = ","
        s.guess("decimal", ",", f"{len(comma)} value(s) like {comma[0]!r} and {len(point)} with a decimal point")
    elif point:
        s.guess("decimal", ".", f"values like {point[0]!r}", comment=False)
    columns, seen = [], set()
    for i, name in enumerate(names):
        if not name or name.lower() in seen:
            continue  # an unnamed or repeated column: csv_readings reads the first of a name
        seen.add(name.lower())
        c = Column(i, name, [row[i] for row in rows])
        present = [v for v in c.values if v not in MISSING_TOKENS]
        numbers = [v for v in present if _is_number(v, s.decimal)]
        c.numeric = len(numbers) / len(present) if present else 0.0
        c.negative = any(v.startswith("-") for v in numbers)
        if c.numeric >= 0.6:
            c.tokens = Counter(v for v in c.values if not _is_number(v, s.decimal))
        if c.numeric < 0.6 or _named(name, TIME_HINTS):
            c.time = _time_of(c.values, name)
        columns.append(c)
    tokens = Counter()
    for c in columns:
        if c.time is None and c.numeric >= 0.6:
            tokens.update(c.tokens)
    missing = [t for t in MISSING_TOKENS if t and tokens.get(t)]
    other = [t for t in tokens if t and t not in MISSING_TOKENS]
    if missing:
        s.missing = [""] + missing
        s.guess("missing", s.missing, "value columns hold " + ", ".join(f"{t!r} ({tokens[t]}x)" for t in missing)
                + " where numbers are expected")
    elif tokens.get(""):
        s.guess("missing", [""], f"{tokens['']} empty value(s)", comment=False)
    if other:
        s.todo("unreadable values", ", ".join(repr(t) for t in other[:5]),
               f"value columns also hold {', '.join(repr(t) for t in other[:5])}: rows with them are rejected; "
               "add them to `missing` if they mean 'no value'")
    return columns


def choose_columns(s: Scaffold, columns: list[Column], rows: list[list[str]]) -> list[Column]:
    """Meter, time (and date), code and value, kind and layout; the value columns left."""
    times = [c for c in columns if c.time]
    named_meter = [c for c in columns if _named(c.name, METER_NAMES) and not c.time]
    ident = [c for c in columns if not c.time and c.numeric < 0.6
             and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-/.:]*", v) and re.search(r"\d", v)
                     for v in c.values if v) and not all(OBIS.fullmatch(v) for v in c.values if v)]
    if named_meter:
        meter = named_meter[0]
        s.meter = meter.name
        s.guess("meter", meter.name, f"its name (values like {meter.values[0]!r})")
    elif ident:
        meter = ident[0]
        s.meter = meter.name
        s.guess("meter", meter.name, f"identifier-like values ({meter.values[0]!r}...)")
    else:
        meter = next((c for c in columns if not c.time), columns[0])
        s.meter = meter.name
        s.todo("meter", meter.name, f"meter: no column is named like a meter or holds serial numbers; "
                                    f"{meter.name!r} is a stand-in: name the column of the meter's serial number")
    rest = [c for c in columns if c is not meter]

    def by_hint(cands, hints):
        return next((c for c in cands if _named(c.name, hints)), None)

    datetimes = [c for c in times if c.time[0] == "datetime" and c is not meter]
    dates = [c for c in times if c.time[0] == "date" and c is not meter]
    clocks = [c for c in times if c.time[0] == "time" and c is not meter]
    event = by_hint([c for c in rest if not c.time], EVENT_NAMES)
    used: list[Column] = [meter]
    time_col = None
    if datetimes:
        received = by_hint(datetimes, RECEIVED_NAMES) if event else None
        pool = [c for c in datetimes if c is not received]
        time_col = by_hint(pool, ("end", "to", "bis", "until")) or pool[0]
        s.time, s.time_format = time_col.name, time_col.time[1]
        used.append(time_col)
        if received and received is not time_col:
            s.received = received.name
            used.append(received)
            s.guess("received", received.name, "its name, and its values are times")
        if time_col.time[1] != "iso":
            rest_of_times = [c for c in datetimes if c not in used]
            used += rest_of_times if not event else []
    elif dates and clocks:
        date_col, time_col = dates[0], clocks[0]
        date_fmt = "%Y-%m-%d" if date_col.time[1] == "iso" else date_col.time[1]
        s.date, s.time, s.time_format = date_col.name, time_col.name, f"{date_fmt} {time_col.time[1]}"
        used += [date_col, time_col]
        s.guess("date", date_col.name, f"dates like {date_col.values[0]!r} in one column and times of day like "
                                       f"{time_col.values[0]!r} in {time_col.name!r}")
    elif dates:
        time_col = dates[0]
        s.time, s.time_format = time_col.name, time_col.time[1]
        used.append(time_col)
    else:
        stand_in = next((c for c in rest if c.numeric < 0.6), rest[0] if rest else meter)
        s.time = stand_in.name
        s.todo("time", stand_in.name, "time: no column reads as times (ISO 8601 or a common pattern such as "
                                      "%d/%m/%Y %H:%M); name the time column and set time_format to its strftime "
                                      "pattern")
        used.append(stand_in)
    if time_col is not None:
        kind, fmt, share, offsets, ambiguous = (time_col.time if not s.date else
                                                (None, s.time_format, 1.0, set(), next(c for c in dates).time[4]))
        example = (f"{next(c for c in dates).values[0]} {time_col.values[0]}" if s.date else time_col.values[0])
        s.guess("time", s.time, f"{share:.0%} of its values read as times ({example!r})")
        if fmt == "iso":
            s.guess("time_format", "iso", f"ISO 8601 values like {example!r}")
        elif ambiguous:
            s.todo("time_format", s.time_format, f"time_format: the sample's dates read day-first and month-first "
                                                 f"(no day above 12, e.g. {example!r}); {s.time_format!r} "
                                                 "(day first) is a guess: confirm with the vendor")
        else:
            s.guess("time_format", s.time_format, f"every value like {example!r} matches it")
        if offsets:
            s.guess("time_zone", None, f"the times carry their UTC offset ({', '.join(sorted(offsets))})",
                    comment=False)
        else:
            s.time_zone = PLACEHOLDER_ZONE
            s.todo("time_zone", PLACEHOLDER_ZONE,
                   f"time_zone: the sample's times have no UTC offset ({example!r}); {PLACEHOLDER_ZONE} is a "
                   "placeholder: write the IANA zone the HES writes them in")
    # the kind and layout
    others = [c for c in rest if c not in used]
    code = by_hint([c for c in others if not c.time and c.numeric < 1], CODE_NAMES + EVENT_NAMES) or next(
        (c for c in others if c.values and sum(bool(OBIS.fullmatch(v)) for v in c.values) >= 0.8 * len(c.values)),
        None)
    if event is not None and event in others:
        s.kind, s.code = "events", event.name
        s.guess("kind", "events", f"column {event.name!r} holds event codes (values like {event.values[0]!r})")
        s.todo("codes", "is15959", "codes: the event codes are read as IS 15959 numbers; if the vendor has its "
                                   "own codes, map each to an IS 15959 code or a CIM EndDeviceEventType")
        return []
    if code is not None:
        numeric = [c for c in others if c is not code and c.numeric >= 0.6 and not c.time]
        value = by_hint(numeric, VALUE_NAMES) or (numeric[0] if len(numeric) == 1 else None)
        distinct = list(OrderedDict.fromkeys(v for v in code.values if v))
        if value is not None and len(distinct) <= max(30, len(rows) // 2):
            s.layout, s.code, s.value = "long", code.name, value.name
            s.guess("layout", "long", f"{code.name!r} repeats {len(distinct)} code(s) "
                                      f"({', '.join(distinct[:4])}) and {value.name!r} holds the values")
            _kind(s, time_col, meter, rows, columns)
            return [Column(-1, v, [r[value.index] for r in rows if r[code.index] == v]) for v in distinct]
    values = [c for c in others if c.numeric >= 0.6 and not c.time]
    if not values:
        raise SampleError("no column of numbers besides the meter and time: nothing to map to readings",
                          str(s.sample))
    s.guess("layout", "wide", f"{len(values)} column(s) of numbers: {', '.join(c.name for c in values[:8])}",
            comment=False)
    _kind(s, time_col, meter, rows, columns)
    return values


def _kind(s: Scaffold, time_col: Column | None, meter: Column, rows: list[list[str]], columns: list[Column]) -> None:
    """interval or register, the interval length and what the time marks, from the times of each meter."""
    if time_col is None:
        s.kind, s.interval_s = "interval", 900
        s.todo("interval_s", 900, "interval_s: no times to measure the interval from; 900 (15 min) is assumed")
        return
    date_col = next((c for c in columns if c.name == s.date), None) if s.date else None
    per_meter: dict[str, set[datetime]] = {}
    for row in rows:
        raw = f"{row[date_col.index]} {row[time_col.index]}" if date_col else row[time_col.index]
        try:
            t = datetime.fromisoformat(raw) if s.time_format == "iso" else datetime.strptime(raw, s.time_format)
        except ValueError:
            continue
        per_meter.setdefault(row[meter.index], set()).add(t.replace(tzinfo=None) if t.tzinfo is None else t)
    gaps = Counter()
    firsts = []
    for times in per_meter.values():
        ordered = sorted(times)
        firsts.append(ordered[0])
        gaps.update(int((b - a).total_seconds()) for a, b in zip(ordered, ordered[1:]) if b > a)
    date_only = time_col.time and time_col.time[0] == "date" and not s.date
    step = gaps.most_common(1)[0][0] if gaps else None
    if date_only or (step and step >= 86400):
        s.kind = "register"
        why = "the times are bare dates" if date_only else f"one row per meter every {step // 3600} h"
        s.guess("kind", "register", f"{why}: daily register snapshots")
        return
    s.kind = "interval"
    if step is None:
        s.interval_s = 900
        s.todo("interval_s", 900, "interval_s: no meter has two times in the sample; 900 (15 min) is assumed")
    else:
        s.interval_s = step
        s.guess("kind", "interval", f"times {step // 60} min apart within a day", comment=False)
        s.guess("interval_s", step, f"{gaps[step]} of {sum(gaps.values())} gaps between a meter's consecutive "
                                    f"times are {step} s")
    name = _norm(s.time)
    if re.search(r"(^|_)(start|from|begin|von|beginn)", name):
        s.time_marks = "start"
        s.guess("time_marks", "start", f"the column is named {s.time!r}")
    elif re.search(r"(^|_)(end|to|bis|until|ende)", name):
        s.guess("time_marks", "end", f"the column is named {s.time!r}")
    elif firsts and all(t.hour == 0 and t.minute == 0 for t in firsts):
        s.time_marks = "start"
        s.todo("time_marks", "start", "time_marks: each meter's first time is 00:00, so the times likely mark "
                                      "the interval's start: confirm (end would shift every reading)")
    else:
        s.todo("time_marks", "end", "time_marks: the column's name does not say; 'end' (the canonical mark) is "
                                    "assumed: confirm whether a time marks the end or the start of its interval")


# --- quantities -------------------------------------------------------------------------------

@dataclass
class Measure:
    kind: str             # energy | voltage | current | power | pf
    unit: int
    multiplier: int = 0
    scale: float = 1.0
    flow: int | None = None   # 1 import, 19 export, 4 net; None: not said
    bulk: bool = False
    phase: int = 0
    what: str = ""


def _measure_from_name(name: str) -> Measure | None:
    n, t = _norm(name), _tokens(name)
    squashed = n.replace("_", "")
    m = None
    for unit_text, kind, unit, mult, scale in (("kvarh", "energy", 73, 3, 1.0), ("varh", "energy", 73, 3, 0.001),
                                               ("kvah", "energy", 71, 3, 1.0), ("mwh", "energy", 72, 3, 1000.0),
                                               ("kwh", "energy", 72, 3, 1.0), ("vah", "energy", 71, 3, 0.001)):
        if unit_text in squashed:
            m = Measure(kind, unit, mult, scale, what=f"energy in {unit_text}")
            break
    if m is None and (re.search(r"(^|_)wh(_|$)", n) or squashed.startswith("wh") or squashed.endswith("wh")):
        m = Measure("energy", 72, 3, 0.001, what="energy in Wh")
    if m is None and ({"kw", "kva", "kvar", "demand", "md"} & set(t)):
        m = Measure("power", 38, 3, what="power or demand")
    if m is None and ({"pf", "cosphi"} & set(t) or "power_factor" in n or "powerfactor" in squashed):
        m = Measure("pf", 65, what="power factor")
    volts = {"v", "volt", "volts", "voltage", "u", "vavg", "vr", "vy", "vb", "v1", "v2", "v3", "vl1", "vl2", "vl3",
             "spannung"}
    amps = {"i", "a", "amp", "amps", "ampere", "current", "iavg", "ir", "iy", "ib", "i1", "i2", "i3", "il1", "il2",
            "il3", "strom"}
    if m is None and (volts & set(t) or n.startswith("voltage")):
        m = Measure("voltage", 29, what="voltage, V")
    if m is None and (amps & set(t) or n.startswith("current")):
        m = Measure("current", 5, what="current, A")
    if m is None:
        return None
    if m.kind in ("voltage", "current"):
        phase = re.search(r"(?:^|_)(?:[vi]|volt\w*|current|l)_?(r|y|b|1|2|3|l1|l2|l3)(?:_|$)", n)
        if phase:
            m.phase = {"r": 129, "1": 129, "l1": 129, "y": 65, "2": 65, "l2": 65, "b": 33, "3": 33, "l3": 33}[
                phase.group(1)]
    tokens = set(t) | {w for w in ("import", "export", "delivered", "received", "forward", "reverse") if w in squashed}
    if tokens & {"imp", "import", "del", "delivered", "fwd", "forward", "in", "plus", "bezug"}:
        m.flow = 1
    elif tokens & {"exp", "export", "rec", "received", "rev", "reverse", "out", "minus", "lieferung", "einspeisung"}:
        m.flow = 19
    elif "net" in tokens:
        m.flow = 4
    m.bulk = bool(set(t) & {"cum", "cumulative", "total", "reg", "register", "index", "stand", "zählerstand", "tot"})
    return m


def _measure_from_obis(code: str) -> Measure | None:
    found = OBIS.fullmatch(code.strip())
    if not found:
        return None
    c, d = int(found.group(3)), int(found.group(4))
    flows = {1: 1, 2: 19, 9: 1, 10: 19, 3: 1, 4: 19, 15: 1, 16: 4}
    if c in (1, 2, 9, 10, 3, 4, 15, 16) and d in (8, 9, 29):
        unit = {1: 72, 2: 72, 15: 72, 16: 72, 9: 71, 10: 71, 3: 73, 4: 73}[c]
        return Measure("energy", unit, 3, flow=flows[c], bulk=d in (8, 9),
                       what=f"OBIS {c}.{d}: {'cumulative' if d in (8, 9) else 'per-period'} energy")
    if c in (12, 32, 52, 72):
        return Measure("voltage", 29, phase={12: 0, 32: 129, 52: 65, 72: 33}[c], what=f"OBIS {c}.{d}: voltage")
    if c in (11, 31, 51, 71):
        return Measure("current", 5, phase={11: 0, 31: 129, 51: 65, 71: 33}[c], what=f"OBIS {c}.{d}: current")
    if c in (13, 33, 53, 73):
        return Measure("pf", 65, what=f"OBIS {c}.{d}: power factor")
    return None


def _reading_type(m: Measure, kind: str, interval_s: int | None) -> str:
    flow = 1 if m.flow is None and m.kind in ("energy", "power") else (m.flow or 0)
    if kind == "register":
        if m.kind == "energy":
            return f"11.0.0.1.{flow}.1.12.0.0.0.0.0.0.0.0.{m.multiplier}.{m.unit}.0"
        mk = {"voltage": 54, "current": 4, "power": 8, "pf": 38}[m.kind]
        return f"11.0.0.6.{flow}.1.{mk}.0.0.0.0.0.0.0.{m.phase}.{m.multiplier}.{m.unit}.0"
    period = PERIOD_CODES.get(interval_s or 900, 0)
    if m.kind == "energy":
        return f"0.0.{period}.{1 if m.bulk else 4}.{flow}.1.12.0.0.0.0.0.0.0.{m.phase}.{m.multiplier}.{m.unit}.0"
    mk = {"voltage": 54, "current": 4, "power": 8, "pf": 38}[m.kind]
    return f"0.2.{period}.6.{flow}.1.{mk}.0.0.0.0.0.0.0.{m.phase}.{m.multiplier}.{m.unit}.0"


def quantities(s: Scaffold, values: list[Column]) -> None:
    for c in values:
        m = _measure_from_obis(c.name) if s.layout == "long" else _measure_from_name(c.name)
        if m is None and s.layout == "wide" and _named(c.name, ("energy", "consumption", "usage", "active")):
            m = Measure("energy", 72, 3, what="energy (unit not named)")
            m.flow = None
        if m is None:
            s.left_out.append(c.name)
            s.unsure.append(Unsure(f"quantity {c.name}", None,
                                   f"{'code' if s.layout == 'long' else 'column'} {c.name!r}: no known unit or "
                                   "quantity; left out (a commented line in the mapping): add it with its "
                                   "ReadingType if the MDMS wants it"))
            continue
        rt = _reading_type(m, s.kind, s.interval_s)
        q = Quantity(c.name, rt, m.scale, signed=m.flow == 4 or m.kind == "pf" or c.negative, what=m.what)
        doubts = []
        if rt not in KNOWN_READING_TYPES:
            doubts.append("a ReadingType built from DOMAIN.md's fields, not one the shipped routes use: "
                          "confirm the MDMS knows it")
        if m.kind in ("energy", "power") and m.flow is None:
            doubts.append("the name gives no direction: import is assumed")
        if s.layout == "long" and m.bulk and s.kind == "interval":
            doubts.append("OBIS .8 is a cumulative register: a register ReadingType is written")
        if m.unit == 72 and "unit not named" in m.what:
            doubts.append("no unit in the name: kWh is assumed")
        if doubts:
            q.sure, q.note = False, "; ".join(doubts)
            s.unsure.append(Unsure(f"quantity {c.name}", rt, f"{c.name}: {q.note}"))
        else:
            q.what = KNOWN_READING_TYPES[rt]
        s.quantities.append(q)
        evidence = f"{m.what}" + (f", scale {m.scale:g} to the k unit" if m.scale != 1 else "") + (
            ", negative values seen: signed" if c.negative else "")
        s.guessed.append(Guess(f"quantity {c.name}", rt, evidence))
    if not s.quantities and s.kind != "events":
        first = values[0].name
        rt = ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0" if s.kind == "interval"
              else "11.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0")
        s.left_out.remove(first)
        s.unsure = [u for u in s.unsure if u.item != f"quantity {first}"]
        s.quantities.append(Quantity(first, rt, sure=False, what="stand-in",
                                     note="no column's name says its quantity: a stand-in so the mapping loads"))
        s.unsure.append(Unsure(f"quantity {first}", rt, f"{first}: no value column names a known quantity; "
                                                        "mapped as kWh import as a stand-in: set its ReadingType"))


# --- writing ----------------------------------------------------------------------------------

_PLAIN_SCALAR = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def q(value: Any) -> str:
    """A YAML scalar for ``value``: plain when safe, else a JSON (= YAML double-quoted) string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    text = str(value)
    if _PLAIN_SCALAR.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _line(indent: int, key: str, value: str, comment: str | None) -> str:
    text = f"{' ' * indent}{key}: {value}"
    if comment:
        text = f"{text:<43} # {comment}"
    return text


def route_text(s: Scaffold, pattern: str, fmt_line: str | None) -> str:
    c = s.comments
    out = [f"# Written by `gridbus routes new {s.system} --sample {s.sample.name}`: a starting point, to edit.",
           "# Each `guessed:` comment says what a value was guessed from; each `TODO` is what it could not guess",
           "# (the value there is the closest guess, so the file loads). The mapping's keys:",
           "# docs/reference/transformers.md#csv_readings. Then: gridbus routes test, validate, apply.",
           "use_case: 1",
           f"title: {q(s.system + ' CSV meter data files into MDMS-1')}",
           "routes:",
           f"  - id: {s.route_id}",
           f"    description: {q(f'{s.system} CSV files into MDMS-1 over REST (scaffolded from a sample)')}",
           f"    source: {{system: {q(s.system)}, connector: file-drop, path: \"${{GRIDBUS_INBOX}}/{s.system}\", "
           f"pattern: {q(pattern)}{fmt_line or ''}}}",
           "    method: file-batch",
           "    transform: [csv_readings, to_mdms_json]",
           "    options:",
           "      csv_readings:"]
    i = 8
    out.append(_line(i, "encoding", q(s.encoding), c.get("encoding")))
    out.append(_line(i, "delimiter", q(s.delimiter), c.get("delimiter")))
    if s.quote != '"':
        out.append(_line(i, "quote", q(s.quote), c.get("quote")))
    out.append(_line(i, "decimal", q(s.decimal), c.get("decimal")))
    out.append(_line(i, "skip_lines", str(s.skip_lines), c.get("skip_lines")))
    if s.time_zone:
        out.append(_line(i, "time_zone", q(s.time_zone), c.get("time_zone")))
    else:
        out.append(f"{' ' * i}# time_zone: not needed while the times carry their UTC offset")
    out.append(_line(i, "missing", "[" + ", ".join(q(m) for m in s.missing) + "]", c.get("missing")))
    out.append(f"{' ' * i}profiles:")
    out.append(f"{' ' * (i + 2)}{s.profile_name}:")
    j = i + 4
    out.append(_line(j, "kind", s.kind, c.get("kind")))
    if s.kind != "events":
        out.append(_line(j, "layout", s.layout, c.get("layout")))
    out.append(_line(j, "meter", q(s.meter), c.get("meter")))
    if s.date:
        out.append(_line(j, "date", q(s.date), c.get("date")))
    out.append(_line(j, "time", q(s.time), c.get("time")))
    out.append(_line(j, "time_format", q(s.time_format), c.get("time_format")))
    if s.kind == "interval":
        out.append(_line(j, "time_marks", s.time_marks, c.get("time_marks")))
        out.append(_line(j, "interval_s", str(s.interval_s or 900), c.get("interval_s")))
    if s.kind == "events":
        out.append(_line(j, "code", q(s.code), c.get("kind")))
        if s.received:
            out.append(_line(j, "received", q(s.received), c.get("received")))
        out.append(_line(j, "codes", "is15959", c.get("codes")))
        return "\n".join(out + _tail()) + "\n"
    if s.layout == "long":
        out.append(_line(j, "code", q(s.code), "the quantity code of each row"))
        out.append(_line(j, "value", q(s.value), "its value"))
    out.append(f"{' ' * j}quantities:   # add max: (a plausible maximum after scaling) to reject impossible values")
    for qty in s.quantities:
        parts = [f"reading_type: {qty.reading_type}"]
        if qty.scale != 1:
            parts.append(f"scale: {qty.scale:g}")
        if qty.signed:
            parts.append("signed: true")
        comment = qty.what if qty.sure else f"TODO {qty.note}"
        out.append(_line(j + 2, q(qty.column), "{" + ", ".join(parts) + "}", comment))
    for name in s.left_out:
        out.append(f"{' ' * (j + 2)}# {q(name)}: {{reading_type: ...}}   "
                   "# TODO no known quantity: add it or leave it out")
    return "\n".join(out + _tail()) + "\n"


def _tail() -> list[str]:
    return ["    destinations:",
            '      - {system: mdms-1, connector: rest, url: "${MDMS_1_URL}/messages", timeout_s: 10}',
            "    retry: {attempts: 8, backoff: exponential, first_delay_s: 2, max_delay_s: 3600}",
            "    queue: {batch_size: 1000, delivery_limit: 5}"]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _small_flow(dumper, data):
    """A mapping of a few scalars on one line ({timeStamp: ..., value: ...}), as the shipped tests write it."""
    flat = len(data) <= 4 and all(not isinstance(v, (dict, list)) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flat or None)


_NoAliases.add_representer(dict, _small_flow)


def _block(value: Any, indent: int) -> str:
    text = yaml.dump(value, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=110)
    return "\n".join(" " * indent + line if line else line for line in text.rstrip("\n").split("\n"))


def excerpt(s: Scaffold) -> tuple[str, bytes]:
    """The sample's first lines (banner, header, TEST_ROWS data rows) as text, and as bytes in its encoding."""
    taken, data_rows = [], 0
    for k, line in enumerate(s.lines):
        taken.append(line)
        if k > s.skip_lines and line.strip():
            data_rows += 1
            if data_rows >= TEST_ROWS:
                break
    text = "\n".join(taken).lstrip("\ufeff") + "\n"
    if s.encoding == "utf-16":
        raw = s.bom + text.encode("utf-16-le" if s.bom == codecs.BOM_UTF16_LE else "utf-16-be")
    else:
        raw = s.bom + text.encode("utf-8" if s.encoding.startswith("utf-8") else s.encoding)
    return text, raw


def _inline_ok(s: Scaffold, text: str) -> bool:
    """The test can hold the rows as text: the runner encodes ``input`` as UTF-8."""
    return s.encoding in ("utf-8", "utf-8-sig") or (s.encoding != "utf-16" and text.isascii())


def test_text(s: Scaffold, text: str, fixture: str | None, outcome, error: str | None) -> str:
    out = [f"# Route test of {s.system}-csv.yaml, written by `gridbus routes new` from the first data rows of",
           f"# {s.sample.name}. The expectations are what the guessed mapping makes of them, not a verified truth:",
           "# check them against the vendor's own figures, and rewrite them whenever you edit the mapping.",
           "cases:",
           f"  - name: {q(('first rows of ' + s.sample.name)[:190])}",
           f"    route: {s.route_id}"]
    if fixture:
        out.append(f"    input_file: {q(fixture)}   # the rows in the sample's own encoding ({s.encoding})")
    elif re.fullmatch(r"[^\r\x00-\x08\x0b-\x1f\x7f\ufeff]*", text) and not text[:1].isspace() and \
            not any(line != line.rstrip() for line in text.split("\n")):
        out.append("    input: |")
        out.extend(("      " + line) if line else "" for line in text.rstrip("\n").split("\n"))
    else:
        out.append(f"    input: {json.dumps(text, ensure_ascii=False)}")
    if error is not None:
        out.append(f"    # TODO the guessed mapping could not decode these rows ({error}): no expected document")
        out.append("    # was written; fix the mapping until `gridbus routes test` passes, then add `expect:`.")
        out.append("    expect_rejections: []")
        return "\n".join(out) + "\n"
    docs = outcome.documents
    document = docs[0] if len(docs) == 1 else docs
    out.append("    expect:")
    out.append(_block(document, 6))
    if outcome.rejections:
        out.append("    expect_rejections:   # rows the guessed mapping refuses: each is a line of the sample")
        for r in outcome.rejections:
            line = r.line if r.line is not None else "null"
            out.append(f"      - {{line: {line}, reason: {json.dumps(r.reason, ensure_ascii=False)}}}")
    outputs = [o.get(None) for o in outcome.outputs]
    if len(outputs) == 1 and outputs[0] is not None:
        o = outputs[0]
        out.append(f"    expect_output: {{content_type: {q(o.content_type)}, readings: {o.readings}, "
                   f"events: {o.events}}}")
    return "\n".join(out) + "\n"


def scaffold(system: str, sample: Path, out_dir: Path, force: bool = False) -> Scaffold:
    """Guess, write the route, its test (and the sample's rows when they cannot be inline); the Scaffold."""
    if not naming.ROUTE_ID_PATTERN.match(f"{system}-csv-to-mdms-1") or "--" in system:
        raise SampleError(f"system {system!r}: a system name is lower-case letters, digits and '-' (e.g. hes-c), "
                          "short enough for the route id <system>-csv-to-mdms-1 (63 characters)")
    s = Scaffold(system, sample)
    raw, more = read_sample(sample)
    text = decode_sample(s, raw, more)
    s.lines = sample_lines(s, text, more)
    names, rows, others = find_dialect(s, s.lines)
    columns = analyse(s, names, rows)
    values = choose_columns(s, columns, rows)
    quantities(s, values)
    if others:
        s.guessed.append(Guess("rows", len(rows), f"{len(rows)} data row(s) of {len(names)} fields read; "
                                                  f"{others} other line(s) skipped (another field count)"))
    suffix = sample.suffix.lower()
    pattern = f"*{suffix}" if suffix and suffix != ".xml" and re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else "*.csv"
    fmt_line = ", format: csv" if pattern != "*.csv" else None
    route_path = out_dir / f"{system}-csv.yaml"
    test_path = out_dir / f"{system}-csv_test.yaml"
    rows_text, rows_raw = excerpt(s)
    fixture = None if _inline_ok(s, rows_text) else f"fixtures/{system}-sample{suffix or '.csv'}"
    targets = [route_path, test_path] + ([out_dir / fixture] if fixture else [])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise SampleError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
                          "give --force to overwrite, or --out another folder")
    route_yaml = route_text(s, pattern, fmt_line)
    _check_clash(s, out_dir, route_path)
    with tempfile.TemporaryDirectory(prefix="gridbus-new-") as folder:
        staged = Path(folder)
        (staged / route_path.name).write_text(route_yaml, encoding="utf-8")
        if fixture:
            (staged / fixture).parent.mkdir(parents=True, exist_ok=True)
            (staged / fixture).write_bytes(rows_raw)
        test_yaml = _verified_test(s, staged, route_path.name, test_path.name, rows_text, rows_raw, fixture)
    out_dir.mkdir(parents=True, exist_ok=True)
    route_path.write_text(route_yaml, encoding="utf-8")
    test_path.write_text(test_yaml, encoding="utf-8")
    s.files = {"route": str(route_path), "test": str(test_path)}
    if fixture:
        (out_dir / fixture).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / fixture).write_bytes(rows_raw)
        s.files["fixture"] = str(out_dir / fixture)
    return s


def _check_clash(s: Scaffold, out_dir: Path, route_path: Path) -> None:
    """The route's id and inbox must be free among the route files already in ``out_dir``."""
    from bus.routes.loader import load_routes, route_files
    from bus.routes.testing import placeholder_environment

    if not out_dir.is_dir():
        return
    files = [f for f in route_files([out_dir]) if f.resolve() != route_path.resolve()]
    if not files:
        return
    try:
        table = load_routes(files, placeholder_environment(files))
    except GridbusError:
        return  # their own problems are `gridbus routes validate`'s to report
    for r in table:
        if r.id == s.route_id:
            raise SampleError(f"route {s.route_id} already exists ({r.file}:{r.line}): choose another SYSTEM name")


def _verified_test(s: Scaffold, staged: Path, route_name: str, test_name: str, rows_text: str, rows_raw: bytes,
                   fixture: str | None) -> str:
    """The test file's text, its expectations computed by the route test runner and checked to pass."""
    from bus.routes import testing
    from bus.routes.loader import load_routes

    route_file = staged / route_name
    try:
        table = load_routes([route_file], testing.placeholder_environment([route_file]))
    except GridbusError as exc:  # a guess the schema refuses: a bug of this module, said plainly
        raise SampleError(f"the guessed route does not load ({exc}); please report it with the sample") from None
    route = table.get(s.route_id)
    outcome = testing.outcome_of(route, rows_raw if fixture else rows_text.encode("utf-8"), "input.csv")
    error = outcome.error
    text = test_text(s, rows_text, fixture, outcome, error)
    test_file = staged / test_name
    test_file.write_text(text, encoding="utf-8")
    s.test = {"rows": sum(1 for line in rows_text.split("\n")[s.skip_lines + 1:] if line.strip()),
              "rejections": [r.as_dict() for r in outcome.rejections] if error is None else [],
              "readings": sum(o[None].readings for o in outcome.outputs if o.get(None) is not None),
              "expected_written": error is None, "error": error}
    if error is None:
        try:
            results = testing.run(testing.load_test_files([test_file]))
            passed = all(r.passed for r in results)
            problems = [p.text() for r in results for p in r.problems]
        except GridbusError as exc:
            passed, problems = False, [str(exc)]
        s.test["passes"] = passed
        if not passed:  # the runner disagrees with its own outcome: keep the case, say why
            s.test["problems"] = problems[:5]
    else:
        s.test["passes"] = False
        s.unsure.append(Unsure("route test", None, f"the guessed mapping refuses the sample's first rows ({error}); "
                                                   "the test has no expected document: fix the mapping first"))
    for r in outcome.rejections if error is None else []:
        s.unsure.append(Unsure(f"line {r.line}", None, f"the guessed mapping rejects line {r.line} of the sample: "
                                                       f"{r.reason} (kept in the test's expect_rejections)"))
    return text
