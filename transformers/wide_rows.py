"""The hot loop of a wide readings file: a row per (meter, time), a column per quantity.

``hes_a_csv`` (HES-A's own decoder) and ``csv_readings`` (any HES's dialect, from YAML) read
their rows here, so how a row is checked, collapsed or rejected is written once.  What differs
between them comes in a ``WideLayout``: how a row's time is read (one column, or a date and a
time), the decimal mark, scaling, the limits, and the slow path that says why a value is refused.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from operator import itemgetter, le
from typing import Callable

from bus.transform import TransformContext
from transformers.csv_rows import Rows, blank, csv_reason

_UNSEEN = object()
_SEP = "\x00"  # never in a CSV field csv hands out as text a HES meant: joins values to re-mark them at once


@dataclass(frozen=True)
class WideLayout:
    width: int                                   # fields a row must have
    meter: int                                   # the meter column
    meter_name: str                              # its name, for "empty <name>"
    columns: tuple[int, ...]                     # each quantity's column
    limits: tuple[float, ...]                    # each quantity's plausible maximum (after scaling)
    raw_time: Callable[[list[str]], str]         # the row's time as written (a C itemgetter when one column)
    to_utc: Callable[[str], str]                 # that time → UTC text; ValueError/OverflowError when it is not one
    time_problem: Callable[[str], str]           # why a time was refused
    checked: Callable[[list[str]], tuple[tuple, str | None]]  # slow path: the values, or why the row is refused
    decimal_comma: bool = False
    scalers: tuple[Callable[[float], float] | None, ...] = ()  # per quantity; empty when nothing is scaled

    def pick(self) -> Callable[[list[str]], tuple[str, ...]]:
        cols = self.columns
        return itemgetter(*cols) if len(cols) > 1 else (lambda r, i=cols[0]: (r[i],))


def read_wide(layout: WideLayout, rows: Rows, context: TransformContext) -> dict[str, list[tuple[str, tuple]]]:
    """meter → [(utc, values)] in file order.  A bad row is rejected with its reason and costs
    that row only; a repeat of a (meter, time) with the same values collapses into the first,
    with other values it is rejected naming the first's line."""
    width, im, limits, checked = layout.width, layout.meter, layout.limits, layout.checked
    raw_time, to_utc, pick = layout.raw_time, layout.to_utc, layout.pick()
    comma, scalers, count = layout.decimal_comma, layout.scalers, len(layout.columns)
    per_meter: dict[str, list[tuple[str, tuple]]] = {}
    first_seen: dict[tuple[str, str], tuple[int, tuple]] = {}
    utc_of: dict[str, str | None] = {}  # HES files repeat a few timestamps thousands of times
    # the loop reads the csv reader itself: a generator in between costs ~5 %
    reader, base, n = rows.reader, rows.base, 0
    while True:
        try:
            for row in reader:
                n += 1
                if len(row) != width:
                    if blank(row):
                        n -= 1  # a blank line is not a row the HES meant to send
                        continue
                    rows.reject(f"expected {width} fields, found {len(row)}")
                    continue
                meter = row[im].strip()
                if not meter:
                    rows.reject(f"empty {layout.meter_name}")
                    continue
                raw = raw_time(row)
                utc = utc_of.get(raw, _UNSEEN)
                if utc is _UNSEEN:
                    try:
                        utc = utc_of[raw] = to_utc(raw)
                    except (ValueError, OverflowError):
                        utc = utc_of[raw] = None
                if utc is None:
                    context.meters.add(meter)
                    rows.reject(f"meter {meter}: {layout.time_problem(raw)}")
                    continue
                try:
                    text = pick(row)
                    if comma:  # three C calls for the row, not a generator per value
                        text = _SEP.join(text).replace(",", ".").split(_SEP)
                        if len(text) != count:  # a NUL inside a field: the slow path names it
                            raise ValueError
                    values = tuple(map(float, text))
                    # plain ASCII decimals only (float() also takes 1_000, １２, 1e3, -0)
                    joined = "".join(text)
                    if not (joined.isascii() and joined.replace(".", "").isdigit()):
                        raise ValueError
                    if scalers:
                        values = tuple(s(v) if s else v for s, v in zip(scalers, values))
                    if not all(map(le, values, limits)):
                        raise ValueError
                except ValueError:
                    values, bad = checked(row)
                    if bad:
                        context.meters.add(meter)
                        rows.reject(f"meter {meter}: {bad}")
                        continue
                key = (meter, utc)
                first = first_seen.get(key)
                if first is not None:
                    if first[1] != values:
                        rows.reject(f"meter {meter}: second row for {utc} with other values "
                                    f"(first at line {first[0]})")
                    continue  # a repeat of the same values collapses into the first row
                first_seen[key] = (base + reader.line_num, values)
                entries = per_meter.get(meter)
                if entries is None:
                    per_meter[meter] = [(utc, values)]
                else:
                    entries.append((utc, values))
            break
        except csv.Error as exc:  # a line csv cannot read (field over its limit, lone CR): that line only
            n += 1
            rows.reject(csv_reason(exc))
    rows.count = n + getattr(reader, "refused", 0)
    context.meters.update(per_meter)
    return per_meter
