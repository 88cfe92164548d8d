"""A file an operator may change while a process runs (API keys, the meter → HES table).

Its parsed content is kept and read again only when the file's mtime changes;
the mtime itself is looked at no more than once per ``recheck_s``, so a busy
gateway or worker does not stat the file on every request.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UNREAD = object()


class ChangingFile:
    def __init__(self, path: Path | str, parse: Callable[[Path], Any], missing: Any = _UNREAD):
        """``parse(path)`` reads the file; ``missing``: the content of a file that does not
        exist (without it, ``OSError`` from the stat reaches the caller)."""
        self.path, self.parse, self.missing = Path(path), parse, missing
        self._mtime: int | None = None
        self._value: Any = _UNREAD
        self._checked = float("-inf")
        self._lock = threading.Lock()  # one parse of a large file at a time, not one per thread

    def read(self, recheck_s: float = 0.0) -> Any:
        """The content; the file is looked at again if ``recheck_s`` has passed since the last look."""
        if self._value is not _UNREAD and time.monotonic() - self._checked < recheck_s:
            return self._value
        with self._lock:
            self._checked = time.monotonic()
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except FileNotFoundError:
                if self.missing is _UNREAD:
                    raise
                self._mtime, self._value = None, self.missing
                return self._value
            if mtime != self._mtime or self._value is _UNREAD:
                self._value, self._mtime = self.parse(self.path), mtime
            return self._value
