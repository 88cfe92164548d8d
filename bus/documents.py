"""Bounds on a JSON document at the bus's entries, checked on the raw text before it is parsed.

Why on the raw bytes and not on the parsed object: the parsers recurse once per
level.  ``json.loads`` of 100,000 ``[`` raises RecursionError (not a decode
error), and a document just under the interpreter's limit (~900 levels) parses
but breaks whatever walks it later (pickle, copy, an encoder) far from the
sender.  Counting brackets outside strings needs no recursion and never builds
the deep object; escapes and strings are cut out first with bytes operations
(C speed, about 10 ms a megabyte), so a ``[`` inside a string never counts.

Size is bounded where the bytes arrive (``max_body_kb`` on the route's source),
before they are read or scanned.
"""
from __future__ import annotations

import json
from itertools import accumulate

from bus.errors import DecodeError

# IEC 61968 documents nest fewer than 15 levels; 64 leaves room and stays far
# below the interpreter's recursion limit for every later walk of the document
MAX_DEPTH = 64

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(raw: bytes | bytearray | memoryview | str) -> int:
    """How deep the arrays and objects of JSON text nest (0 for a scalar), without parsing it.

    Text that is not JSON gets a number too: the parser refuses it afterwards."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else _utf8(bytes(raw))
    if b"\\" in data:
        # backslashes pair up from the left within a run, as the parser reads them; what is left
        # of a run escapes the next character, and only an escaped quote matters here
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # with no escaped quotes left, every other piece between quotes is a string's content
    brackets = b"".join(data.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _utf8(data: bytes) -> bytes:
    """The bytes in UTF-8, where no byte of a multi-byte character is ASCII: the standard library's
    parser also takes UTF-16 and UTF-32, where half a character may look like a quote or a bracket."""
    encoding = json.detect_encoding(data)
    if encoding in ("utf-8", "utf-8-sig"):
        return data
    try:
        return data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeError:
        return data  # no parser reads it either


def check_json_depth(raw: bytes | bytearray | memoryview | str, limit: int = MAX_DEPTH) -> None:
    """``DecodeError`` if JSON text nests deeper than ``limit``; call it before parsing."""
    depth = nesting_depth(raw)
    if depth > limit:
        raise DecodeError(f"JSON nested {depth} levels deep; at most {limit} are taken")
