"""The contract between the bus and the transformers it runs by name.

A route lists a chain of transformer names, e.g. ``[hes_a_csv, meter_readings_to_mdms_json]``.
The worker looks each name up in the registry (entry-point group
``gridbus.transformers``) and calls them in order::

    payload = original message body (a ``SourceChunk`` for file batches, else a ``dict``)
    for transformer in chain:
        payload = transformer(payload, context)
    # the last transformer returns an ``Outbound`` (bytes for the destination)

A transformer rejects single bad rows with ``context.reject(line, reason)`` and
carries on; it raises ``DecodeError`` / ``ValidationError`` / ``TransformError``
(from ``bus.errors``) only when the whole message is unusable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SourceChunk:
    """Raw bytes of one batch cut from a source file, before any transformation.

    ``text`` holds the header line (for CSV) followed by the batch's rows, or a
    complete XML document for XML; ``first_line`` is the 1-based line number in
    the original file of the first data row (CSV), so that rejections name the
    line in the file the HES sent, not in the chunk.
    """

    text: str
    file_name: str
    first_line: int = 2
    format: str = "csv"  # "csv" or "xml"


@dataclass(frozen=True)
class RowRejection:
    line: int | None
    reason: str

    def as_dict(self) -> dict:
        return {"line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class Outbound:
    """What the last transformer of a chain hands to the destination connector."""

    body: bytes
    content_type: str
    noun: str
    # counts the reconciliation report and the trace want
    readings: int = 0
    events: int = 0
    empty: bool = False  # the encoder says it holds nothing: the destination is not called


@dataclass
class TransformContext:
    """Per-message facts a transformer may read, and the rejections it reports."""

    route_id: str
    source_system: str
    message_id: str
    correlation_id: str
    rejections: list[RowRejection] = field(default_factory=list)
    rows_in: int = 0
    meters: set[str] = field(default_factory=set)
    options: dict[str, Any] = field(default_factory=dict)

    def reject(self, line: int | None, reason: str) -> None:
        self.rejections.append(RowRejection(line, reason))


@runtime_checkable
class Transformer(Protocol):
    """A named step of a route's chain; see the module docstring."""

    name: str

    def __call__(self, payload: Any, context: TransformContext) -> Any: ...


@runtime_checkable
class HeaderProbe(Protocol):
    """Optional: a decoder that can tell from a file's first line whether it can read it.

    The file-drop connector calls ``check_header(first_line)`` before publishing
    anything, so a file no decoder can read goes to ``rejected/`` whole instead
    of becoming N dead letters.  Raise ``DecodeError`` with the reason.
    """

    def check_header(self, header_line: str) -> None: ...
