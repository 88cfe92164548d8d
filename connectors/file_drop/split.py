"""Cut a surveyed file into chunks of about ``batch_size`` records, in constant memory.

A CSV chunk is the header plus ``batch_size`` data lines (fewer if that would
pass MAX_CHUNK_BYTES), blank lines kept so the decoder's line numbers are the
file's.  While cutting, each row's (meter, time) is compared with the rows of
earlier chunks: a row whose meter and time came earlier with other values is
blanked and rejected here, naming both lines, so the MDMS keeps the first
value whatever order the chunks are delivered in.  (Within a chunk the
decoder does the same.)
"""
from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from bus.transform import SourceChunk
from connectors.file_drop.lines import complete_lines, split_lines
from connectors.file_drop.survey import TRACKED_ROWS, CsvSurvey, blank_lines, find_repeats

MAX_CHUNK_BYTES = 8 << 20  # long lines end a chunk early: a message the broker takes, whatever the lines


@dataclass
class Chunk:
    source: SourceChunk
    rows: int                   # CSV: data lines the decoder will read; XML: readings
    first_line: int | None      # CSV: the chunk's lines in the file
    last_line: int | None
    rejections: list[dict]      # lines the ingress rejected itself (conflicting repeats)


def csv_chunks(path: Path, batch_size: int, survey: CsvSurvey, decoder: Any = None,
               options: Mapping | None = None, name: str | None = None) -> Iterator[Chunk]:
    """Chunks of ``path``, which must be the file ``survey`` read (the archive copy)."""
    identity = decoder.row_identity(survey.header, options or {}) if hasattr(decoder, "row_identity") else None
    conflicts = _Conflicts(path, survey, identity) if identity else None
    header = survey.header + "\n"
    name = name or path.name
    lines: list[bytes] = []     # the chunk being built
    rows = size = 0
    first_line = 2
    at_header = True
    with open(path, "rb") as f:
        for data in complete_lines(f):
            raw = split_lines(data)
            if at_header:
                raw, at_header = raw[1:], False
            blank = _blank_marks(data, raw)
            pos = 0
            while pos < len(raw):
                end = _after_nth_data_line(blank, pos, batch_size - rows, len(raw))
                piece = sum(map(len, raw[pos:end])) + end - pos
                full = False
                if size + piece > MAX_CHUNK_BYTES:  # long lines: end the chunk on size, with one line at least
                    end, piece, full = pos, 0, True
                    while end < len(raw) and (rows == 0 and end == pos or
                                              size + piece + len(raw[end]) + 1 <= MAX_CHUNK_BYTES):
                        piece += len(raw[end]) + 1
                        end += 1
                lines += raw[pos:end]
                rows += (end - pos) - (blank[pos:end].count(1) if blank else 0)
                size += piece
                pos = end
                if rows and (rows == batch_size or full):
                    yield _chunk(header, name, lines, first_line, rows, conflicts)
                    first_line += len(lines)
                    lines, rows, size = [], 0, 0
    if rows:
        yield _chunk(header, name, lines, first_line, rows, conflicts)


def _blank_marks(data: bytes, raw: list[bytes]) -> array | None:
    """1 for each blank line of the block, 0 for the others; None if it has none (the usual case)."""
    if not blank_lines(data, raw):
        return None
    return array("b", (not line.strip(b" \t\r") for line in raw))


def _after_nth_data_line(blank: array | None, pos: int, n: int, size: int) -> int:
    """Index just past the n-th data line from ``pos`` (or the end of the block)."""
    end = min(pos + n, size)
    if blank is None:
        return end
    missing = blank[pos:end].count(1)
    while missing and end < size:  # blank lines do not count: reach further
        missing -= not blank[end]
        end += 1
    return end


def _chunk(header: str, name: str, lines: list[bytes], first_line: int, rows: int,
           conflicts: "_Conflicts | None") -> Chunk:
    data = b"\n".join(lines) + b"\n"
    rejections = conflicts.check(data, lines, first_line) if conflicts else []
    if rejections:
        for r in rejections:
            lines[r["line"] - first_line] = b""  # the decoder never sees it: the ingress has rejected it
        data = b"\n".join(lines) + b"\n"
    return Chunk(SourceChunk(header + data.decode("utf-8"), name, first_line, "csv"), rows - len(rejections),
                 first_line, first_line + len(lines) - 1, rejections)


