"""Cut a file into chunks of about ``batch_size`` records, in constant memory."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

from bus.errors import DecodeError
from bus.transform import SourceChunk

READ_BLOCK = 1 << 20


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def csv_survey(path: Path) -> tuple[str, int]:
    """(header line, number of data rows); DecodeError if it is not UTF-8 text with a header."""
    rows = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline()
            for line in f:
                if line.strip():
                    rows += 1
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 text (byte {exc.start} of a line: {exc.reason})") from exc
    if not header.strip():
        raise DecodeError("empty file: no header line")
    if "\x00" in header:
        raise DecodeError("binary content in the header line")
    return header, rows


def csv_chunks(path: Path, batch_size: int) -> Iterator[SourceChunk]:
    """Header plus ``batch_size`` data rows per chunk, each knowing its first line number."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
        if not header.endswith("\n"):
            header += "\n"
        batch: list[str] = []
        first_line = 0
        rows = 0
        for number, line in enumerate(f, start=2):
            if not line.strip():
                if batch:  # kept, so the decoder's line numbers stay those of the file
                    batch.append("\n")
                continue
            if not batch:
                first_line = number
            batch.append(line if line.endswith("\n") else line + "\n")
            rows += 1
            if rows >= batch_size:
                yield SourceChunk(header + "".join(batch), path.name, first_line, "csv")
                batch, rows = [], 0
        if rows:
            yield SourceChunk(header + "".join(batch), path.name, first_line, "csv")


def xml_chunks(path: Path, batch_size: int,
               splitter: Callable[..., Iterator[tuple[str, int]]]) -> Iterator[SourceChunk]:
    with open(path, "rb") as f:
        for text, _readings in splitter(f, batch_size):
            yield SourceChunk(text, path.name, 0, "xml")
