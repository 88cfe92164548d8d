"""File-drop source: pick up complete files from an inbox folder and publish them in batches.

Complete means: not a dot-file or ``*.part``/``*.tmp`` (write-then-rename
convention), and its size and mtime unchanged over ``settle_s``.  A watchdog
observer wakes the scanner as soon as a file lands; a periodic scan backs it up
(events can be missed on network file systems or while the ingress was down).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from pathlib import Path

from marshmallow import RAISE, Schema, fields, post_load, validate

from bus.publisher import ConfirmingPublisher
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from connectors.file_drop.ingest import IngestResult, ingest
from connectors.file_drop.ledger import Ledger
from connectors.file_drop.reconcile import Reconciler

log = logging.getLogger("gridbus.file-drop")
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".filepart")


class FileDropOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True)
    pattern = fields.String(load_default="*")
    format = fields.String(load_default=None, validate=validate.OneOf(["csv", "xml"]))
    settle_s = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=600))
    archive = fields.String(load_default=None)
    rejected = fields.String(load_default=None)

    @post_load
    def _format_from_pattern(self, data, **kwargs):
        if data["format"] is None:
            data["format"] = "xml" if data["pattern"].lower().endswith(".xml") else "csv"
        return data


class StableFiles:
    """Remembers (size, mtime) per file; a file is ready once they stop changing."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self.seen: dict[Path, tuple[int, int, float]] = {}

    def ready(self, candidates: list[Path]) -> list[Path]:
        now = time.monotonic()
        ready = []
        for path in candidates:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            before = self.seen.get(path)
            if before is None or before[:2] != key:
                self.seen[path] = (*key, now)
            elif now - before[2] >= self.settle_s:
                ready.append(path)
        self.seen = {p: v for p, v in self.seen.items() if p in set(candidates)}
        return ready


def candidates(endpoint: Endpoint) -> list[Path]:
    inbox = Path(endpoint.options["path"])
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        return []
    return sorted(Path(e.path) for e in entries
                  if e.is_file() and not e.name.startswith(".")
                  and not e.name.endswith(IN_PROGRESS_SUFFIXES)
                  and fnmatch.fnmatch(e.name, endpoint.options["pattern"]))


class FileDropSource:
    name = "file-drop"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return FileDropOptions

    def claim(self, endpoint: Endpoint):
        # one folder + pattern belongs to one route; two would race for every file
        return (self.name, os.path.abspath(endpoint.options["path"]), endpoint.options["pattern"])

    def serve(self, routes: list[Route], settings: Settings, stop: threading.Event,
              poll_s: float = 1.0, on_result=None) -> None:
        ledger_path = settings.state_dir / "file-drop.sqlite"
        for route in routes:
            Path(route.source.options["path"]).mkdir(parents=True, exist_ok=True)
        reconciler = Reconciler(settings.broker_url, ledger_path, {r.id: r.source.system for r in routes})
        threading.Thread(target=reconciler.serve, args=(stop,), name="reconciler", daemon=True).start()
        wake = threading.Event()
        observer = _watch([Path(r.source.options["path"]) for r in routes], wake)
        ledger = Ledger(ledger_path)
        publisher = ConfirmingPublisher(settings.broker_url, "gridbus-file-drop")
        stable = {r.id: StableFiles(r.source.options["settle_s"]) for r in routes}
        try:
            while not stop.is_set():
                busy = False
                for route in routes:
                    for path in stable[route.id].ready(candidates(route.source)):
                        result = self._ingest_one(route, path, publisher, ledger)
                        busy = True
                        if on_result:
                            on_result(result)
                if not busy:
                    wake.wait(min(poll_s, min(r.source.options["settle_s"] for r in routes) or poll_s))
                    wake.clear()
        finally:
            if observer:
                observer.stop()
            publisher.close()

    def _ingest_one(self, route, path, publisher, ledger) -> IngestResult | None:
        try:
            return ingest(route, path, publisher, ledger)
        except Exception as exc:  # broker down: leave the file in the inbox, try again later
            log.error("route %s: %s not ingested yet: %s", route.id, path.name, exc)
            publisher.close()
            time.sleep(1)
            return None


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
