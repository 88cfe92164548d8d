"""One file from inbox to route queue: survey, deduplicate, publish in chunks, archive.

Nothing is published until the whole file has been read once (checksum, UTF-8
and length of every line, header, repeated rows; XML well-formedness and
safety), so a file that cannot be read goes to ``rejected/`` whole, with a
``.reason`` file, instead of half-delivered.

That read also copies the file to ``<archive>/.incoming/``: the chunks are cut
from the copy and the copy is archived, so the archive holds exactly what was
read and reported.  A file whose size, mtime or inode moved while it was read
is left in the inbox to be read again once stable; one that moves while it is
being delivered stays there too (the version delivered is archived).
"""
from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bus import hooks, naming, task_message
from bus.envelope import (H_CHUNK, H_CHUNKS, H_FILE, H_FILE_CHECKSUM, Envelope,
                          file_chunk_message_id, new_traceparent)
from bus.errors import MessageError
from bus.messaging import ConfirmingPublisher
from bus.routes.model import Route
from bus.worker.pipeline import chunk_payload
from connectors.file_drop import lines, split, transcode
from connectors.file_drop.inbox import name_problem, printable, safe_name
from connectors.file_drop.ledger import Ledger
from connectors.file_drop.survey import CsvSurvey, survey_csv

log = logging.getLogger("gridbus.file-drop")
STAGING = ".incoming"
_OUR_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # our side failing is no reason to reject a file


@dataclass
class IngestResult:
    file: str
    outcome: str          # published | duplicate | rejected | unsettled
    chunks: int = 0
    rows: int = 0
    seconds: float = 0.0
    reason: str = ""
    again: bool = False   # the file is still in the inbox and must settle before it is read again


@dataclass
class _Read:
    checksum: str
    rows: int
    noun: str | None
    identity: tuple
    survey: CsvSurvey | None = None


def folders(route: Route) -> tuple[Path, Path, Path]:
    inbox = Path(route.source.options["path"])
    return inbox, Path(route.source.options.get("archive") or inbox / "archive"), \
        Path(route.source.options.get("rejected") or inbox / "rejected")


def staging(route: Route) -> Path:
    return folders(route)[1] / STAGING


def _move(path: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or path.name)
    if target.exists() or target.is_symlink():
        target = folder / f"{int(time.time() * 1000)}-{target.name}"
    shutil.move(str(path), target)
    return target


def reject(route: Route, path: Path, reason: str, marker: Path | None = None) -> IngestResult:
    """To ``rejected/`` once, with a readable ``.reason``; under a safe name if its own cannot be kept."""
    _, _, rejected = folders(route)
    shown = printable(path.name)
    target = _move(path, rejected, safe_name(path.name) if name_problem(path.name) else None)
    target.with_name(target.name + ".reason").write_text(
        f"route: {route.id}\nfile: {shown}\nrejected at: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
        f"kept as: {target.name}\nreason: {reason}\n", encoding="utf-8")
    if marker is not None:
        marker.unlink(missing_ok=True)
    log.warning("route %s: rejected %s: %s", route.id, shown, reason)
    return IngestResult(shown, "rejected", reason=reason)


def _read(route: Route, path: Path, fmt: str, decoder, copy: Path) -> _Read:
    """Read the file once, copying it; MessageError if it can never be read, FileChanged if it moved."""
    if fmt == "xml":
        splitter = getattr(decoder, "split", None)
        if splitter is None:
            raise MessageError(f"transformer {route.transform[0]!r} cannot cut XML files into batches")
        checksum, identity = lines.copy_stable(path, copy)
        with open(copy, "rb") as f:
            return _Read(checksum, sum(n for _text, n in splitter(f, route.queue.batch_size)), None, identity)
    max_line = route.source.options["max_line_bytes"]
    if not transcode.needed(decoder):
        survey = survey_csv(path, max_line, decoder, copy)
        return _Read(survey.checksum, survey.data_rows, survey.noun, survey.stat, survey)
    # another encoding or a preamble: read as UTF-8 with the header first (transcode.py)
    text = copy.with_name(copy.name + ".utf8")
    try:
        identity = transcode.transcode_file(path, text, decoder, max_line)
        survey = survey_csv(text, max_line, decoder, copy)
    finally:
        text.unlink(missing_ok=True)
    return _Read(survey.checksum, survey.data_rows, survey.noun, identity, survey)