class _Conflicts:
    """Each row's (meter, time) against the rows of earlier chunks; the first row the decoder takes wins.

    Remembered: a set of fingerprints and the list of them by line, about 90 bytes a row.  A file of
    more than TRACKED_ROWS rows is read once more first (``find_repeats``): then only the rows whose
    fingerprint repeats somewhere are remembered, and memory stays bounded whatever the file's size.
    """

    def __init__(self, path: Path, survey: CsvSurvey, identity: Any):
        self.path = path
        self.identity = identity
        self.wanted = find_repeats(path, survey, identity) if survey.data_rows > TRACKED_ROWS else None
        self.seen: set[int] = set()
        self.chunks: list[list[int]] = []    # fingerprints of each earlier chunk, line by line
        self.starts: list[int] = []          # first line of each chunk, and where it starts in the file
        self.offsets: list[int] = []
        self.offset = survey.body_offset
        self.first: dict[int, tuple] = {}    # fingerprint → (line, (key, values)) of the first row taken

    def check(self, data: bytes, lines: list[bytes], first_line: int) -> list[dict]:
        fps = self.identity.fingerprints(data, lines)
        if self.wanted is None:  # the rows whose (meter, time) an earlier chunk had
            looked_at = self.seen.intersection(fps)
            self.seen.update(fps)
            self.chunks.append(fps)
            self.starts.append(first_line)
            self.offsets.append(self.offset)
            self.offset += len(data)
        else:  # big file: every row whose (meter, time) repeats somewhere, in file order
            looked_at = self.wanted.intersection(fps)
        looked_at.difference_update((0, 1))
        rejections = []
        for j in sorted(j for fp in looked_at for j in _positions(fps, fp)):
            why = self._conflict(fps[j], first_line + j, lines[j])
            if why:
                rejections.append({"line": first_line + j, "reason": why})
        return rejections

    def _conflict(self, fp: int, number: int, line: bytes) -> str | None:
        mine = self._read(line)
        if mine is None:
            return None  # the decoder rejects this row for what it is
        first = self.first.get(fp) or (self._first_taken(fp, number) if self.wanted is None else None)
        if first is None:  # no earlier row the decoder takes: this one is the first
            self.first[fp] = (number, mine)
            return None
        if mine[0] != first[1][0] or mine[1] == first[1][1]:
            return None  # fingerprints that merely collide, or the same values spelled otherwise
        return f"meter {mine[0][0]}: second row for {mine[0][1]} with other values (first at line {first[0]})"

    def _first_taken(self, fp: int, before: int) -> tuple | None:
        """The first earlier row with this fingerprint that the decoder takes, read back from the file."""
        for start, fps in zip(self.starts, self.chunks):
            if start >= before:
                return None
            for j in _positions(fps, fp) if fp in fps else ():
                found = self._read(self._line(start + j))
                if found is not None:
                    self.first[fp] = (start + j, found)
                    return self.first[fp]
        return None

    def _line(self, number: int) -> bytes:
        k = bisect_right(self.starts, number) - 1
        with open(self.path, "rb") as f:
            f.seek(self.offsets[k])
            return next(islice(f, number - self.starts[k], None)).rstrip(b"\n")

    def _read(self, line: bytes) -> tuple | None:
        """(key, values) of a line, None if the decoder would reject it."""
        text = line.decode("utf-8")
        key = self.identity.key(text)
        values = self.identity.values(text) if key else None
        return None if values is None else (key, values)


def _positions(values: list[int], wanted: int) -> Iterator[int]:
    j = -1
    try:
        while True:
            j = values.index(wanted, j + 1)
            yield j
    except ValueError:
        return


def xml_chunks(path: Path, batch_size: int, splitter: Callable[..., Iterator[tuple[str, int]]],
               name: str | None = None) -> Iterator[Chunk]:
    with open(path, "rb") as f:
        for text, readings in splitter(f, batch_size):
            yield Chunk(SourceChunk(text, name or path.name, 0, "xml"), readings, None, None, [])
