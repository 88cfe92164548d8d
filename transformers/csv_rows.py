"""CSV rows of a chunk as every CSV decoder reads them: one physical line is one row.

A quote that never closes, a lone carriage return or a field over csv's limit
costs the line it is on, never the lines after it; blank lines are not rows;
a rejected row is named by its line in the file the source system sent.
"""
from __future__ import annotations

import csv
import io

from bus.transform import TransformContext

BLANKS = " \t\r"


def csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return "a quoted field opens and does not close on this line"
    if "new-line character" in text:
        return "a carriage return inside the line"
    return f"not valid CSV: {text}"


def blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip(BLANKS))


class OneLineAtATime:
    """csv rows of a chunk that holds quotes, each parsed from its own line only.

    csv.reader would let a quote that never closes swallow the following lines;
    here it costs the line it is on.  Unparsable lines are rejected as they are met.
    """

    def __init__(self, body: str, width: int, rows: "Rows", dialect: dict | None = None):
        self.dialect = dialect or {}
        self.lines = iter(body.split("\n"))
        self.width = width
        self.rows = rows
        self.line_num = 0
        self.refused = 0  # non-blank lines rejected here, never handed out

    def __iter__(self):
        return self

    def __next__(self) -> list[str]:
        for line in self.lines:
            self.line_num += 1
            if not line.strip(BLANKS):
                return []
            try:
                row = next(csv.reader((line,), strict=True, **self.dialect), [])
            except csv.Error as exc:
                self._refuse(csv_reason(exc))
                continue
            if blank(row):  # e.g. "" — not blank as a line, so not a row to skip
                self._refuse(f"expected {self.width} fields, found 1")
                continue
            return row
        raise StopIteration

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self.rows.reject(reason)


class Rows:
    """Data rows of a chunk: skips blank lines, counts rows, names rejected rows by file line."""

    def __init__(self, body: str, first_line: int, context: TransformContext, width: int,
                 dialect: dict | None = None):
        """``dialect``: csv.reader's delimiter and quotechar (default: comma and double quote)."""
        self.base = first_line - 1
        self.context = context
        self.count = 0
        dialect = dialect or {}
        self.reader = (OneLineAtATime(body, width, self, dialect) if dialect.get("quotechar", '"') in body
                       else csv.reader(io.StringIO(body, newline="\n"), **dialect))

    def __iter__(self):
        """Rows, blank lines skipped; a line csv cannot read is rejected and counted here."""
        while True:
            try:
                for row in self.reader:
                    if blank(row):
                        continue  # blank line: not a row the HES meant to send
                    self.count += 1
                    yield row
                break
            except csv.Error as exc:
                self.count += 1
                self.reject(csv_reason(exc))
        self.count += getattr(self.reader, "refused", 0)

    @property
    def line(self) -> int:
        return self.base + self.reader.line_num

    def reject(self, reason: str) -> None:
        self.context.reject(self.line, reason)