def ingest(route: Route, path: Path, publisher: ConfirmingPublisher, ledger: Ledger,
           marker: Path | None = None) -> IngestResult:
    started = time.monotonic()
    problem = name_problem(path.name)
    if problem:
        return reject(route, path, problem, marker)
    fmt = route.source.options["format"]
    decoder = transcode.bound_decoder(route)
    copy = staging(route) / f"{uuid.uuid4().hex}-{path.name}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        read = _read(route, path, fmt, decoder, copy)
    except lines.FileChanged as exc:
        copy.unlink(missing_ok=True)
        log.info("route %s: %s; it will be read again once stable", route.id, exc)
        return IngestResult(path.name, "unsettled", reason=str(exc), again=True)
    except MessageError as exc:
        copy.unlink(missing_ok=True)
        return reject(route, path, str(exc), marker)
    except OSError as exc:
        copy.unlink(missing_ok=True)
        if exc.errno in _OUR_DISK:
            raise
        return reject(route, path, f"cannot read: {exc}", marker)
    _, archive, _ = folders(route)
    day = archive / time.strftime("%Y-%m-%d")
    if ledger.state(route.id, read.checksum) in ("published", "reported"):
        copy.unlink(missing_ok=True)
        _move(path, day, f"{path.name}.duplicate")
        if marker is not None:
            marker.unlink(missing_ok=True)
        log.info("route %s: %s is a duplicate of a file already delivered; not published again",
                 route.id, path.name)
        return IngestResult(path.name, "duplicate", rows=read.rows)
    ledger.start(route.id, read.checksum, path.name)
    try:
        count, cut, rejected = _publish(route, path.name, copy, read, decoder, publisher)
    except BaseException:
        copy.unlink(missing_ok=True)  # the file is still in the inbox: it is read again
        raise
    archived = _move(copy, day, path.name)
    survey = read.survey
    ledger.published(route.id, read.checksum, count, read.rows, str(archived), cut,
                     {"lines": survey.lines, "blank_lines": survey.blank_lines, "rejected": rejected}
                     if survey else {"rejected": rejected})
    again = _changed(path, read.identity)
    if again:
        log.warning("route %s: %s changed while it was delivered; the version read is archived and reported, "
                    "the file stays in the inbox to be read again once stable", route.id, path.name)
    else:
        path.unlink(missing_ok=True)
        if marker is not None:
            marker.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    log.info("route %s: %s published in %d chunks (%d rows) in %.2fs", route.id, path.name, count, read.rows,
             seconds)
    return IngestResult(path.name, "published", count, read.rows, seconds, again=again)


def _changed(path: Path, identity: tuple) -> bool:
    try:
        return lines.file_identity(os.stat(path, follow_symlinks=False)) != identity
    except FileNotFoundError:
        return False  # gone: nothing left to read again


def _chunks(route: Route, name: str, copy: Path, read: _Read, decoder) -> Iterator[split.Chunk]:
    if read.survey is None:
        return split.xml_chunks(copy, route.queue.batch_size, decoder.split, name)
    return split.csv_chunks(copy, route.queue.batch_size, read.survey, decoder, route.options, name)


def _publish(route: Route, name: str, copy: Path, read: _Read, decoder,
             publisher: ConfirmingPublisher) -> tuple[int, list[tuple], list[dict]]:
    """Publish every chunk with confirms; (chunks, their lines and rows, lines the ingress rejected)."""
    batch = route.queue.batch_size
    survey = read.survey
    # the number of chunks is known up front unless long lines make chunks end on size
    chunks_total = math.ceil(read.rows / batch) if survey and survey.longest * batch <= split.MAX_CHUNK_BYTES \
        else None
    trace = new_traceparent(read.checksum[:32])
    cut: list[tuple] = []
    rejected: list[dict] = []
    sent: list[dict] = []
    publish_started, publish_monotonic = time.time(), time.monotonic()
    for index, chunk in enumerate(_chunks(route, name, copy, read, decoder)):
        envelope = Envelope(
            route_id=route.id, source=route.source.system, verb=route.message.get("verb", "created"),
            noun=read.noun or route.message.get("noun", "MeterReadings"),
            message_id=file_chunk_message_id(read.checksum, index), correlation_id=f"file-{read.checksum[:24]}",
            traceparent=trace,
            extra={H_FILE: name, H_FILE_CHECKSUM: read.checksum, H_CHUNK: index,
                   **({H_CHUNKS: chunks_total} if chunks_total is not None else {})})
        body, props, headers = task_message.build(envelope, chunk_payload(chunk.source))
        publisher.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(route.id), body, props, headers)
        cut.append((index, chunk.first_line, chunk.last_line, chunk.rows))
        rejected += chunk.rejections
        fields = {"message_id": envelope.message_id, "correlation_id": envelope.correlation,
                  "traceparent": envelope.traceparent, "route": route.id, "attempt": 1, "noun": envelope.noun}
        hooks.emit("received", **fields, at=publish_started, source=route.source.system, file=name,
                   first_line=chunk.first_line, last_line=chunk.last_line)
        sent.append({**fields, "at": time.time()})
    publisher.flush()  # archive only what the broker has confirmed
    confirm_s = time.monotonic() - publish_monotonic
    for fields in sent:
        hooks.emit("published", **fields, exchange=naming.INGRESS_EXCHANGE,
                   routing_key=naming.route_routing_key(route.id), confirm_s=confirm_s / max(1, len(sent)))
    return len(sent), cut, rejected
