"""A file in a route's declared encoding and with preamble lines → UTF-8 with the header first.

The rest of the ingress (survey, chunks, archive) reads UTF-8 with the header on line 1.  A
decoder that declares another encoding (Latin-1, Windows-1252, UTF-16 with a BOM) or lines
before the header (a vendor's banner) gets its file rewritten once, streaming, before the
survey: the preamble lines become blank lines after the header, so every data line keeps the
number it has in the file the HES sent, and blank lines are skipped everywhere.  The archive
keeps the file as read (UTF-8); its checksum is of those bytes, so a file sent twice is still
a duplicate.
"""
from __future__ import annotations

import codecs
import io
from pathlib import Path
from typing import IO, Any

from bus import registry
from bus.errors import DecodeError
from bus.routes.model import Route
from connectors.file_drop.lines import READ_BLOCK, read_stable

PLAIN = ("utf-8", "utf-8-sig")


def bound_decoder(route: Route) -> Any:
    """The route's first transformer, bound to the route's options when it reads them (csv_readings)."""
    decoder = registry.transformer(route.transform[0]) if route.transform else None
    return decoder.bind(route.options) if hasattr(decoder, "bind") else decoder


def needed(decoder: Any) -> bool:
    return getattr(decoder, "encoding", "utf-8") not in PLAIN or getattr(decoder, "skip_lines", 0) > 0


def transcode_file(path: Path, target: Path, decoder: Any, max_line_bytes: int) -> tuple:
    """Write ``path`` as UTF-8 with its header first to ``target``; the original's identity.

    DecodeError naming the line if the file is not in its encoding; FileChanged if it moved."""
    def read(f: IO[bytes]) -> None:
        with open(target, "wb") as out:
            _Transcoder(decoder.encoding, decoder.skip_lines, max_line_bytes, out.write).run(f)
    return read_stable(path, read)[1]


def normalise(data: bytes, route: Route, max_line_bytes: int = 1 << 20) -> bytes:
    """The same for bytes in memory (``gridbus routes test``): what the ingress would read."""
    decoder = bound_decoder(route)
    if not needed(decoder):
        return data
    out: list[bytes] = []
    _Transcoder(decoder.encoding, decoder.skip_lines, max_line_bytes, out.append).run(io.BytesIO(data))
    return b"".join(out)


class _Transcoder:
    def __init__(self, encoding: str, skip_lines: int, max_line_bytes: int, write):
        self.encoding = "utf-8-sig" if encoding == "utf-8" else encoding  # a BOM is not part of the header
        self.skip = skip_lines
        self.limit = max_line_bytes
        self.write = write
        self.head = ""          # text until the header line has ended
        self.lines = 0          # lines of the original passed so far (for errors)
        self.done_head = False

    def run(self, f: IO[bytes]) -> None:
        first = f.read(READ_BLOCK)
        if self.encoding == "utf-16" and first[:2] not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise DecodeError("not UTF-16 text with a byte order mark (the route's encoding is utf-16)")
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        block = first
        while block:
            self._text(self._decode(decoder, block, False))
            block = f.read(READ_BLOCK)
        self._text(self._decode(decoder, b"", True))
        if not self.done_head:
            parts = self.head.split("\n")
            if len(parts) > self.skip and parts[self.skip].strip("\ufeff \t\r"):  # a last line without LF
                self._header_done(self.head + "\n")
            else:
                raise DecodeError(f"no header line after the {self.skip} line(s) the route skips"
                                  if self.skip else "empty file: no header line")

    def _decode(self, decoder, block: bytes, final: bool) -> str:
        try:
            return decoder.decode(block, final)
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not {self.encoding.removesuffix('-sig')} text: line "
                              f"{self.lines + self._newlines(block[:max(exc.start, 0)]) + 1} ({exc.reason})") from None

    def _newlines(self, data: bytes) -> int:
        return data.count("\n".encode(self.encoding.removesuffix("-sig")).removeprefix(codecs.BOM_UTF16_LE)
                          .removeprefix(codecs.BOM_UTF16_BE)) if data else 0

    def _text(self, text: str) -> None:
        if not text:
            return
        if self.done_head:
            self.lines += text.count("\n")
            self.write(text.encode("utf-8"))
            return
        self.head += text
        if self.head.count("\n") > self.skip:
            self._header_done(self.head)
        elif len(self.head) > self.limit * (self.skip + 1):
            raise DecodeError(f"line {self.head.count(chr(10)) + 1} is longer than max_line_bytes ({self.limit})")

    def _header_done(self, text: str) -> None:
        parts = text.split("\n", self.skip + 1)
        header, rest = parts[self.skip], parts[self.skip + 1] if len(parts) > self.skip + 1 else ""
        if not header.strip("\ufeff \t\r"):
            raise DecodeError(f"line {self.skip + 1}, where the route expects the header, is blank")
        self.done_head = True
        self.lines = self.skip + 1 + rest.count("\n")
        # the preamble's lines become blank lines after the header: every data line keeps its number
        self.write((header.rstrip("\r") + "\n" + "\n" * self.skip + rest).encode("utf-8"))
