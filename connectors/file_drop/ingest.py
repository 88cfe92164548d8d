"""One file from inbox to route queue: survey, deduplicate, publish in chunks, archive.

Nothing is published until the whole file has been read once (checksum, text,
header, XML well-formedness and safety), so a file that cannot be read goes to
``rejected/`` whole, with a ``.reason`` file, instead of half-delivered.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bus import hooks, naming, registry, task_message
from bus.envelope import (H_CHUNK, H_CHUNKS, H_FILE, H_FILE_CHECKSUM, Envelope,
                          file_chunk_message_id, new_traceparent)
from bus.errors import MessageError
from bus.publisher import ConfirmingPublisher
from bus.routes.model import Route
from bus.worker.pipeline import chunk_payload
from connectors.file_drop import split
from connectors.file_drop.ledger import Ledger

log = logging.getLogger("gridbus.file-drop")


@dataclass
class IngestResult:
    file: str
    outcome: str          # published | duplicate | rejected
    chunks: int = 0
    rows: int = 0
    seconds: float = 0.0
    reason: str = ""


def folders(route: Route) -> tuple[Path, Path, Path]:
    inbox = Path(route.source.options["path"])
    return inbox, Path(route.source.options.get("archive") or inbox / "archive"), \
        Path(route.source.options.get("rejected") or inbox / "rejected")


def _move(path: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or path.name)
    if target.exists():
        target = folder / f"{int(time.time() * 1000)}-{target.name}"
    shutil.move(str(path), target)
    return target


def reject(route: Route, path: Path, reason: str) -> IngestResult:
    _, _, rejected = folders(route)
    target = _move(path, rejected)
    target.with_name(target.name + ".reason").write_text(
        f"route: {route.id}\nfile: {path.name}\nrejected at: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
        f"reason: {reason}\n")
    log.warning("route %s: rejected %s: %s", route.id, path.name, reason)
    return IngestResult(path.name, "rejected", reason=reason)


def _survey(route: Route, path: Path, fmt: str) -> tuple[str | None, int]:
    """(noun announced by the decoder, data rows); MessageError if unreadable."""
    decoder = registry.transformer(route.transform[0]) if route.transform else None
    if fmt == "xml":
        splitter = getattr(decoder, "split", None)
        if splitter is None:
            raise MessageError(f"transformer {route.transform[0]!r} cannot cut XML files into batches")
        with open(path, "rb") as f:
            return None, sum(n for _text, n in splitter(f, route.queue.batch_size))
    header, rows = split.csv_survey(path)
    noun = None
    if decoder is not None and hasattr(decoder, "check_header"):
        noun = decoder.check_header(header)
    return noun, rows


def ingest(route: Route, path: Path, publisher: ConfirmingPublisher, ledger: Ledger) -> IngestResult:
    started = time.monotonic()
    fmt = route.source.options["format"]
    try:
        checksum = split.checksum(path)
        noun, rows = _survey(route, path, fmt)
    except MessageError as exc:
        return reject(route, path, str(exc))
    except OSError as exc:
        return reject(route, path, f"cannot read: {exc}")
    if ledger.state(route.id, checksum) in ("published", "reported"):
        _, archive, _ = folders(route)
        _move(path, archive / time.strftime("%Y-%m-%d"), f"{path.name}.duplicate")
        log.info("route %s: %s is a duplicate of a file already delivered; not published again",
                 route.id, path.name)
        return IngestResult(path.name, "duplicate", rows=rows)
    ledger.start(route.id, checksum, path.name)
    chunks_total = math.ceil(rows / route.queue.batch_size) if fmt == "csv" else None
    decoder = registry.transformer(route.transform[0]) if route.transform else None
    chunks = (split.csv_chunks(path, route.queue.batch_size) if fmt == "csv"
              else split.xml_chunks(path, route.queue.batch_size, decoder.split))
    trace = new_traceparent(checksum[:32])
    count = 0
    sent: list[dict] = []
    publish_started, publish_monotonic = time.time(), time.monotonic()
    for index, chunk in enumerate(chunks):
        envelope = Envelope(
            route_id=route.id, source=route.source.system, verb=route.message.get("verb", "created"),
            noun=noun or route.message.get("noun", "MeterReadings"),
            message_id=file_chunk_message_id(checksum, index), correlation_id=f"file-{checksum[:24]}",
            traceparent=trace,
            extra={H_FILE: path.name, H_FILE_CHECKSUM: checksum, H_CHUNK: index,
                   **({H_CHUNKS: chunks_total} if chunks_total is not None else {})})
        body, props, headers = task_message.build(envelope, chunk_payload(chunk))
        publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers)
        count += 1
        fields = {"message_id": envelope.message_id, "correlation_id": envelope.correlation,
                  "traceparent": envelope.traceparent, "route": route.id, "attempt": 1, "noun": envelope.noun}
        last_line = chunk.first_line + chunk.text.count("\n") - 2 if fmt == "csv" else None
        hooks.emit("received", **fields, at=publish_started, source=route.source.system, file=path.name,
                   first_line=chunk.first_line if fmt == "csv" else None, last_line=last_line)
        sent.append({**fields, "at": time.time()})
    publisher.flush()  # archive only what the broker has confirmed
    confirm_s = time.monotonic() - publish_monotonic
    for fields in sent:
        hooks.emit("published", **fields, exchange=naming.INGRESS_EXCHANGE,
                   routing_key=naming.route_routing_key(route.id), confirm_s=confirm_s / max(1, count))
    _, archive, _ = folders(route)
    archived = _move(path, archive / time.strftime("%Y-%m-%d"))
    ledger.published(route.id, checksum, count, rows, str(archived))
    seconds = time.monotonic() - started
    log.info("route %s: %s published in %d chunks (%d rows) in %.2fs", route.id, path.name, count, rows, seconds)
    return IngestResult(path.name, "published", count, rows, seconds)

