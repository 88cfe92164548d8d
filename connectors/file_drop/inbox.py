"""What lies in an inbox folder, and which of it is complete enough to take.

A file is taken only when complete, by the conventions HES teams use:

- write-then-rename: dot-files and ``*.part``/``*.tmp``/``*.partial``/``*.filepart``
  are never taken; the file appears under its name only when whole;
- a marker: with ``marker_suffix: .done`` a file is taken once ``<name>.done``
  exists (the marker is removed with the file);
- a settle time: otherwise a file must keep its size and mtime for ``settle_s``
  (longer than the longest stall of an upload that writes in place).

Symlinks are never followed: a link is set apart, and moved to ``rejected/``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".filepart")
# the archive adds to a name: a millisecond prefix when taken, .report.json, a dot and .part while written
MAX_NAME_BYTES = 200


@dataclass
class Scan:
    files: list[Path] = field(default_factory=list)    # regular files matching the pattern
    links: list[Path] = field(default_factory=list)    # symlinks matching it: never followed


def scan(folder: Path, pattern: str, marker_suffix: str | None = None) -> Scan:
    """Candidates of one inbox: neither hidden, nor in progress, nor a marker."""
    found = Scan()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES) or \
                (marker_suffix and name.endswith(marker_suffix)) or not fnmatch.fnmatch(name, pattern):
            continue
        if entry.is_symlink():
            found.links.append(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            found.files.append(Path(entry.path))
    found.files.sort()
    found.links.sort()
    return found


def name_problem(name: str) -> str | None:
    """Why a name cannot be archived and reported as it is, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "its name is not UTF-8 text"
    if size > MAX_NAME_BYTES:
        return f"its name is {size} bytes, longer than {MAX_NAME_BYTES} (the archive and the report add to it)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "its name holds a control character"
    return None


def printable(name: str) -> str:
    """A name as logs and reasons show it: bytes that are not UTF-8 as \\xNN, control characters escaped."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def safe_name(name: str) -> str:
    """A short printable ASCII name for a file whose own name cannot be kept, unique per original."""
    raw = os.fsencode(name)
    stem, dot, ext = raw.rpartition(b".") if b"." in raw[1:] else (raw, b"", b"")
    ext = ext if re.fullmatch(rb"[A-Za-z0-9]{1,10}", ext) else b""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", stem.decode("ascii", "replace")).strip("_")[:80] or "file"
    return f"{readable}~{hashlib.sha256(raw).hexdigest()[:12]}" + (f".{ext.decode()}" if ext else "")


class Readiness:
    """Which candidates are complete: their marker is there, or size and mtime held for ``settle_s``."""

    def __init__(self, settle_s: float, marker_suffix: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settle_s = settle_s
        self.marker_suffix = marker_suffix
        self.clock = clock
        self.seen: dict[Path, tuple[int, int, float]] = {}

    def marker(self, path: Path) -> Path | None:
        return path.with_name(path.name + self.marker_suffix) if self.marker_suffix else None

    def ready(self, candidates: list[Path]) -> list[Path]:
        if self.marker_suffix:
            return [p for p in candidates if self.marker(p).exists()]
        now = self.clock()
        ready = []
        for path in candidates:
            try:
                st = path.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            before = self.seen.get(path)
            if before is None or before[:2] != key:
                self.seen[path] = (*key, now)
            elif now - before[2] >= self.settle_s:
                ready.append(path)
        keep = set(candidates)
        self.seen = {p: v for p, v in self.seen.items() if p in keep}
        return ready

    def forget(self, path: Path) -> None:
        """The file changed while it was read: it must settle again."""
        self.seen.pop(path, None)
