"""The first read of a CSV file: everything that must hold before anything is published.

Every byte once: the checksum, the copy that will be published and archived,
the length and UTF-8 of every line (a file breaking either is refused whole,
naming the line), the header, blank and data lines.

A file of more than TRACKED_ROWS rows is read a second time before publishing
(``find_repeats``): fingerprints of the (meter, time) of every row, the ones
that repeat kept for the chunker, in bounded memory (sets of at most
EXACT_FINGERPRINTS, the rest in temporary files).  A smaller file needs no such
pass: the chunker remembers every fingerprint itself.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from array import array
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import ne
from pathlib import Path
from typing import IO, Any

from bus.errors import DecodeError
from connectors.file_drop.lines import Copy, LineTooLong, complete_lines, read_stable, split_lines

MAX_LINE_BYTES = 1 << 20
TRACKED_ROWS = 1 << 21                    # the chunker's own memory of fingerprints: about 190 MB at most
EXACT_FINGERPRINTS = 1 << 19              # beyond: segments of about 30 MB as a set


@dataclass
class CsvSurvey:
    header: str                 # line 1 without BOM and line end
    checksum: str = ""
    size: int = 0
    lines: int = 0              # physical lines, the header included
    data_rows: int = 0          # lines after the header that are not blank (spaces, tabs, CR)
    blank_lines: int = 0
    longest: int = 0            # bytes of the longest line
    body_offset: int = 0        # where line 2 starts
    noun: str | None = None     # what the decoder said the header is
    stat: tuple = ()            # the file's identity while it was read
    repeated: set[int] | None = None  # big files: the fingerprints that repeat (find_repeats)


def survey_csv(path: Path, max_line_bytes: int = MAX_LINE_BYTES, decoder: Any = None,
               copy_to: Path | None = None) -> CsvSurvey:
    """Read ``path`` once.  DecodeError (naming the line) if it can never be read; FileChanged if it moved."""
    survey, identity = read_stable(path, lambda f: _survey(f, max_line_bytes, decoder, copy_to))
    survey.stat = identity
    return survey


def _survey(f: IO[bytes], max_line_bytes: int, decoder: Any, copy_to: Path | None) -> CsvSurvey:
    digest = hashlib.sha256()
    survey: CsvSurvey | None = None
    done = 0  # lines read so far
    with Copy(copy_to) as out:
        def seen(block: bytes) -> None:
            digest.update(block)
            out.write(block)
        try:
            for data in complete_lines(f, seen, max_line_bytes):
                raw = split_lines(data)
                longest = _check_lines(data, raw, done, max_line_bytes)
                if survey is None:
                    survey = _header(raw[0].decode("utf-8"), decoder)
                    survey.body_offset = len(raw[0]) + 1
                    data, raw, done = data[survey.body_offset:], raw[1:], 1
                    if not raw:
                        continue
                blank = blank_lines(data, raw)
                survey.blank_lines += blank
                survey.data_rows += len(raw) - blank
                survey.longest = max(survey.longest, longest)
                done += len(raw)
        except LineTooLong:
            raise DecodeError(f"line {done + 1} is longer than max_line_bytes ({max_line_bytes})") from None
    if survey is None:
        raise DecodeError("empty file: no header line")
    survey.checksum, survey.size, survey.lines = digest.hexdigest(), f.tell(), done
    return survey


def _check_lines(data: bytes, raw: list[bytes], lines_before: int, max_line_bytes: int) -> int:
    """The longest line of ``data`` in bytes; DecodeError naming the line if one is too long or not UTF-8."""
    lengths = list(map(len, raw))
    longest = max(lengths)
    if longest > max_line_bytes:
        where = next(i for i, n in enumerate(lengths) if n > max_line_bytes)
        raise DecodeError(f"line {lines_before + where + 1} is longer than max_line_bytes ({max_line_bytes})")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            start = data.rfind(b"\n", 0, exc.start) + 1
            line = lines_before + data.count(b"\n", 0, exc.start) + 1
            raise DecodeError(f"not UTF-8 text: line {line}, byte {exc.start - start + 1} ({exc.reason})") from None
    return longest


def _header(line: str, decoder: Any) -> CsvSurvey:
    header = line.removeprefix("\ufeff").rstrip("\r")
    if not header.strip():
        raise DecodeError("empty file: no header line")
    if "\x00" in header:
        raise DecodeError("binary content in the header line")
    return CsvSurvey(header, noun=decoder.check_header(header) if hasattr(decoder, "check_header") else None)


def blank_lines(data: bytes, raw: list[bytes]) -> int:
    """How many of the lines ``raw`` (of ``data``) hold nothing but spaces, tabs and CR."""
    if not raw or min(raw) > b"!":
        return 0  # the usual block: no line is empty or starts with a space, tab or CR (all below "!")
    return list(map(bytes.strip, raw, repeat(b" \t\r"))).count(b"")


def find_repeats(path: Path, survey: CsvSurvey, identity: Any) -> set[int]:
    """The fingerprints that occur more than once in the file ``survey`` read (second read, big files)."""
    repeats = _RepeatFinder()
    with open(path, "rb") as f:
        first = True
        for data in complete_lines(f):
            raw = split_lines(data)
            if first:
                data, raw, first = data[len(raw[0]) + 1:], raw[1:], False
                if not raw:
                    continue
            repeats.add(array("q", identity.fingerprints(data, raw)))
    return repeats.finish()


class _RepeatFinder:
    """Fingerprints seen more than once, exactly, in bounded memory and without a loop in Python.

    Each segment of at most EXACT_FINGERPRINTS distinct fingerprints is a set, which finds the
    repeats inside it; a full segment goes to a temporary file.  At the end each segment, as a
    set, meets the later ones read back from their files.
    """

    def __init__(self):
        self.segment: set[int] = set()
        self.repeated: set[int] = set()
        self.runs: list[IO[bytes]] = []

    def add(self, fps: array) -> None:
        first: dict[int, int] = {}
        at = list(map(first.setdefault, fps, count()))  # where each fingerprint was first seen in the block
        if len(first) < len(fps):  # repeats within the block
            self.repeated.update(compress(fps, map(ne, at, count())))
        self.repeated.update(self.segment.intersection(first))
        self.segment.update(first)
        self.repeated.difference_update((0, 1))  # blank lines and lines without a meter and time
        if len(self.segment) >= EXACT_FINGERPRINTS:
            run = tempfile.TemporaryFile()
            array("q", self.segment).tofile(run)
            self.runs.append(run)
            self.segment = set()

    def finish(self) -> set[int]:
        runs = [*self.runs, None]  # None: the segment still in memory
        for i, run in enumerate(runs[:-1]):
            earlier = set(_read_run(run))
            for later in runs[i + 1:]:
                self.repeated |= earlier.intersection(self.segment if later is None else _read_run(later))
            run.close()
        self.runs, self.segment = [], set()
        return self.repeated


def _read_run(run: IO[bytes]) -> array:
    run.seek(0, os.SEEK_END)
    values = array("q")
    size = run.tell() // values.itemsize
    run.seek(0)
    values.fromfile(run, size)
    return values
