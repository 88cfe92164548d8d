"""File-drop source: pick up complete files from an inbox folder and publish them in batches.

Which files are complete, and what happens to links and unusable names, is
``inbox.py``; one file's way from survey to archive is ``ingest.py``.  A
watchdog observer wakes the scanner as soon as a file lands; a periodic scan
backs it up (events can be missed on network file systems or while the
ingress was down).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from marshmallow import RAISE, Schema, fields, post_load, validate

from bus.options import describe
from bus.errors import BrokerError
from bus.messaging import ConfirmingPublisher
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from bus.state_store import StateStoreError
from connectors.file_drop.inbox import Readiness, printable, scan
from connectors.file_drop.ingest import IngestResult, ingest, reject, staging
from connectors.file_drop.ledger import Ledger
from connectors.file_drop.reconcile import Reconciler
from connectors.file_drop.survey import MAX_LINE_BYTES

log = logging.getLogger("gridbus.file-drop")
ATTEMPTS = 3  # a file that fails this often for a reason other than the broker goes to rejected/


class FileDropOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, metadata=describe("The inbox folder the HES writes its files into."))
    pattern = fields.String(load_default="*", metadata=describe("Glob of the file names this route takes, e.g. *.csv."))
    format = fields.String(load_default=None, validate=validate.OneOf(["csv", "xml"]), metadata=describe(
        "csv or xml; when left out, xml if the pattern ends in .xml, else csv."))
    # without a marker: how long size and mtime must hold still (longer than an upload's longest stall)
    settle_s = fields.Float(load_default=3.0, validate=validate.Range(min=0, max=3600), metadata=describe(
        "Without a marker: seconds a file's size and time must hold still before it is read."))
    # with one: a file is taken once "<name><marker_suffix>" exists, e.g. .done
    marker_suffix = fields.String(load_default=None, validate=validate.Regexp(
        r"\.[A-Za-z0-9_-]{1,20}", error="a dot and 1-20 letters, digits, '_' or '-', e.g. .done"), metadata=describe(
        "A file is taken once <name><marker_suffix> exists (e.g. .done), instead of waiting for it to settle."))
    # a CSV file with a longer line goes whole to rejected/
    max_line_bytes = fields.Integer(load_default=MAX_LINE_BYTES, validate=validate.Range(min=1024, max=64 << 20),
                                    metadata=describe("A CSV file with a longer line goes whole to rejected/."))
    archive = fields.String(load_default=None, metadata=describe("Where delivered files and their reports go (default: <path>/archive)."))
    rejected = fields.String(load_default=None, metadata=describe("Where unreadable files go, each with a .reason file (default: <path>/rejected)."))

    @post_load
    def _format_from_pattern(self, data, **kwargs):
        if data["format"] is None:
            data["format"] = "xml" if data["pattern"].lower().endswith(".xml") else "csv"
        return data


class FileDropSource:
    name = "file-drop"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return FileDropOptions

    def claim(self, endpoint: Endpoint):
        # one folder + pattern belongs to one route; two would race for every file
        return (self.name, os.path.abspath(endpoint.options["path"]), endpoint.options["pattern"])

    def sample_payloads(self, route: Route, data: bytes, name: str, reject=None):
        """The payloads the worker would get for a file ``name`` holding ``data`` dropped in this
        route's inbox (``gridbus routes test``): the ingress's own read and cut, on a temporary
        copy.  A CSV file is surveyed (UTF-8, line lengths, the decoder's header check) and cut
        into SourceChunks of ``queue.batch_size`` rows; the rows the ingress rejects itself (a
        (meter, time) repeated across chunks with other values) go to ``reject(line, reason)``.
        An XML file is cut by the decoder's ``split``.  ``DecodeError`` (any ``MessageError``)
        when the ingress would send the whole file to ``rejected/``.  A CSV file in another
        encoding or with preamble lines is first read as the ingress reads it (``transcode``)."""
        import tempfile

        from bus.errors import DecodeError, MessageError
        from connectors.file_drop import split, transcode
        from connectors.file_drop.inbox import name_problem
        from connectors.file_drop.survey import survey_csv

        problem = name_problem(name)
        if problem:
            raise DecodeError(problem)
        decoder = transcode.bound_decoder(route)  # as the ingress: bound to the route's options
        batch = route.queue.batch_size
        if route.source.options["format"] != "xml":
            data = transcode.normalise(data, route, route.source.options["max_line_bytes"])
        with tempfile.TemporaryDirectory(prefix="gridbus-sample-") as folder:
            path = Path(folder) / "input"
            path.write_bytes(data)
            if route.source.options["format"] == "xml":
                if decoder is None or not hasattr(decoder, "split"):
                    raise MessageError(f"transformer {route.transform[0] if route.transform else None!r} "
                                       "cannot cut XML files into batches")
                chunks = list(split.xml_chunks(path, batch, decoder.split, name))
            else:
                survey = survey_csv(path, route.source.options["max_line_bytes"], decoder)
                chunks = list(split.csv_chunks(path, batch, survey, decoder, route.options, name))
        for chunk in chunks:
            for rejected in chunk.rejections:
                if reject is not None:
                    reject(rejected["line"], rejected["reason"])
            yield chunk.source

    def serve(self, routes: list[Route], settings: Settings, stop: threading.Event,
              poll_s: float = 1.0, on_result=None, ready: threading.Event | None = None) -> None:
        """``ready`` is set once every inbox exists and is watched: a file dropped then is taken."""
        ledger_path = settings.state_dir / "file-drop.sqlite"
        for route in routes:
            Path(route.source.options["path"]).mkdir(parents=True, exist_ok=True)
        reconciler = Reconciler(settings.broker_url, ledger_path, {r.id: r.source.system for r in routes})
        threading.Thread(target=reconciler.serve, args=(stop,), name="reconciler", daemon=True).start()
        wake = threading.Event()
        observer = _watch([Path(r.source.options["path"]) for r in routes], wake)
        ledger = Ledger(ledger_path)
        publisher = ConfirmingPublisher(settings.broker_url, "gridbus-file-drop")
        readiness = {r.id: Readiness(r.source.options["settle_s"], r.source.options.get("marker_suffix"))
                     for r in routes}
        for route in routes:
            _clear_staging(route)
        failures: dict[tuple[str, Path], int] = {}
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                busy = False
                for route in routes:
                    options = route.source.options
                    found = scan(Path(options["path"]), options["pattern"], options.get("marker_suffix"))
                    results = [_refuse_link(route, link) for link in found.links]
                    for path in readiness[route.id].ready(found.files):
                        results.append(self._ingest_one(route, path, publisher, ledger, readiness[route.id],
                                                        failures))
                    busy = busy or bool(results)
                    for result in results:
                        if on_result:
                            on_result(result)
                if not busy:
                    wake.wait(min(poll_s, min(r.source.options["settle_s"] for r in routes) or poll_s))
                    wake.clear()
        finally:
            if observer:
                observer.stop()
            publisher.close()

    def _ingest_one(self, route: Route, path: Path, publisher: ConfirmingPublisher, ledger: Ledger,
                    readiness: Readiness, failures: dict) -> IngestResult | None:
        marker = readiness.marker(path)
        try:
            result = ingest(route, path, publisher, ledger, marker)
        except BrokerError as exc:  # broker down: leave the file in the inbox, try again later
            log.error("route %s: %s not ingested yet: %s", route.id, printable(path.name), exc)
            publisher.close()
            time.sleep(1)
            return None
        except StateStoreError as exc:  # the ledger's database down: as the broker, not the file's fault
            log.error("route %s: %s not ingested yet: %s", route.id, printable(path.name), exc)
            time.sleep(1)
            return None
        except Exception as exc:  # noqa: BLE001 - the loop's boundary: one file must not stop the others
            tries = failures[(route.id, path)] = failures.get((route.id, path), 0) + 1
            log.exception("route %s: %s failed (%d of %d attempts)", route.id, printable(path.name), tries, ATTEMPTS)
            readiness.forget(path)
            if tries < ATTEMPTS or not os.path.lexists(path):
                return None
            del failures[(route.id, path)]
            return reject(route, path, f"failed {ATTEMPTS} times: {exc.__class__.__name__}: {exc}", marker)
        failures.pop((route.id, path), None)
        if result.again:
            readiness.forget(path)
        return result


def _refuse_link(route: Route, link: Path) -> IngestResult:
    try:
        to = printable(os.readlink(link))
    except OSError:
        to = "?"
    return reject(route, link, f"a symbolic link (to {to}): links are not followed; drop the file itself")


def _clear_staging(route: Route) -> None:
    """Copies left by an ingress that stopped mid-file; the file itself is still in the inbox."""
    folder = staging(route)
    for left in folder.iterdir() if folder.exists() else ():
        left.unlink(missing_ok=True)


def _watch(folders: list[Path], wake: threading.Event):
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:  # polling alone still works
        return None

    class Wake(FileSystemEventHandler):
        def on_any_event(self, event):
            wake.set()

    observer = Observer()
    for folder in folders:
        observer.schedule(Wake(), str(folder), recursive=False)
    observer.daemon = True
    observer.start()
    return observer
