"""GIS snapshot source: the nightly consumer-indexing CSV dropped into a folder, diffed against the
network store and applied as the changes it amounts to (or held for a human).

The inbox conventions are the file drop's (``connectors.file_drop.inbox``): write-then-rename,
or a marker file, or a settle time; links refused.  Per file:

1. copied into ``archive/`` under a millisecond prefix (the archive holds what was read);
2. diffed and applied from that copy (``bus.network.snapshot_apply``): only real changes, in one
   transaction; held if it would retire more than ``max_retire_share`` of the consumers;
3. ``<archived>.report.json``: rows read / accepted / rejected (each rejected line with its number
   and reason), changes emitted by kind, and applied, partial, unchanged or held;
4. removed from the inbox.  A crash before this step reads the file again: its change ids come
   from its checksum, so nothing is applied twice.

A file that is not a snapshot at all (no header, a column missing) goes whole to ``rejected/``
with a ``.reason``.  Served by ``gridbus ingress`` like every source with ``serve``; nothing
travels on the route's queue (its destination is the store itself).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from marshmallow import RAISE, Schema, fields, validate

from bus.network import open_store
from bus.network.snapshot import SnapshotError
from bus.network.snapshot_apply import DEFAULT_MAX_RETIRE_SHARE, import_snapshot
from bus.network.store import NetworkStoreError
from bus.options import describe
from bus.routes.model import Endpoint, Route
from bus.settings import Settings
from connectors.file_drop.inbox import Readiness, printable, scan
from connectors.file_drop.ingest import IngestResult, folders, reject

log = logging.getLogger("gridbus.gis-snapshot")


class GisSnapshotOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, metadata=describe(
        "The inbox folder the consumer-indexing snapshot CSV is dropped into (created if missing)."))
    pattern = fields.String(load_default="*.csv", metadata=describe(
        "Which files of the folder this route takes (a glob); one folder and pattern belong to one route."))
    settle_s = fields.Float(load_default=3.0, validate=validate.Range(min=0, max=3600), metadata=describe(
        "Without a marker: a file is taken once its size and modification time held still this long, in "
        "seconds."))
    marker_suffix = fields.String(load_default=None, validate=validate.Regexp(
        r"\.[A-Za-z0-9_-]{1,20}", error="a dot and 1-20 letters, digits, '_' or '-', e.g. .done"), metadata=describe(
        "With it: a file is taken once <name><marker_suffix> exists, e.g. .done; the marker is removed with "
        "the file."))
    archive = fields.String(load_default=None, metadata=describe(
        "Where snapshots that were read go, with their reports; default <path>/archive."))
    rejected = fields.String(load_default=None, metadata=describe(
        "Where files that are not snapshots go, each with a .reason; default <path>/rejected."))
    # a snapshot that would retire more than this share of the consumers waits for `gridbus network approve`
    max_retire_share = fields.Float(
        load_default=DEFAULT_MAX_RETIRE_SHARE, validate=validate.Range(min=0, max=1), metadata=describe(
            "A snapshot that would retire more than this share of the consumers is held until gridbus network "
            "approve."))


class GisSnapshotSource:
    name = "gis-snapshot"
    roles = ("source",)

    def options_schema(self, role: str) -> type[Schema]:
        return GisSnapshotOptions

    def claim(self, endpoint: Endpoint):
        # the file drop's key: one folder and pattern belong to one route, whichever connector reads it
        return ("file-drop", os.path.abspath(endpoint.options["path"]), endpoint.options["pattern"])

    def serve(self, routes: list[Route], settings: Settings, stop: threading.Event,
              poll_s: float = 1.0, on_result=None, ready: threading.Event | None = None) -> None:
        store = open_store()
        readiness = {}
        for route in routes:
            Path(route.source.options["path"]).mkdir(parents=True, exist_ok=True)
            readiness[route.id] = Readiness(route.source.options["settle_s"], route.source.options.get("marker_suffix"))
        if ready is not None:  # its folders exist and are scanned from here on
            ready.set()
        while not stop.is_set():
            busy = False
            for route in routes:
                options = route.source.options
                found = scan(Path(options["path"]), options["pattern"], options.get("marker_suffix"))
                results = [reject(route, link, "a symbolic link: links are not followed; drop the file itself")
                           for link in found.links]
                for path in readiness[route.id].ready(found.files):
                    results.append(take(route, store, path, readiness[route.id].marker(path)))
                busy = busy or bool(results)
                for result in results:
                    if on_result and result is not None:
                        on_result(result)
            if not busy:
                stop.wait(min(poll_s, min(r.source.options["settle_s"] for r in routes) or poll_s))


def take(route: Route, store, path: Path, marker: Path | None = None) -> IngestResult | None:
    """One snapshot file from the inbox: archived, diffed, applied or held, reported."""
    started = time.time()
    shown = printable(path.name)
    _, archive, _ = folders(route)
    archive.mkdir(parents=True, exist_ok=True)
    copy = archive / f"{int(started * 1000)}-{path.name}"
    try:
        shutil.copyfile(path, copy)
    except FileNotFoundError:
        return None  # taken away meanwhile
    try:
        outcome = import_snapshot(store, copy, started, route.source.options["max_retire_share"])
    except SnapshotError as exc:
        copy.unlink(missing_ok=True)
        return reject(route, path, str(exc), marker)
    except NetworkStoreError as exc:  # our side: the file stays in the inbox for the next round
        copy.unlink(missing_ok=True)
        log.error("route %s: %s not taken yet: %s", route.id, shown, exc)
        return None
    report = {"route": route.id, "file": shown, "archived_as": str(copy), "received_at": started,
              "reported_at": time.time(), **outcome.report()}
    tmp = copy.with_name(f".{copy.name}.report.json.part")
    tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    os.replace(tmp, copy.with_name(copy.name + ".report.json"))
    path.unlink(missing_ok=True)
    if marker is not None:
        marker.unlink(missing_ok=True)
    d = outcome.diff
    log.info("route %s: %s %s: %d rows, %d rejected, %d changes", route.id, shown, outcome.status, d.rows,
             d.rejected, d.total)
    return IngestResult(shown, outcome.status, rows=d.rows, seconds=time.time() - started,
                        reason=outcome.held_reason)
