"""Reading an inbox file: never through a link, in blocks of whole lines, noticing if it moves.

A line ends at LF; a CR before it belongs to the line end.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from bus.errors import DecodeError

READ_BLOCK = 1 << 20


class FileChanged(Exception):
    """Control signal, not an error: the file changed while it was read; read it again once stable."""


class LineTooLong(Exception):
    """A line has grown past the maximum before its end was found (the caller knows which line)."""


def file_identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_regular(path: Path) -> IO[bytes]:
    """The file itself: never through a symlink, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    f = open(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise DecodeError("not a regular file")
    return f


def read_stable(path: Path, read: Callable[[IO[bytes]], Any]) -> tuple[Any, tuple]:
    """(``read(f)``, the file's identity); FileChanged unless size, mtime and inode held still meanwhile."""
    with open_regular(path) as f:
        before = file_identity(os.fstat(f.fileno()))
        result = read(f)
        after, read_bytes = file_identity(os.fstat(f.fileno())), f.tell()
    now = file_identity(os.stat(path, follow_symlinks=False))
    if not before == after == now or read_bytes != before[2]:
        raise FileChanged(f"{path.name} changed while it was read ({before[2]} → {now[2]} bytes)")
    return result, before


class Copy:
    """Where the bytes read also go (``archive/.incoming``), or nowhere."""

    def __init__(self, path: Path | None):
        self.out = open(path, "wb") if path else None

    def write(self, block: bytes) -> None:
        if self.out:
            self.out.write(block)

    def __enter__(self) -> "Copy":
        return self

    def __exit__(self, *exc) -> None:
        if self.out:
            self.out.close()


def copy_stable(path: Path, copy_to: Path | None) -> tuple[str, tuple]:
    """(checksum, identity) of a file read once, copied to ``copy_to`` on the way."""
    def read(f: IO[bytes]) -> str:
        digest = hashlib.sha256()
        with Copy(copy_to) as out:
            while block := f.read(READ_BLOCK):
                digest.update(block)
                out.write(block)
        return digest.hexdigest()
    return read_stable(path, read)


def complete_lines(f: IO[bytes], seen: Callable[[bytes], None] | None = None,
                   max_line_bytes: float = float("inf")) -> Iterator[bytes]:
    """Blocks of whole lines, each ending with LF except the file's last if it has none.

    ``seen`` gets every block as read; LineTooLong once a line passes ``max_line_bytes``
    without ending (a file of one 20 MB line is not read to its end).
    """
    carry = b""
    while block := f.read(READ_BLOCK):
        if seen:
            seen(block)
        cut = block.rfind(b"\n") + 1
        if not cut:
            carry += block
            if len(carry) > max_line_bytes:
                raise LineTooLong
            continue
        yield carry + block[:cut]
        carry = block[cut:]
    if carry:
        yield carry


def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines
