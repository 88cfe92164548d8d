"""The consumer-indexing snapshot of the store as of T: the CSV a GIS exports nightly, one row
per consumer meter, so a snapshot of the store can be diffed against the GIS's own."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO

SNAPSHOT_COLUMNS = ("consumer", "consumer_no", "meter", "category", "circle", "division", "subdivision", "dt",
                    "dt_rating_kva", "dt_meter", "feeder", "feeder_kv", "feeder_head_meter", "substation")

# one pass over the consumers in mRID order (the primary key's order: no sort), each joined to its
# DT, feeder and substation as of the same instant
_SQL = """
SELECT c.mrid, c.meter, c.attributes, d.mrid, d.attributes, f.mrid, f.attributes, f.parent
FROM elements c
LEFT JOIN elements d ON d.mrid = c.parent AND d.valid_from <= ? AND d.valid_to > ?
LEFT JOIN elements f ON f.mrid = d.parent AND f.valid_from <= ? AND f.valid_to > ?
WHERE c.type = 'consumer' AND c.valid_from <= ? AND c.valid_to > ?
ORDER BY c.mrid"""


def cell_text(value) -> str:
    """A stored attribute as the snapshot CSV writes it (and the snapshot diff compares it)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def snapshot_rows(db, t: float) -> Iterator[dict]:
    for consumer, meter, attrs, dt_, dt_attrs, feeder, feeder_attrs, substation in db.stream(_SQL, (t,) * 6):
        a = json.loads(attrs)
        d = json.loads(dt_attrs) if dt_attrs else {}
        f = json.loads(feeder_attrs) if feeder_attrs else {}
        yield {"consumer": consumer, "consumer_no": cell_text(a.get("consumer_no")), "meter": meter,
               "category": cell_text(a.get("category")), "circle": cell_text(a.get("circle")),
               "division": cell_text(a.get("division")), "subdivision": cell_text(a.get("subdivision")),
               "dt": dt_ or "", "dt_rating_kva": cell_text(d.get("rating_kva")), "dt_meter": cell_text(d.get("dt_meter")),
               "feeder": feeder or "", "feeder_kv": cell_text(f.get("voltage_kv")),
               "feeder_head_meter": cell_text(f.get("head_meter")), "substation": substation or ""}


def write_snapshot(rows: Iterator[dict], out: IO[str], progress=None) -> int:
    """Write the rows as CSV with a header; ``progress(n)`` every 10,000 rows.  Returns the count."""
    writer = csv.DictWriter(out, fieldnames=SNAPSHOT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, start=1):
        writer.writerow(row)
        if progress and count % 10_000 == 0:
            progress(count)
    return count
